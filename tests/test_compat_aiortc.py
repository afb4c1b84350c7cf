"""pyegress.compat.aiortc reaches into aiortc's receiver: fail loudly when aiortc changes."""

from __future__ import annotations

import asyncio
import sys

import pytest

if sys.version_info < (3, 11):  # from 3.11 on, a missing or other aiortc fails below
    # aiortc 1.16 needs Python 3.11; on 3.10 pyegress installs without it and re-encodes track
    # egress through the SDK (recorders.ENCODED_PATH): there is nothing of aiortc's to check
    pytest.skip("aiortc 1.16 is installed on Python 3.11 and later only", allow_module_level=True)

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket, RtpPacket

from pyegress.compat import aiortc as compat


def receiver() -> RTCRtpReceiver:
    ice = RTCIceTransport(RTCIceGatherer())
    return RTCRtpReceiver("video", RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()]))


def test_installed_aiortc_is_the_one_written_for() -> None:
    assert compat.drift() == "", compat.drift()
    compat.check()


async def test_every_reached_name_exists_and_the_tap_takes_frames_and_reports() -> None:
    r = receiver()
    for name in compat.REACHED:
        assert hasattr(r, name), f"aiortc {compat.WRITTEN_FOR} receiver lost {name}"
    frames: list[tuple[str, bytes, int]] = []
    reports: list[tuple[int, int]] = []
    assert compat.tap(r, lambda c, d, ts: frames.append((c.name, d, ts)), lambda n, t: reports.append((n, t)),
                      lambda: None)  # fmt: skip
    # the receiver's own path, as _handle_rtp_packet ends: map the timestamp, queue the frame
    mapped = r._RTCRtpReceiver__timestamp_mapper.map(123456789)
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    frame = type("F", (), {"data": b"\x10\x02", "timestamp": mapped})()
    r._RTCRtpReceiver__decoder_queue.put((codec, frame))
    assert frames == [("VP8", b"\x10\x02", 123456789)]  # the RTP timestamp as sent
    sr = RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(ntp_timestamp=7 << 32, rtp_timestamp=99,
                                                         packet_count=0, octet_count=0))  # fmt: skip
    await r._handle_rtcp_packet(sr)
    assert reports == [(7 << 32, 99)]
    await asyncio.sleep(0)
    assert isinstance(r._RTCRtpReceiver__jitter_buffer, compat.BoundedJitterBuffer)


def _packets(frames: int, per_frame: int = 3, first_seq: int = 65530) -> list[RtpPacket]:
    """RTP packets of ``frames`` frames (across the sequence number wrap), depayloaded."""
    out = []
    for k in range(frames * per_frame):
        p = RtpPacket(
            payload_type=96, sequence_number=(first_seq + k) & 0xFFFF, timestamp=3000 * (k // per_frame)
        )
        p._data = bytes([k % 256])  # type: ignore[attr-defined]
        out.append(p)
    return out


def _feed(buffer: JitterBuffer, packets: list[RtpPacket]) -> tuple[list[int], int]:
    """Frames handed out (by timestamp) and PLIs asked for."""
    frames, plis = [], 0
    for p in packets:
        pli, frame = buffer.add(p)
        plis += pli
        if frame is not None:
            frames.append(frame.timestamp)
    return frames, plis


def test_a_frame_with_a_hole_waits_for_its_packet_then_gives_way_to_a_pli() -> None:
    packets = _packets(40)
    # in order: every complete frame comes out (the last waits for the next frame's start)
    assert _feed(compat.BoundedJitterBuffer(), packets) == ([3000 * k for k in range(39)], 0)
    # a packet of frame 2 arrives late (a NACK's retransmission, within the wait): no frame lost
    late = [*packets[:7], *packets[8:12], packets[7], *packets[12:]]
    assert _feed(compat.BoundedJitterBuffer(), late) == ([3000 * k for k in range(39)], 0)
    # never repaired: aiortc's own buffer holds everything behind the hole (512 packets' worth)
    lost = [*packets[:7], *packets[8:]]
    assert _feed(JitterBuffer(capacity=512, is_video=True), lost) == ([0, 3000], 0)
    # bounded: once the wait is over the broken frame goes, a PLI is asked for, the rest flows
    bounded = compat.BoundedJitterBuffer(max_wait=0.0)
    frames, plis = _feed(bounded, lost)
    assert plis == 1 and bounded.holes_dropped == 1
    assert frames[:2] == [0, 3000] and 6000 not in frames and frames[-1] == 3000 * 38, frames
