"""aiortc's receiver, tapped for encoded frames: the one place pyegress reaches inside aiortc.

Upstream gap: aiortc (1.x) has no public hook for a receiver's encoded frames; its
``RTCRtpReceiver`` reassembles frames in its jitter buffer, maps their RTP timestamps to start
at 0 and queues them for its decoder thread. Here, per receiver and before it starts:

- the decoder queue is replaced by a :class:`FrameTap` that hands each reassembled frame on
  (on the event loop, where aiortc queues it) instead of decoding it; the decoder thread idles
  until the receiver stops;
- the timestamp mapper is replaced by the identity, so frames keep their RTP timestamps;
- a video receiver sends no REMB. aiortc's estimate is per receiver and taken on the event
  loop: it read a busy loop as congestion (61-1250 kbps on loopback, one receiver's stream
  at 110-140 kbps), livekit-server takes each REMB for the whole connection's capacity, and
  it forwarded a browser's 30 fps camera to the recorder at 15 fps (4 of 20 grid runs; none
  in 9 without). Without REMB the server assumes the most (its ``ChannelCapacityInfinity``);
  a recorder wants every layer it asks for;
- RTCP sender reports are shown to ``on_report`` before aiortc handles them;
- PLIs aiortc sends after loss are shown to ``on_loss``; :func:`request_keyframe` sends one;
- each frame is handed on with the time its last packet came (:class:`TimedJitterBuffer`), not
  the time aiortc lets it go (later packets' arrival);
- a video receiver's jitter buffer is a :class:`BoundedJitterBuffer`: a frame with a hole waits
  for its NACKed packets at most :data:`MAX_HOLE_WAIT`, then is dropped with a PLI (aiortc's
  own waits until 512 packets came after the hole: seconds of video at any bitrate); a frame
  not whole (its head or tail missing) is dropped with a PLI too, and padding is no frame.

Written for and checked with aiortc :data:`WRITTEN_FOR` (tests/test_compat_aiortc.py fails
loudly on another version or when a reached name is gone); :func:`check` refuses others.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpSrPacket, RtpPacket
from aiortc.utils import uint16_add, uint16_gt

from ..errors import SourceError

#: The aiortc version these reaches were read from.
WRITTEN_FOR = "1.16.0"

_P = "_RTCRtpReceiver__"
#: The private names used, each must exist on a new receiver.
REACHED = (f"{_P}decoder_queue", f"{_P}timestamp_mapper", f"{_P}started", f"{_P}jitter_buffer",
           f"{_P}codecs", f"{_P}remote_bitrate_estimator", "_handle_rtcp_packet",
           "_send_rtcp_pli")  # fmt: skip
#: How long a video frame with a hole waits for its NACKed packets before a PLI replaces it.
MAX_HOLE_WAIT = 0.4

#: Frames whose packets' arrival a :class:`TimedJitterBuffer` keeps before it forgets the oldest
#: (frames dropped whole, late retransmissions of a frame already handed on).
ARRIVALS_KEPT = 64

#: (codec, frame data, RTP timestamp, monotonic time the frame's last packet came)
OnFrame = Callable[[RTCRtpCodecParameters, bytes, int, float], None]


def drift() -> str:
    """Empty when the installed aiortc is the one this module was written for, else what differs."""
    have = version("aiortc")
    if have != WRITTEN_FOR:
        return f"aiortc {have} is installed; pyegress.compat.aiortc was written for aiortc {WRITTEN_FOR}"
    return ""


def check() -> None:
    """Refuse to run on an aiortc this module was not written for."""
    why = drift()
    if why:
        raise SourceError(f"encoded receive path: {why} (pin aiortc=={WRITTEN_FOR})")


class FrameTap(queue.Queue):  # type: ignore[type-arg]
    """Stands in for a receiver's decoder queue: frames go to ``on_frame``; the end marker
    (None) goes to the idle decoder thread, which then ends."""

    def __init__(self, on_frame: OnFrame) -> None:
        super().__init__()
        self.on_frame = on_frame

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
            return
        codec, frame = item
        came = frame.came if isinstance(frame, TimedFrame) else time.monotonic()
        self.on_frame(codec, frame.data, frame.timestamp, came)


class TimedFrame(JitterFrame):
    """A reassembled frame and the monotonic time its last packet came."""

    def __init__(self, data: bytes, timestamp: int, came: float) -> None:
        super().__init__(data, timestamp)
        self.came = came


class TimedJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, whose frames say when their last packet came.

    aiortc lets a frame go only once later packets came: a video frame with the next frame's
    first packet, an Opus packet with the fourth after it. That time tells when the next
    frames came, not this one: a variable-rate camera's frames (10-120 ms apart) were let go
    that much after they came, and placed by the least of those delays less a median frame
    step, its picture landed up to 60 ms before its sound."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        self._came: dict[int, float] = {}  # RTP timestamp -> when its latest packet came

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        came = self._came
        came.pop(packet.timestamp, None)  # kept in the order of the frames' last packets
        came[packet.timestamp] = time.monotonic()
        while len(came) > ARRIVALS_KEPT:
            del came[next(iter(came))]
        return super().add(packet)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame = super()._remove_frame(sequence_number)
        return None if frame is None else self._timed(frame.data, frame.timestamp)

    def _timed(self, data: bytes, timestamp: int) -> TimedFrame:
        came = self._came.pop(timestamp, None)
        return TimedFrame(data, timestamp, time.monotonic() if came is None else came)


class BoundedJitterBuffer(TimedJitterBuffer):
    """aiortc's video jitter buffer (512 packets) whose frames wait for a missing packet at
    most ``max_wait`` seconds: then the broken frame is dropped and ``add`` asks for a PLI (the
    subscriber then waits for the key frame it brings).

    aiortc hands on a frame once a packet of the next timestamp follows it, whole or not. Here
    a frame goes on as soon as its last packet came when all before it did (:meth:`_ended_by`),
    else as aiortc does, and only when whole: its last packet carries the RTP marker and its
    first one starts a frame (by ``codec_of`` its payload type's codec: a VP8 descriptor's
    start of partition 0, an H.264 NAL unit's start; for another codec, the packet before it
    carried the marker). Else it is dropped with a PLI: a frame without its head (its first
    packets lost) or its tail (an SFU that switches simulcast layers mid-frame renumbers the
    packets without a gap) does not decode, and a file written as sent must not hold one.
    Packets without data (padding an SFU sends to probe bandwidth) are no frame."""

    def __init__(
        self, max_wait: float = MAX_HOLE_WAIT, codec_of: Callable[[int], str | None] = lambda pt: None
    ) -> None:
        super().__init__(capacity=512, is_video=True)
        self.max_wait = max_wait
        self.codec_of = codec_of
        self.holes_dropped = 0
        #: frames dropped because their head or tail was missing
        self.broken_dropped = 0
        self._newest: int | None = None
        self._hole_since: float | None = None
        #: whether the packets removed so far ended on a frame's last packet (None: none yet)
        self._ended: bool | None = None
        self._ended_before: bool | None = None
        self._first: RtpPacket | None = None  # the first packet with data of the last removal

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = self._add(packet)
        if frame is None and packet.marker:
            frame = self._ended_by(packet)
        if frame is None or not frame.data:
            return pli, None
        head = self._first is not None and starts_frame(self.codec_of(self._first.payload_type), self._first)
        if not self._ended or head is False or (head is None and self._ended_before is False):
            self.broken_dropped += 1
            return True, None
        return pli, frame

    def _ended_by(self, marker: RtpPacket) -> JitterFrame | None:
        """The frame whose last packet ``marker`` is, once every packet from the origin up to it
        came (padding before it aside): aiortc would hand it on with the next frame's first
        packet, a frame later, and the camera's last frame before a pause only when it ends
        (that frame, shown then, cut the freeze the pause is short by 0.2 s)."""
        if self._origin is None:
            return None
        count = uint16_add(marker.sequence_number, -self._origin) + 1
        if count > self.capacity:  # older than the origin: a late copy of a frame handed on
            return None
        packets = [self._packets[(self._origin + i) % self.capacity] for i in range(count)]
        if packets[-1] is not marker or any(p is None for p in packets):
            return None
        data: list[RtpPacket] = [p for p in packets if p is not None and _data(p)]
        if not data or any(p.timestamp != marker.timestamp for p in data):
            return None
        self.remove(count)
        return self._timed(b"".join(_data(p) for p in data), marker.timestamp)

    def remove(self, count: int) -> None:
        """aiortc's removal, noting whether what it removes ends a frame: a missing packet does
        not, a packet with data does when it carries the marker, padding changes nothing."""
        assert self._origin is not None
        self._ended_before, self._first = self._ended, None
        for i in range(count):
            p = self._packets[(self._origin + i) % self.capacity]
            if p is None:
                self._ended = False
            elif _data(p):
                self._ended = bool(p.marker)
                self._first = self._first or p
        super().remove(count)

    def smart_remove(self, count: int) -> bool:
        self._ended = False  # aiortc drops whole frames here, after a loss
        return super().smart_remove(count)

    def _add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._newest is None or uint16_gt(packet.sequence_number, self._newest):
            self._newest = packet.sequence_number
        pli, frame = super().add(packet)
        hole = self._hole()
        if frame is not None or hole is None:
            self._hole_since = None
            return pli, frame
        now = time.monotonic()
        if self._hole_since is None:
            self._hole_since = now
        if now - self._hole_since < self.max_wait:
            return pli, frame
        self._hole_since = None
        self.holes_dropped += 1
        self._drop_through(hole)
        return True, self._remove_frame(packet.sequence_number)

    def _drop_through(self, hole: int) -> None:
        """Drop the packets up to the hole and the rest of the broken frame after it."""
        assert self._origin is not None
        before = self._packets[(self._origin + hole - 1) % self.capacity] if hole else None
        broken = before or self._packets[(self._origin + hole + 1) % self.capacity]
        self.remove(hole + 1)
        while broken is not None:
            head = self._packets[self._origin % self.capacity]
            if head is None or head.timestamp != broken.timestamp:
                break
            self.remove(1)

    def _hole(self) -> int | None:
        """The first missing packet before the newest one (its offset from the origin)."""
        if self._origin is None or self._newest is None:
            return None
        span = uint16_add(self._newest, -self._origin)
        if span >= self.capacity:
            return None
        for i in range(span):
            if self._packets[(self._origin + i) % self.capacity] is None:
                return i
        return None


def _data(packet: RtpPacket) -> bytes:
    """A packet's depayloaded data (aiortc sets ``_data`` on each packet it receives)."""
    data: bytes = getattr(packet, "_data", b"")
    return data


def starts_frame(codec: str | None, packet: RtpPacket) -> bool | None:
    """Whether a depayloaded packet starts a frame; None for a codec not known here."""
    if codec == "VP8":  # the descriptor: start of a partition, and it is partition 0
        return bool(packet.payload) and packet.payload[0] & 0x17 == 0x10
    if codec == "H264":  # aiortc writes a start code before each NAL unit's start only
        return _data(packet)[:4] == b"\x00\x00\x00\x01"
    return None


class _Identity:
    def map(self, timestamp: int) -> int:
        return timestamp


def tapped(receiver: RTCRtpReceiver) -> FrameTap | None:
    """The receiver's tap, when it has one."""
    q = getattr(receiver, f"{_P}decoder_queue", None)
    return q if isinstance(q, FrameTap) else None


def tap(
    receiver: RTCRtpReceiver,
    on_frame: OnFrame,
    on_report: Callable[[int, int], None],
    on_loss: Callable[[], None],
) -> bool:
    """Tap a receiver that has not started (True), or re-point an existing tap; False when the
    receiver already started untapped (its frames then stay aiortc's)."""
    existing = tapped(receiver)
    if existing is not None:
        existing.on_frame = on_frame
        receiver._pyegress_on_report = on_report  # type: ignore[attr-defined]
        receiver._pyegress_on_loss = on_loss  # type: ignore[attr-defined]
        return True
    if getattr(receiver, f"{_P}started"):
        return False
    setattr(receiver, f"{_P}decoder_queue", FrameTap(on_frame))
    setattr(receiver, f"{_P}timestamp_mapper", _Identity())
    setattr(receiver, f"{_P}remote_bitrate_estimator", None)
    if getattr(receiver, f"{_P}jitter_buffer")._is_video:
        codecs = getattr(receiver, f"{_P}codecs")  # filled in place by receive()

        def codec_of(pt: int) -> str | None:
            c = codecs.get(pt)
            return c.name if c is not None else None

        setattr(receiver, f"{_P}jitter_buffer", BoundedJitterBuffer(codec_of=codec_of))
    else:
        old = getattr(receiver, f"{_P}jitter_buffer")
        setattr(receiver, f"{_P}jitter_buffer", TimedJitterBuffer(old.capacity, prefetch=old._prefetch))
    receiver._pyegress_on_report = on_report  # type: ignore[attr-defined]
    receiver._pyegress_on_loss = on_loss  # type: ignore[attr-defined]
    handle_rtcp = receiver._handle_rtcp_packet
    send_pli = receiver._send_rtcp_pli

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            receiver._pyegress_on_report(info.ntp_timestamp, info.rtp_timestamp)  # type: ignore[attr-defined]
        await handle_rtcp(packet)

    async def pli(media_ssrc: int) -> None:
        receiver._pyegress_on_loss()  # type: ignore[attr-defined]
        await send_pli(media_ssrc)

    receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]
    receiver._send_rtcp_pli = pli  # type: ignore[method-assign]
    receiver._pyegress_send_pli = send_pli  # type: ignore[attr-defined]
    return True


def request_keyframe(receiver: RTCRtpReceiver) -> None:
    """Send a PLI for every stream the receiver gets (a key frame is wanted)."""
    send = getattr(receiver, "_pyegress_send_pli", receiver._send_rtcp_pli)
    for src in receiver.getSynchronizationSources():
        asyncio.get_running_loop().create_task(send(src.source))
