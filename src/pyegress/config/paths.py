"""Where each output's files go: names expanded from the request's templates, kept inside
the output folder (see :func:`pyegress.filenames.place`), and checked with sample values
before anything joins a room."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InvalidRequestError
from ..filenames import TEMPLATE_KEYS, expand, place, resolve_path
from .model import EgressConfig, ImageTarget, SegmentTarget


@dataclass(frozen=True)
class SegmentPaths:
    """Where an HLS output writes: playlist, optional live playlist, segment prefix."""

    playlist: Path
    live_playlist: Path | None
    prefix: Path


def _strip_ext(name: str, *exts: str) -> str:
    for ext in exts:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def segment_paths(
    target: SegmentTarget,
    values: Mapping[str, str],
    output_dir: Path,
    default_stem: str,
    *,
    jail: bool = True,
) -> SegmentPaths:
    """Resolve the names of an HLS output as LiveKit egress does.

    An empty ``playlist_name`` is the prefix's name (or ``default_stem``); an empty
    ``filename_prefix`` is the playlist's name; a prefix without a folder lives beside the
    playlist, and a playlist without a folder goes to the prefix's folder. The live playlist is
    always beside the playlist.
    """
    prefix = PurePosixPath(expand(target.filename_prefix, values)) if target.filename_prefix else None
    playlist = (
        PurePosixPath(_strip_ext(expand(target.playlist_name, values), ".m3u8"))
        if target.playlist_name
        else None
    )
    if playlist is None:
        playlist = prefix if prefix is not None else PurePosixPath(default_stem)
    elif str(playlist.parent) == "." and prefix is not None and str(prefix.parent) != ".":
        playlist = prefix.parent / playlist.name
    if prefix is None:
        prefix = playlist
    elif str(prefix.parent) == ".":
        prefix = playlist.parent / _strip_ext(prefix.name, ".ts")
    # an escape is blamed on the field the user wrote (a playlist named after the prefix: the prefix)
    playlist_field = "playlist_name" if target.playlist_name else "filename_prefix"
    prefix_field = "filename_prefix" if target.filename_prefix else "playlist_name"
    seg_prefix = place(str(prefix), output_dir=output_dir, jail=jail, field=f"{target.field}.{prefix_field}")
    where = f"{target.field}.{playlist_field}"
    main = place(f"{playlist}.m3u8", output_dir=output_dir, jail=jail, field=where)
    live = None
    if target.live_playlist_name:
        name = PurePosixPath(_strip_ext(expand(target.live_playlist_name, values), ".m3u8")).name
        where = f"{target.field}.live_playlist_name"
        live = place(str(playlist.parent / f"{name}.m3u8"), output_dir=output_dir, jail=jail, field=where)
    if live == main:
        raise InvalidRequestError(f"{target.field}.live_playlist_name", "must differ from playlist_name")
    return SegmentPaths(main, live, seg_prefix)


def image_prefix(
    target: ImageTarget,
    values: Mapping[str, str],
    output_dir: Path,
    default_stem: str,
    *,
    jail: bool = True,
) -> Path:
    """The path prefix of an image output (``filename_prefix`` expanded; empty or a folder: generated)."""
    raw = target.filename_prefix
    if not raw or raw.endswith("/"):
        raw += default_stem
    raw = expand(raw, values)
    for ext in (".jpeg", ".jpg"):
        raw = raw[: -len(ext)] if raw.lower().endswith(ext) else raw
    return place(raw, output_dir=output_dir, jail=jail, field=f"{target.field}.filename_prefix")


def check_paths(cfg: EgressConfig) -> None:
    """Refuse, before anything is joined or opened, paths that would leave the output folder:
    every file, playlist, segment and image name, expanded with sample values."""
    sample = dict.fromkeys(TEMPLATE_KEYS, "x")
    root, jail = cfg.output_dir, cfg.jail
    for f in cfg.files:
        extension = f.file_type.extension or ".mp4"
        where = f"{f.field}.filepath"
        resolve_path(f.filepath, values=sample, output_dir=root, default_stem="x", extension=extension,
                     field=where, jail=jail)  # fmt: skip
    for s in cfg.segments:
        segment_paths(s, sample, root, "x", jail=jail)
    for i in cfg.images:
        image_prefix(i, sample, root, "x", jail=jail)
