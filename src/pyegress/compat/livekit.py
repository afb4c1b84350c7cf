"""The livekit SDK's video stream with a native queue of more than one frame.

Upstream gap: the FFI's ``NewVideoStreamRequest`` has ``queue_size_frames`` (the frames the
native side holds between libwebrtc's sink and the Python side; one when omitted) but
``rtc.VideoStream`` does not set it. With one frame, a process stall drops frames in the native
queue ("native video stream queue overflow"): the picture skips even though pyegress places
each frame by its own render time and could still show it in its slot.

:class:`QueuedVideoStream` builds the same request as ``rtc.VideoStream._create_owned_stream``
(a private method: the one reach) with the queue size set. Written for livekit
:data:`WRITTEN_FOR`; on another version it warns once and falls back to the SDK's own request.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2, video_frame_pb2

log = logging.getLogger("pyegress.compat.livekit")

#: The livekit version ``_create_owned_stream`` was read from.
WRITTEN_FOR = "1.2.1"
_warned = False


def drift() -> str:
    """Empty when the installed livekit is the one this module was written for, else what differs."""
    have = version("livekit")
    return "" if have == WRITTEN_FOR else f"livekit {have} is installed; written for {WRITTEN_FOR}"


class QueuedVideoStream(rtc.VideoStream):
    """``rtc.VideoStream`` whose native queue holds ``native_queue`` frames."""

    def __init__(self, track: rtc.Track, *, native_queue: int, **kwargs: Any) -> None:
        self._native_queue = native_queue  # read by _create_owned_stream, within super().__init__
        super().__init__(track, **kwargs)

    def _create_owned_stream(self) -> Any:
        global _warned
        why = drift()
        if why:
            if not _warned:
                _warned = True
                log.warning("%s: video streams keep the SDK's one-frame native queue", why)
            return super()._create_owned_stream()
        assert self._track is not None
        req = ffi_pb2.FfiRequest()
        new = req.new_video_stream
        new.track_handle = self._track._ffi_handle.handle
        new.type = video_frame_pb2.VideoStreamType.VIDEO_STREAM_NATIVE
        if self._format is not None:
            new.format = self._format
        new.normalize_stride = True
        new.queue_size_frames = self._native_queue
        return FfiClient.instance.request(req).new_video_stream.stream
