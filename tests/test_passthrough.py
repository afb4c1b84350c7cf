"""Track egress writes the sender's bitstream (no decode, no encode): H.264 → MP4, VP8 → WebM,
Opus → Ogg, against a real livekit-server; the files are decoded."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import av
import pytest
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

import pyegress
from pyegress.testing import LiveKitServer, picture_moves, tone_present

from .helpers import check_file_result, end_reason, publisher, status, wait_active

pytestmark = pytest.mark.integration


def decoded_video(path: Path) -> tuple[str, list[float]]:
    """The stream's profile and the presentation times of every frame that decodes."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times = [float(f.time) for f in c.decode(s) if f.time is not None]
        return str(s.codec_context.profile), times


@pytest.mark.parametrize(("codec", "ext"), [("h264", ".mp4"), ("vp8", ".webm")])
async def test_video_track_is_written_as_sent(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, codec: str, ext: str
) -> None:
    async with publisher(livekit_server, room_name, video_codec=codec, audio=False) as pub:
        sid = pub.video_track_sid
        req = pe.TrackEgressRequest(room_name=room_name, track_id=sid, file=pe.DirectFileOutput())
        requested = pub.frames_sent
        started = await service.start_track_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        sent0, t0 = pub.frames_sent, time.monotonic()
        await asyncio.sleep(3.0)
        sent, window = pub.frames_sent - sent0, time.monotonic() - t0
        await pub.unpublish("video")
        # what the file may hold: every frame from the request to the unpublish (the window
        # above is narrower: ACTIVE is seen a poll late, the unpublish takes a round trip)
        sent_all = pub.frames_sent - requested
        info = await service.wait_egress(started.egress_id, timeout=10)
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert path.suffix == ext and media.video is not None and media.audio is None
    assert (media.video.codec, media.video.width, media.video.height) == (codec, 640, 360)
    assert end_reason(info) == f"End reason: Source closed (track {sid} unpublished)"
    profile, times = decoded_video(path)
    # the sender's frames, each once, on its clock (its encoder drops some at the start: fewer
    # than the source's, never more; the span is the recording's)
    span = times[-1] - times[0]
    print(f"FIGURES {codec}: frames {len(times)} of {sent} sent ({sent_all} from the request),"
          f" span {span:.3f} s of {window:.3f} s")  # fmt: skip
    assert 0.6 * sent <= len(times) <= sent_all, (len(times), sent, sent_all)
    assert window - 1.0 <= span <= window + 1.0, (span, window)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert picture_moves(path, min_moving_pairs=0.5)
    if codec == "h264":
        assert profile == "Constrained Baseline"  # the publisher's OpenH264, not pyegress's x264
        assert b"x264" not in path.read_bytes()  # no x264 SEI (an encode by pyegress would carry one)


async def test_audio_track_is_written_as_sent(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, video=False) as pub:
        started = await service.start_track_egress(
            pe.TrackEgressRequest(
                room_name=room_name, track_id=pub.audio_track_sid, file=pe.DirectFileOutput()
            )
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        t0 = time.monotonic()
        await asyncio.sleep(3.0)
        window = time.monotonic() - t0
    info = await service.wait_egress(started.egress_id, timeout=10)
    media = check_file_result(info)
    path = info.file_results[0].filename
    assert path.endswith(".ogg") and media.audio is not None and media.audio.codec == "opus"
    print(f"FIGURES opus: duration {media.duration:.3f} s of {window:.3f} s")
    assert abs(media.duration - window) < 0.6, (media.duration, window)
    with av.open(path) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert abs(samples / 48000 - media.duration) < 0.1
    assert tone_present(path, 440.0)


async def test_unified_passthrough_of_one_track_writes_it_as_sent(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    """``preset: PASSTHROUGH`` with a media source of one track: the track's egress (LiveKit's
    shapes), a video track by ``video_track_id`` and an audio track by its one route."""
    async with publisher(livekit_server, room_name, video_codec="h264") as pub:
        video_sid, audio_sid = pub.video_track_sid, pub.audio_track_sid
        one_audio = pe.AudioConfig(routes=[pe.AudioRoute(track_id=audio_sid)])
        sources = [pe.MediaSource(video_track_id=video_sid), pe.MediaSource(audio=one_audio)]
        out = pe.Output(file=pe.FileOutput(filepath="{track_type}-{track_id}"))
        started = [
            await service.start_egress(
                pe.StartEgressRequest(room_name=room_name, media=m, preset=pe.PASSTHROUGH, outputs=[out])
            )
            for m in sources
        ]
        for s in started:
            assert status(await wait_active(service, s.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(2.0)
        infos = [await service.stop_egress(pe.StopEgressRequest(egress_id=s.egress_id)) for s in started]
    for i in infos:
        check_file_result(i)
        assert i.WhichOneof("request") == "egress"
    video, audio = (Path(i.file_results[0].filename) for i in infos)
    assert video.name == f"video-{video_sid}.mp4" and audio.name == f"audio-{audio_sid}.ogg"
    profile, times = decoded_video(video)
    assert profile == "Constrained Baseline" and b"x264" not in video.read_bytes()  # the sender's
    assert len(times) >= 30, len(times)
    assert tone_present(str(audio), 440.0)


@pytest.mark.parametrize("codec", ["vp9", "av1"])
async def test_a_codec_the_encoded_path_cannot_receive_is_refused_naming_it(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, codec: str
) -> None:
    """VP9 and AV1 (what the SDK publishes besides H.264 and VP8): aiortc cannot depacketize
    them, so no container gets them as sent; the egress fails at once, naming the codec."""
    async with publisher(livekit_server, room_name, video_codec=codec, audio=False) as pub:
        started = await service.start_track_egress(
            pe.TrackEgressRequest(
                room_name=room_name, track_id=pub.video_track_sid, file=pe.DirectFileOutput()
            )
        )
        info = await service.wait_egress(started.egress_id, timeout=10)
    assert status(info) == "EGRESS_FAILED" and info.error_code == 400, info.error
    assert info.error.startswith("track_id: ") and f"'video/{codec}'" in info.error.lower(), info.error
    assert not info.file_results or not Path(info.file_results[0].filename).exists()


class LossyLink:
    """Drops RTP packets on their way into a receiver of the recorder's, and counts its NACKs.

    The fault injector: this kernel has neither netem nor tc actions, so the loss is made where
    the recorder reads the server's packets (aiortc's receiver, reached here as the test's own
    tool). What it drops is what a publisher's lost packets look like downstream, and what
    follows is real: aiortc NACKs livekit-server, which retransmits from its buffer, and the
    PLI goes through the server to the publisher's encoder. ``every``-th media packet is lost
    once (a NACK repairs it); the packet at ``lost_for_good`` is lost on every arrival."""

    def __init__(self, receiver: Any, every: int) -> None:
        self.every, self.on = every, False
        self.lost_for_good: int | None = None
        self.dropped: set[int] = set()  # lost once
        self.repaired: set[int] = set()  # ... and came again
        self.nacks = 0
        self.media_ssrc: int | None = None
        self.newest = 0
        handle, nack = receiver._handle_rtp_packet, receiver._send_rtcp_nack

        async def lossy(packet: Any, arrival_time_ms: int) -> None:
            self.media_ssrc = self.media_ssrc or packet.ssrc
            retransmitted = packet.ssrc != self.media_ssrc  # RTX: the first 2 bytes are the seq
            if retransmitted and len(packet.payload) < 2:  # padding (bandwidth probes)
                return await handle(packet, arrival_time_ms)
            seq = int.from_bytes(packet.payload[:2], "big") if retransmitted else packet.sequence_number
            self.newest = seq if not retransmitted else self.newest
            if seq == self.lost_for_good:
                return
            if seq in self.dropped:
                self.repaired.add(seq)
            elif self.on and not retransmitted and seq % self.every == 0:
                self.dropped.add(seq)
                return
            await handle(packet, arrival_time_ms)

        async def counted(media_ssrc: int, lost: list[int]) -> None:
            self.nacks += 1
            await nack(media_ssrc, lost)

        receiver._handle_rtp_packet = lossy
        receiver._send_rtcp_nack = counted


async def test_lost_packets_are_nacked_then_a_key_frame_is_asked_for(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, audio=False) as pub:
        sid = pub.video_track_sid
        req = pe.TrackEgressRequest(room_name=room_name, track_id=sid, file=pe.DirectFileOutput())
        started = await service.start_track_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        recorder = service.recorder(started.egress_id)
        # imported here: aiortc is there from Python 3.11 only, and the unit tests also run on 3.10
        from pyegress.recorders.track_passthrough import PassthroughTrackRecorder

        assert isinstance(recorder, PassthroughTrackRecorder) and recorder.subscriber is not None
        sub = recorder.subscriber
        assert await sub.wait_for(lambda: True if sub.stats(sid)[0] else None, 5), "frames coming in"
        receiver = next(t.receiver for t in sub._pc.getTransceivers() if t.kind == "video")
        link = LossyLink(receiver, every=5)
        sent0 = pub.frames_sent
        await asyncio.sleep(1.0)
        link.on = True  # 1.5 s of loss, one packet of them never repaired
        await asyncio.sleep(0.5)
        link.lost_for_good = (link.newest + 3) & 0xFFFF
        await asyncio.sleep(1.0)
        link.on = False
        await asyncio.sleep(1.5)
        sent = pub.frames_sent - sent0
        skipped = sub.stats(sid)[1]
        await pub.unpublish("video")
        info = await service.wait_egress(started.egress_id, timeout=10)
    buffer = receiver._RTCRtpReceiver__jitter_buffer
    check_file_result(info)
    path, written = Path(info.file_results[0].filename), recorder.outputs[0].frames
    with av.open(str(path)) as c:
        decoded = [(f.key_frame, float(f.time or 0)) for f in c.decode(video=0)]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(decoded)]
    holes = [g for g in gaps if g > 0.1]  # the publisher sends 30 fps
    span = decoded[-1][1] - decoded[0][1]
    missing = round(span * 30) + 1 - len(decoded)  # frames of the span not in the file
    in_holes = sum(round(g * 30) - 1 for g in holes)
    print(f"FIGURES loss: {len(link.dropped)} lost once, {len(link.repaired)} repaired after "
          f"{link.nacks} NACKs; {buffer.holes_dropped} frames given up (PLI), {skipped} skipped for "
          f"the key frame; {len(decoded)} frames of {sent} sent, {missing} missing, {in_holes} in "
          f"{len(holes)} holes, longest {max(gaps):.3f} s")  # fmt: skip
    assert len(link.dropped) >= 10 and link.nacks >= 3
    assert len(link.repaired) >= 0.5 * len(link.dropped), (len(link.repaired), len(link.dropped))
    assert buffer.holes_dropped >= 1 and skipped >= 1  # the unrepaired frame: a PLI, then a key frame
    assert decoded[0][0] and len(decoded) == written, (len(decoded), written)  # each frame decodes
    # what is missing is the given-up frames' holes (their wait, 0.4 s, and the way to the key
    # frame), nothing else: the repaired losses cost no frame
    assert 1 <= len(holes) <= buffer.holes_dropped and max(gaps) < 1.5, (holes, buffer.holes_dropped)
    assert abs(missing - in_holes) <= 5, (missing, in_holes)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_a_simulcast_track_is_written_from_its_top_layer(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, codec: str
) -> None:
    # the file starts on the top layer's first key frame (a browser's track, where the server
    # forwards a lower layer first: tests/test_browser_publisher.py)
    async with publisher(livekit_server, room_name, video_codec=codec, audio=False, simulcast=True) as pub:
        sid = pub.video_track_sid
        started = await service.start_track_egress(
            pe.TrackEgressRequest(room_name=room_name, track_id=sid, file=pe.DirectFileOutput())
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(3.0)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    media = check_file_result(info)
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    with av.open(info.file_results[0].filename) as c:
        frames = [(f.width, f.height, f.key_frame) for f in c.decode(video=0)]
    print(f"FIGURES simulcast {codec}: {len(frames)} frames, sizes {sorted(set(f[:2] for f in frames))}")
    assert frames[0][2] and len(frames) > 45, frames[:3]
    assert {f[:2] for f in frames} == {(640, 360)}, [f for f in frames if f[:2] != (640, 360)][:3]


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_a_simulcast_layer_switch_mid_file_keeps_one_playable_file(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, codec: str
) -> None:
    """livekit-server moves a subscriber to another simulcast layer when its estimate of the
    subscriber's bandwidth changes; here the recorder asks for the lowest layer, then the top
    one again, as such a server would switch. The file goes on in each layer's size from its
    key frame (the H.264 parameter sets ride in band): every frame decodes, the timeline has no
    hole and the picture ends at the top layer."""
    # 720p: three layers (320x180, 640x360, 1280x720); a 640x360 sender's two are both 640x360
    kw: dict[str, Any] = {"width": 1280, "height": 720, "fps": 15, "simulcast": True}
    async with publisher(livekit_server, room_name, video_codec=codec, audio=False, **kw) as pub:
        sid = pub.video_track_sid
        started = await service.start_track_egress(
            pe.TrackEgressRequest(room_name=room_name, track_id=sid, file=pe.DirectFileOutput())
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        recorder: Any = service.recorder(started.egress_id)
        await asyncio.sleep(2.5)
        sub = recorder.subscriber
        sub.set_layer(sub.track(sid), pm.VideoQuality.LOW)
        await asyncio.sleep(2.5)
        sub.set_layer(sub.track(sid), pm.VideoQuality.HIGH)
        await asyncio.sleep(3.0)
        handed, _ = sub.stats(sid)  # the frames the subscriber handed on so far
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    media = check_file_result(info)
    assert media.video is not None
    with av.open(info.file_results[0].filename) as c:
        frames = [(f.width, f.height, float(f.time or 0.0)) for f in c.decode(video=0)]
    sizes = [f[:2] for f in frames]
    runs = [size for size, _ in itertools.groupby(sizes)]
    print(f"FIGURES simulcast switch {codec}: {len(frames)} frames, sizes in order {runs}")
    assert runs[0] == runs[-1] == (1280, 720) and (320, 180) in runs, runs  # down, and up again
    steps = [b[2] - a[2] for a, b in itertools.pairwise(frames)]
    odd = [(k, frames[k : k + 2]) for k, step in enumerate(steps) if not 0 < step < 0.25]
    assert not odd, odd  # in order, no hole
    # every frame handed on is in the file and decodes (those that came while stopping too)
    assert handed <= len(frames) <= handed + 3, (len(frames), handed)
