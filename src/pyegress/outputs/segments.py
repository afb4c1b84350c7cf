"""HLS output: MPEG-TS segments cut on key frames, playlists rewritten as each segment closes.

Segments are written one container at a time (``<prefix>_00000.ts`` ...); timestamps run on
across segments, so the playlist plays as one stream. The playlist is an ``EVENT`` playlist
while recording (playable at once) and gets ``#EXT-X-ENDLIST`` at the end; the optional live
playlist keeps only the last few segments (a sliding window).

With a store (``uploads``), each closed segment and then the playlists naming it are uploaded
while recording, in that order, so the bucket always holds a playable stream.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import av
from livekit.protocol import egress as pe

from ..config import SegmentSuffix, SegmentTarget
from ..errors import InvalidRequestError
from ..filenames import expand
from ..media.encoder import Packet
from ..media.encoding import AudioEncoding, VideoEncoding
from ..storage.base import UploadResult
from ..storage.upload import LiveUploads
from .base import Output

#: Segments listed by the live (sliding window) playlist.
LIVE_WINDOW = 5


@dataclass(frozen=True)
class SegmentPaths:
    """Where an HLS output writes: playlist, optional live playlist, segment prefix."""

    playlist: Path
    live_playlist: Path | None
    prefix: Path


def _inside(root: Path, rel: str, field: str) -> Path:
    full = (root / rel).resolve() if not os.path.isabs(rel) else Path(rel).resolve()
    if full != root and root not in full.parents:
        raise InvalidRequestError(field, f"path {rel!r} escapes the output folder {root}")
    return full


def _strip_ext(name: str, *exts: str) -> str:
    for ext in exts:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def segment_paths(
    target: SegmentTarget, values: Mapping[str, str], output_dir: Path, default_stem: str
) -> SegmentPaths:
    """Resolve the names of an HLS output as LiveKit egress does.

    An empty ``playlist_name`` is the prefix's name (or ``default_stem``); an empty
    ``filename_prefix`` is the playlist's name; a prefix without a folder lives beside the
    playlist, and a playlist without a folder goes to the prefix's folder. The live playlist is
    always beside the playlist.
    """
    root = output_dir.resolve()
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
    live = None
    if target.live_playlist_name:
        name = PurePosixPath(_strip_ext(expand(target.live_playlist_name, values), ".m3u8")).name
        live = _inside(root, str(playlist.parent / f"{name}.m3u8"), f"{target.field}.live_playlist_name")
    main = _inside(root, f"{playlist}.m3u8", f"{target.field}.playlist_name")
    if live == main:
        raise InvalidRequestError(f"{target.field}.live_playlist_name", "must differ from playlist_name")
    return SegmentPaths(main, live, _inside(root, str(prefix), f"{target.field}.filename_prefix"))


def segment_name(prefix: str, suffix: SegmentSuffix, index: int, wall: float) -> str:
    """``<prefix>_00003.ts`` (INDEX) or ``<prefix>_20240131235959123.ts`` (TIMESTAMP, UTC)."""
    if suffix is SegmentSuffix.TIMESTAMP:
        t = dt.datetime.fromtimestamp(wall, dt.timezone.utc)
        return f"{prefix}_{t:%Y%m%d%H%M%S}{t.microsecond // 1000:03d}.ts"
    return f"{prefix}_{index:05d}.ts"


@dataclass
class Segment:
    """One closed segment."""

    name: str  # relative to the playlist's folder
    path: Path
    start: float  # output time, seconds
    duration: float
    size: int
    wall: float  # unix time of its start


def render_playlist(
    segments: list[Segment], *, target: int, ended: bool, live: bool = False, first_index: int = 0
) -> str:
    """An HLS media playlist: ``EVENT`` (or a sliding window when ``live``), ENDLIST once ended."""
    longest = max((s.duration for s in segments), default=0.0)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max(target, math.floor(longest + 0.5))}",
        f"#EXT-X-MEDIA-SEQUENCE:{first_index}",
    ]
    if not live:
        lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
    for s in segments:
        stamp = dt.datetime.fromtimestamp(s.wall, dt.timezone.utc).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        lines += [f"#EXT-X-PROGRAM-DATE-TIME:{stamp}", f"#EXTINF:{s.duration:.6f},", s.name]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class SegmentOutput(Output):
    """HLS: MPEG-TS segments of about ``segment_duration`` seconds, each starting on a key frame."""

    def __init__(
        self,
        name: str,
        paths: SegmentPaths,
        *,
        segment_duration: int,
        suffix: SegmentSuffix = SegmentSuffix.INDEX,
        video: VideoEncoding | None,
        audio: AudioEncoding | None,
        manifest: Callable[[], dict[str, object]] | None = None,
        live_window: int = LIVE_WINDOW,
        uploads: LiveUploads | None = None,
    ) -> None:
        super().__init__(name, video, audio)
        self.paths = paths
        self.uploads = uploads
        self._uploaded: dict[Path, concurrent.futures.Future[UploadResult]] = {}
        self.segment_duration = segment_duration
        self.suffix = suffix
        self.live_window = live_window
        self.segments: list[Segment] = []
        self.manifest_path = paths.playlist.with_name(paths.playlist.name + ".json") if manifest else None
        self._manifest = manifest
        self._templates: dict[str, av.VideoStream | av.AudioStream] = {}
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._current: Segment | None = None
        self._wall0 = 0.0
        self._ended = False
        self._result: pe.SegmentsInfo | None = None

    # --- pipeline side (encode thread) ---------------------------------------------------

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        if video is not None and self.video is not None:
            self._templates["video"] = video
        if audio is not None and self.audio is not None:
            self._templates["audio"] = audio
        if not self._templates:
            raise ValueError("nothing to segment")
        for p in (self.paths.playlist, self.paths.prefix):
            p.parent.mkdir(parents=True, exist_ok=True)
        self._wall0 = time.time()
        self._write_playlists()

    @property
    def _split_kind(self) -> str:
        return "video" if "video" in self._templates else "audio"

    def write(self, packet: Packet, kind: str) -> None:
        if kind not in self._templates or packet.pts is None or packet.time_base is None:
            return
        t = float(packet.pts * packet.time_base)
        if kind == self._split_kind:
            due = self._current is None or t - self._current.start >= self.segment_duration - 1e-3
            if due and (kind == "audio" or packet.is_keyframe):
                self._next_segment(t)
        if self._container is None:
            return  # nothing opened yet: wait for the first key frame
        self._track_end(packet, kind)
        packet.stream = self._streams[kind]
        self._container.mux(packet)

    def close(self) -> None:
        self._close_segment(max(self.duration, self._current.start if self._current else 0.0))
        self._ended = True
        self._write_playlists()

    # --- segments ------------------------------------------------------------------------

    def _next_segment(self, t: float) -> None:
        self._close_segment(t)
        index = len(self.segments)
        wall = self._wall0 + t
        path = self.paths.prefix.with_name(segment_name(self.paths.prefix.name, self.suffix, index, wall))
        name = os.path.relpath(path, self.paths.playlist.parent).replace(os.sep, "/")
        container = av.open(str(path), "w", format="mpegts")
        self._streams = {k: container.add_stream_from_template(s) for k, s in self._templates.items()}
        container.start_encoding()
        self._container = container
        self._current = Segment(name, path, t, 0.0, 0, wall)

    def _close_segment(self, end: float) -> None:
        container, seg = self._container, self._current
        if container is None or seg is None:
            return
        self._container = None
        container.close()
        seg.duration = max(0.0, end - seg.start)
        seg.size = seg.path.stat().st_size
        self.segments.append(seg)
        self._current = None
        self._upload(seg.path)  # before the playlist that names it
        self._write_playlists()
        self._changed()

    def _write_playlists(self) -> None:
        done = list(self.segments)
        _write_atomic(
            self.paths.playlist, render_playlist(done, target=self.segment_duration, ended=self._ended)
        )
        self._upload(self.paths.playlist, snapshot=True)
        if self.paths.live_playlist is not None:
            first = max(0, len(done) - self.live_window)
            text = render_playlist(
                done[first:], target=self.segment_duration, ended=self._ended, live=True, first_index=first
            )
            _write_atomic(self.paths.live_playlist, text)
            self._upload(self.paths.live_playlist, snapshot=True)

    def _upload(self, path: Path, *, snapshot: bool = False) -> None:
        """Queue ``path`` for the store (never waits for it); playlists go as a snapshot."""
        if self.uploads is not None:
            self._uploaded[path] = self.uploads.put(path, snapshot=snapshot)

    def _location(self, path: Path) -> str:
        """The object URL of ``path`` unless its (latest) upload failed: then the local path."""
        future = self._uploaded.get(path)
        if self.uploads is None or future is None:
            return str(path)
        if future.done() and not future.result().ok:
            return str(path)
        return self.uploads.location(path)

    async def finish(self) -> None:
        """Wait for the last uploads; a failed one fails this output (its files stay local)."""
        if self.uploads is not None:
            await self.uploads.close()
            if self.uploads.backup_used:
                self.fail(f"upload failed, files kept in {self.paths.playlist.parent}: {self.uploads.error}")

    # --- results (event loop) ------------------------------------------------------------

    @property
    def size(self) -> int:
        return sum(s.size for s in list(self.segments))

    def add_result(self, info: pe.EgressInfo, started_at: int) -> None:
        live = self.paths.live_playlist
        self._result = info.segment_results.add(
            playlist_name=str(self.paths.playlist),
            playlist_location=self._location(self.paths.playlist),
            live_playlist_name=str(live or ""),
            live_playlist_location=self._location(live) if live is not None else "",
            started_at=started_at,
        )

    def update_result(self, ended_at: int | None = None) -> None:
        if self._result is None:
            return
        done = list(self.segments)
        self._result.segment_count = len(done)
        self._result.duration = int(sum(s.duration for s in done) * 1e9)
        self._result.size = sum(s.size for s in done)
        if ended_at is not None:
            self._result.ended_at = ended_at
            self._result.playlist_location = self._location(self.paths.playlist)
            if self.paths.live_playlist is not None:
                self._result.live_playlist_location = self._location(self.paths.live_playlist)

    def write_manifest(self) -> None:
        """``<playlist>.m3u8.json``: the egress info plus every segment with its times."""
        if self.manifest_path is None or self._manifest is None:
            return
        data = self._manifest()
        data["segments"] = [
            {
                "filename": s.name,
                "location": self._location(s.path),
                "start": round(s.start, 6),
                "duration": round(s.duration, 6),
                "size": s.size,
                "timestamp": int(s.wall * 1e9),
            }
            for s in self.segments
        ]
        self.manifest_path.write_text(json.dumps(data, indent=2))
