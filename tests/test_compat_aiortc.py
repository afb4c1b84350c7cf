"""pyegress.compat.aiortc reaches into aiortc's receiver: fail loudly when aiortc changes."""

from __future__ import annotations

import asyncio
import copy
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


def receiver(kind: str = "video") -> RTCRtpReceiver:
    ice = RTCIceTransport(RTCIceGatherer())
    return RTCRtpReceiver(kind, RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()]))


def test_installed_aiortc_is_the_one_written_for() -> None:
    assert compat.drift() == "", compat.drift()
    compat.check()


async def test_every_reached_name_exists_and_the_tap_takes_frames_and_reports() -> None:
    r = receiver()
    for name in compat.REACHED:
        assert hasattr(r, name), f"aiortc {compat.WRITTEN_FOR} receiver lost {name}"
    frames: list[tuple[str, bytes, int]] = []
    reports: list[tuple[int, int]] = []
    assert compat.tap(r, lambda c, d, ts, came: frames.append((c.name, d, ts)),
                      lambda n, t: reports.append((n, t)), lambda: None)  # fmt: skip
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


def test_a_tapped_video_receiver_sends_no_bandwidth_estimate() -> None:
    """No REMB from the recorder: aiortc's read a busy event loop as a congested link and the
    server sent lower layers for it (``compat.aiortc``'s docstring has the figures)."""
    r = receiver()
    assert r._RTCRtpReceiver__remote_bitrate_estimator is not None  # aiortc's own sends one
    assert compat.tap(r, lambda c, d, ts, came: None, lambda n, t: None, lambda: None)
    assert r._RTCRtpReceiver__remote_bitrate_estimator is None


def test_an_audio_receivers_buffer_is_timed_and_holds_as_aiortcs() -> None:
    r = receiver("audio")
    own = r._RTCRtpReceiver__jitter_buffer
    assert compat.tap(r, lambda c, d, ts, came: None, lambda n, t: None, lambda: None)
    timed = r._RTCRtpReceiver__jitter_buffer
    assert isinstance(timed, compat.TimedJitterBuffer) and not timed._is_video
    assert (timed.capacity, timed._prefetch) == (own.capacity, own._prefetch) == (16, 4)


@pytest.mark.parametrize("video", [True, False])
def test_a_frame_carries_the_time_its_last_packet_came_not_when_it_was_let_go(
    video: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiortc lets a video frame go with the next frame's first packet, an Opus packet with the
    fourth after it: a variable-rate camera's frame was let go up to 120 ms after it came."""
    now = [0.0]
    monkeypatch.setattr(compat.time, "monotonic", lambda: now[0])
    per_frame = 3 if video else 1
    buffer = compat.BoundedJitterBuffer() if video else compat.TimedJitterBuffer(16, prefetch=4)
    out: list[tuple[int, float, float]] = []  # (timestamp, came, let go)
    for k, p in enumerate(_packets(12, per_frame)):
        now[0] = k // per_frame * 0.1 + k % per_frame * 0.001  # frames 100 ms apart, packets 1 ms
        _, frame = buffer.add(p)
        if frame is not None:
            assert isinstance(frame, compat.TimedFrame)
            out.append((frame.timestamp, frame.came, now[0]))
    assert len(out) == (12 if video else 8)
    for ts, came, let_go in out:
        n = ts // 3000
        assert came == pytest.approx(n * 0.1 + (per_frame - 1) * 0.001)  # its last packet
        # a whole video frame goes on with its last packet (aiortc: with the next one's first)
        assert let_go == pytest.approx(came if video else (n + 4) * 0.1)


def _packets(frames: int, per_frame: int = 3, first_seq: int = 65530) -> list[RtpPacket]:
    """RTP packets of ``frames`` frames (across the sequence number wrap), depayloaded."""
    out = []
    for k in range(frames * per_frame):
        p = RtpPacket(
            payload_type=96, sequence_number=(first_seq + k) & 0xFFFF, timestamp=3000 * (k // per_frame),
            marker=int(k % per_frame == per_frame - 1),  # a frame's last packet
        )  # fmt: skip
        p._data = bytes([k % 256])  # type: ignore[attr-defined]
        p.payload = bytes([0x10 if k % per_frame == 0 else 0]) + p._data  # type: ignore[attr-defined]  # VP8: S bit at a frame's start
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
    # in order: every frame comes out with its last packet (aiortc's own waits for the next
    # frame's start: the last one stays)
    assert _feed(compat.BoundedJitterBuffer(), packets) == ([3000 * k for k in range(40)], 0)
    assert _feed(JitterBuffer(capacity=512, is_video=True), packets)[0] == [3000 * k for k in range(39)]
    # a packet of frame 2 arrives late (a NACK's retransmission, within the wait): no frame lost
    late = [*packets[:7], *packets[8:12], packets[7], *packets[12:]]
    assert _feed(compat.BoundedJitterBuffer(), late) == ([3000 * k for k in range(40)], 0)
    # never repaired: aiortc's own buffer holds everything behind the hole (512 packets' worth)
    lost = [*packets[:7], *packets[8:]]
    assert _feed(JitterBuffer(capacity=512, is_video=True), lost) == ([0, 3000], 0)
    # bounded: once the wait is over the broken frame goes, a PLI is asked for, the rest flows
    bounded = compat.BoundedJitterBuffer(max_wait=0.0)
    frames, plis = _feed(bounded, lost)
    assert plis == 1 and bounded.holes_dropped == 1
    assert frames[:2] == [0, 3000] and 6000 not in frames and frames[-1] == 3000 * 39, frames


def _renumbered(packets: list[RtpPacket]) -> list[RtpPacket]:
    """Copies of the packets renumbered without a gap, as an SFU forwards what it chose to."""
    out = [copy.copy(p) for p in packets]
    for k, p in enumerate(out):
        p.sequence_number = (packets[0].sequence_number + k) & 0xFFFF
    return out


VP8 = {96: "VP8"}.get


def test_a_frame_without_its_tail_or_head_is_not_handed_on() -> None:
    """A frame cut short by an SFU's layer switch (its tail not forwarded, the numbers left
    without a gap) or one whose first packets were lost is dropped with a PLI; aiortc's own
    buffer hands both on, and such a frame does not decode. The frame after the cut one starts
    whole (a VP8 descriptor's start bit) and goes on."""
    packets = _packets(10)
    cut = _renumbered([*packets[:7], *packets[9:]])  # frame 2 lost its last two packets
    assert 6000 in _feed(JitterBuffer(capacity=512, is_video=True), cut)[0]
    bounded = compat.BoundedJitterBuffer(codec_of=VP8)
    frames, plis = _feed(bounded, cut)
    assert frames == [0, 3000, *range(9000, 27001, 3000)] and plis == 1 and bounded.broken_dropped == 1
    # without knowing the codec a frame after a cut one cannot be told from a headless one
    frames, plis = _feed(compat.BoundedJitterBuffer(), _renumbered([*packets[:7], *packets[9:]]))
    assert frames == [0, 3000, *range(12000, 27001, 3000)] and plis == 2
    # frame 3's first packet lost and never repaired, renumbered as if sent so: not handed on
    headless = _renumbered([*packets[:9], *packets[10:]])
    assert 9000 in _feed(JitterBuffer(capacity=512, is_video=True), headless)[0]
    frames, plis = _feed(compat.BoundedJitterBuffer(codec_of=VP8), headless)
    assert frames == [0, 3000, 6000, *range(12000, 27001, 3000)] and plis == 1, frames
    # lost (a hole, never repaired): frames 2 and 3 give way to a PLI once the wait is over
    bounded = compat.BoundedJitterBuffer(max_wait=0.0, codec_of=VP8)
    frames, plis = _feed(bounded, [*packets[:9], *packets[10:]])
    assert 9000 not in frames and frames[:2] == [0, 3000] and frames[-1] == 3000 * 9, frames
    assert plis >= 1 and bounded.holes_dropped >= 1


def test_a_frame_start_is_read_from_its_codec() -> None:
    """VP8: the descriptor's S bit with partition 0; H.264: aiortc's start code before a NAL
    unit's start (an FU-A's later fragments carry none); another codec: not known."""

    def packet(payload: bytes, data: bytes) -> RtpPacket:
        p = RtpPacket(payload=payload)
        p._data = data  # type: ignore[attr-defined]
        return p

    assert compat.starts_frame("VP8", packet(b"\x90\x80\x01x", b"x"))  # extended, picture id
    assert not compat.starts_frame("VP8", packet(b"\x80\x80\x01x", b"x"))  # a later packet
    assert not compat.starts_frame("VP8", packet(b"\x11x", b"x"))  # partition 1's start
    assert compat.starts_frame("H264", packet(b"", b"\x00\x00\x00\x01\x65x"))
    assert not compat.starts_frame("H264", packet(b"", b"\x88\x84x"))
    assert compat.starts_frame("opus", packet(b"x", b"x")) is None


def test_padding_is_no_frame() -> None:
    """Padding packets (no data: an SFU probing bandwidth) between frames, with a timestamp of
    their own or the last frame's, hand on no empty frame and ask for nothing."""
    packets = _packets(6)
    pads = []
    for ts in (6000, 7500, 7500):  # after frame 2's end: its timestamp, then one of their own
        pad = RtpPacket(payload_type=96, timestamp=ts)
        pad._data = b""  # type: ignore[attr-defined]
        pads.append(pad)
    stream = _renumbered([*packets[:9], *pads, *packets[9:]])
    assert _feed(compat.BoundedJitterBuffer(codec_of=VP8), stream) == ([3000 * k for k in range(6)], 0)
