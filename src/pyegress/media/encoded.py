"""Encoded frames as the sender sent them, and the clocks that place them.

Times come from the sender: the RTP timestamp (unwrapped to 64 bits) on the track's own clock,
and, once a sender report arrived, the sender's wall-clock time of the frame (its NTP time
mapped through the latest report), which lines up tracks of one participant.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import av

#: 1900-01-01 (NTP's epoch) to 1970-01-01, in seconds.
NTP_UNIX_OFFSET = 2208988800


@dataclass(frozen=True)
class EncodedFrame:
    """One H.264 access unit (Annex B), VP8 frame or Opus packet of one track."""

    codec: str  # "h264", "vp8" or "opus"
    data: bytes
    rtp: int  # RTP timestamp, unwrapped (monotonic across the 32-bit wrap)
    clock_rate: int
    keyframe: bool
    sender_time: float | None  # the sender's wall clock (Unix seconds) of this frame, by its SR
    arrived: float = 0.0  # when it was received (monotonic; 0: not known)
    #: the first frame handed on after the signaling said its track was unmuted: livekit-server
    #: re-times a resumed track, so what came before says nothing of this frame's delay
    resumed: bool = False


def h264_nal_types(data: bytes) -> list[int]:
    """The NAL unit types of an Annex B access unit."""
    types = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        types.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


def h264_parameter_sets(data: bytes) -> bytes:
    """The SPS and PPS NAL units of an access unit, with start codes (FFmpeg's extradata)."""
    out = []
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, s in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(data)
        nal = data[s + 3 : end].rstrip(b"\x00")
        if nal and nal[0] & 0x1F in (7, 8):
            out.append(b"\x00\x00\x00\x01" + nal)
    return b"".join(out)


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether a frame can start a file: an IDR access unit (with its SPS and PPS) or a VP8
    key frame; every Opus packet can."""
    if codec == "h264":
        types = h264_nal_types(data)
        return 5 in types and 7 in types and 8 in types
    if codec == "vp8":
        return len(data) >= 10 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"
    return True


def picture_size(frame: EncodedFrame) -> tuple[int, int]:
    """The width and height of a key frame (VP8 from its header, H.264 by decoding it once)."""
    if frame.codec == "vp8":
        w, h = struct.unpack("<HH", frame.data[6:10])
        return w & 0x3FFF, h & 0x3FFF
    ctx = av.CodecContext.create("h264", "r")
    for pic in ctx.decode(av.Packet(frame.data)):
        return pic.width, pic.height
    for pic in ctx.decode(None):
        return pic.width, pic.height
    raise ValueError("the first H.264 key frame does not decode")


class RtpUnwrapper:
    """Unwraps 32-bit RTP timestamps into a monotonic 64-bit count (a step back stays back)."""

    def __init__(self) -> None:
        self._last: int | None = None

    def __call__(self, ts: int) -> int:
        if self._last is None:
            self._last = ts
            return ts
        delta = (ts - self._last) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        self._last += delta
        return self._last


class SenderClock:
    """The latest sender report of a stream: maps RTP timestamps to the sender's wall clock."""

    def __init__(self) -> None:
        self._ntp: float | None = None
        self._rtp = 0

    def report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Take a sender report (64-bit NTP time, 32-bit RTP timestamp)."""
        self._ntp = (ntp_timestamp >> 32) - NTP_UNIX_OFFSET + (ntp_timestamp & 0xFFFFFFFF) / (1 << 32)
        self._rtp = rtp_timestamp

    def time_of(self, rtp: int, clock_rate: int) -> float | None:
        """The sender's wall-clock time of RTP timestamp ``rtp`` (None before a report)."""
        if self._ntp is None:
            return None
        delta = (rtp - self._rtp) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        return self._ntp + delta / clock_rate
