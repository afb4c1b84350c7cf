"""What the pipeline reads each tick: a video source and audio sources, as typed protocols.

A video source answers ``at(t)`` with the picture to show at monotonic time ``t``: an SDK
frame, a PyAV frame, or a scene drawn on demand (:class:`Renderable`, e.g. the room
composite). An audio source answers ``read(start, count)`` with int16 PCM at ``MIX_RATE``.
Recorders and sources implement these; the pipeline knows nothing else about them.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias, runtime_checkable

import av
import numpy as np
from livekit import rtc

#: Sample rate and channel count of everything the timeline holds; encoders resample.
MIX_RATE = 48000
MIX_CHANNELS = 2


@runtime_checkable
class Renderable(Protocol):
    """A picture drawn on demand, on the encode thread (a composite scene, a page's JPEG)."""

    def render(self, width: int, height: int) -> av.VideoFrame: ...


#: A picture a video source can hand the pipeline.
Picture: TypeAlias = "rtc.VideoFrame | av.VideoFrame | Renderable"


class VideoSource(Protocol):
    """The picture to show at monotonic time ``when`` (None: nothing yet, black is shown), and
    how many received frames were never shown (late, or more than the output frame rate)."""

    def at(self, when: float) -> Picture | None: ...

    @property
    def frames_skipped(self) -> int: ...


class AudioSource(Protocol):
    """PCM for output sample positions ``[start, start + count)``, shape (count, MIX_CHANNELS)."""

    def read(self, start: int, count: int) -> np.ndarray: ...
