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
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

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
