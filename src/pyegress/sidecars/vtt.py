"""WebVTT: cues with an optional speaker (``<v name>``), times on the media clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The shortest cue written (a cue must end after it starts).
MIN_CUE = 0.04


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str
    speaker: str = ""


def timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm`` as WebVTT wants it."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _escape(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "\n".join(line for line in text.replace("-->", "→").splitlines() if line.strip())


def render_vtt(cues: Iterable[Cue]) -> str:
    """A WebVTT file of ``cues`` in start order, numbered from 1."""
    lines = ["WEBVTT", ""]
    ordered = sorted(cues, key=lambda c: (c.start, c.end))
    for i, c in enumerate(ordered, 1):
        text = _escape(c.text)
        if not text:
            continue
        if c.speaker:
            text = f"<v {_escape(c.speaker)}>{text}"
        end = max(c.end, c.start + MIN_CUE)
        lines += [str(i), f"{timestamp(c.start)} --> {timestamp(end)}", text, ""]
    return "\n".join(lines)
