"""aiortc's receiver, tapped for encoded frames: the one place pyegress reaches inside aiortc.

Upstream gap: aiortc (1.x) has no public hook for a receiver's encoded frames; its
``RTCRtpReceiver`` reassembles frames in its jitter buffer, maps their RTP timestamps to start
at 0 and queues them for its decoder thread. Here, per receiver and before it starts:

- the decoder queue is replaced by a :class:`FrameTap` that hands each reassembled frame on
  (on the event loop, where aiortc queues it) instead of decoding it; the decoder thread idles
  until the receiver stops;
- the timestamp mapper is replaced by the identity, so frames keep their RTP timestamps;
- RTCP sender reports are shown to ``on_report`` before aiortc handles them;
- PLIs aiortc sends after loss are shown to ``on_loss``; :func:`request_keyframe` sends one.

Written for and checked with aiortc :data:`WRITTEN_FOR` (tests/test_compat_aiortc.py fails
loudly on another version or when a reached name is gone); :func:`check` refuses others.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpSrPacket

from ..errors import SourceError

#: The aiortc version these reaches were read from.
WRITTEN_FOR = "1.16.0"

_P = "_RTCRtpReceiver__"
#: The private names used, each must exist on a new receiver.
REACHED = (f"{_P}decoder_queue", f"{_P}timestamp_mapper", f"{_P}started", "_handle_rtcp_packet",
           "_send_rtcp_pli")  # fmt: skip

OnFrame = Callable[[RTCRtpCodecParameters, bytes, int], None]


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
        self.on_frame(codec, frame.data, frame.timestamp)


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
