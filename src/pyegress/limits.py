"""Session limits, as LiveKit Egress's ``session_limits``: how long an egress may record and how
much its files may hold before it ends ``EGRESS_LIMIT_REACHED`` with complete outputs.

The smallest duration limit among the egress's output kinds applies (a WebSocket counts as a
stream). It is counted twice, both from a start: an egress still STARTING (waiting for its
room, track or page) that long after it began is aborted, as LiveKit aborts one that got no
start signal; once ACTIVE, the recording ends when its media is that long, so a 3 h limit makes
3 h files. ``file_output_max_size`` is checked against the bytes the file outputs have on disk.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol

from livekit.protocol import egress as pe

from .errors import InvalidRequestError
from .outputs.base import Output
from .outputs.file import FileOutput

if TYPE_CHECKING:
    from .config import EgressConfig
    from .pipeline import Pipeline

#: How often the bytes on disk are looked at (a stat per file output).
SIZE_POLL = 0.5


@dataclass(frozen=True)
class SessionLimits:
    """Limits of every egress of a service (0: none). Durations in seconds, size in bytes."""

    file_output_max_duration: float = 0.0
    stream_output_max_duration: float = 0.0
    segment_output_max_duration: float = 0.0
    image_output_max_duration: float = 0.0
    file_output_max_size: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidRequestError(f"limits.{f.name}", f"{value!r} is not a number")
            if not math.isfinite(value) or value < 0:
                raise InvalidRequestError(f"limits.{f.name}", f"{value!r} must be 0 (none) or more")
        if self.file_output_max_size != int(self.file_output_max_size):
            raise InvalidRequestError("limits.file_output_max_size", "must be a whole number of bytes")

    def duration_for(self, config: EgressConfig) -> tuple[str, float]:
        """The duration limit that applies to ``config``'s outputs: the smallest among their kinds.

        Args:
            config: the egress's validated config.

        Returns:
            The limit's name and seconds (``("", 0.0)``: none applies).
        """
        kinds = {
            "file_output_max_duration": bool(config.files),
            "stream_output_max_duration": bool(config.streams or config.websocket_url),
            "segment_output_max_duration": bool(config.segments),
            "image_output_max_duration": bool(config.images),
        }
        found = [(getattr(self, name), name) for name, used in kinds.items() if used and getattr(self, name)]
        if not found:
            return "", 0.0
        seconds, name = min(found)
        return name, float(seconds)


class Limited(Protocol):
    """What the watch reads of a recorder, and how it ends it (:class:`~pyegress.Recorder`)."""

    config: EgressConfig
    outputs: list[Output]
    pipeline: Pipeline | None

    @property
    def info(self) -> pe.EgressInfo: ...

    @property
    def ending(self) -> bool: ...

    def reach_limit(self, detail: str) -> None: ...

    def abort_at_limit(self, detail: str) -> None: ...


def _seconds(value: float) -> str:
    return f"{value:g} s"


async def watch_limits(recorder: Limited, limits: SessionLimits) -> None:
    """End ``recorder`` when it reaches a limit (run as a task for the egress's lifetime)."""
    name, seconds = limits.duration_for(recorder.config)
    max_size = limits.file_output_max_size
    if not seconds and not max_size:
        return
    begun = time.monotonic()
    while not recorder.ending:
        now, status, pipeline = time.monotonic(), recorder.info.status, recorder.pipeline
        wait = SIZE_POLL if max_size else math.inf
        if status == pe.EGRESS_STARTING:
            if seconds and now - begun >= seconds:
                recorder.abort_at_limit(f"{name}: {_seconds(seconds)} passed before the recording started")
                return
            if seconds:
                wait = min(wait, begun + seconds - now)
        elif status != pe.EGRESS_ACTIVE:
            return
        elif pipeline is None or not pipeline.t0:  # ACTIVE, its clock about to start
            wait = 0.02
        else:
            # a stop is recorded up to its instant (the pipeline ticks on to it)
            deadline = pipeline.t0 + seconds
            if seconds and now >= deadline:
                recorder.reach_limit(f"{name}: {_seconds(seconds)}")
                return
            size = sum(o.size for o in recorder.outputs if isinstance(o, FileOutput))
            if max_size and size >= max_size:
                recorder.reach_limit(f"file_output_max_size: {size} bytes written, limit {max_size}")
                return
            if seconds:
                wait = min(wait, deadline - now)
        await asyncio.sleep(max(wait, 0.0))
