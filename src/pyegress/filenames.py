"""Filename templates and safe output paths (``{room_name}``, ``{time}``, ... as LiveKit egress)."""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .errors import InvalidRequestError

#: Placeholders LiveKit egress expands in file paths and prefixes.
TEMPLATE_KEYS = (
    "room_name",
    "room_id",
    "time",
    "utc",
    "publisher_identity",
    "track_id",
    "track_type",
    "track_source",
    "retry",  # the egress's retry_count: 0, then 1, 2 ... on each retry
)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
#: Extensions a request may end its path with; anything else gets the output's extension added.
MEDIA_EXTENSIONS = (".mp4", ".ogg", ".webm", ".mp3", ".m3u8", ".ts", ".jpeg", ".jpg")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")


def time_values(now: _dt.datetime | None = None) -> dict[str, str]:
    """``{time}`` (local, ``2006-01-02T150405``) and ``{utc}`` (unix seconds) as egress names them."""
    now = now or _dt.datetime.now().astimezone()
    return {
        "time": now.strftime("%Y-%m-%dT%H%M%S"),
        "utc": str(int(now.timestamp())),
    }


def check_template(template: str, field: str) -> None:
    """Reject unknown placeholders early, naming the field."""
    for key in _PLACEHOLDER.findall(template):
        if key not in TEMPLATE_KEYS:
            raise InvalidRequestError(
                field, f"unknown placeholder {{{key}}}; known: {', '.join(TEMPLATE_KEYS)}"
            )


def expand(template: str, values: Mapping[str, str]) -> str:
    """Replace known placeholders; values are sanitised so they cannot add path parts."""

    def repl(m: re.Match[str]) -> str:
        value = values.get(m.group(1))
        return m.group(0) if value is None else _UNSAFE.sub("_", value) or "_"

    return _PLACEHOLDER.sub(repl, template)


def timestamp_suffix(wall: float) -> str:
    """``20240131235959123``: UTC to the millisecond, as segment and image names carry it."""
    t = _dt.datetime.fromtimestamp(wall, _dt.timezone.utc)
    return f"{t:%Y%m%d%H%M%S}{t.microsecond // 1000:03d}"


def place(path: str | os.PathLike[str], *, output_dir: Path, jail: bool, field: str) -> Path:
    """The absolute path of an output file: relative paths live under ``output_dir`` and may
    not leave it; absolute ones are taken as they are, unless ``jail`` keeps them inside too
    (an ``output_dir`` the user chose is a jail; the working folder by default is not)."""
    p = Path(path)
    root = output_dir.resolve()
    full = (p if p.is_absolute() else root / p).resolve()
    if (jail or not p.is_absolute()) and full != root and root not in full.parents:
        raise InvalidRequestError(field, f"path {os.fspath(path)!r} escapes the output folder {root}")
    return full


def resolve_path(
    template: str,
    *,
    values: Mapping[str, str],
    output_dir: Path,
    default_stem: str,
    extension: str,
    field: str,
    jail: bool = True,
) -> Path:
    """Turn a request ``filepath`` into an absolute path (see :func:`place`).

    Empty means a generated name; a trailing ``/`` means a folder (generated name inside it);
    the extension is added when missing.
    """
    raw = template.strip()
    if not raw or raw.endswith(("/", os.sep)):
        raw = raw + default_stem
    path = Path(expand(raw, values))
    if path.suffix.lower() not in MEDIA_EXTENSIONS:
        path = path.with_name(path.name + extension)
    try:
        return place(path, output_dir=output_dir, jail=jail, field=field)
    except InvalidRequestError:
        root = output_dir.resolve()
        raise InvalidRequestError(field, f"path {template!r} escapes the output folder {root}") from None
