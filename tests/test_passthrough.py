"""Track egress writes the sender's bitstream (no decode, no encode): H.264 → MP4, VP8 → WebM,
Opus → Ogg, against a real livekit-server; the files are decoded."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import av
import pytest
from livekit.protocol import egress as pe

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
        started = await service.start_track_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        sent0, t0 = pub.frames_sent, time.monotonic()
        await asyncio.sleep(3.0)
        sent, window = pub.frames_sent - sent0, time.monotonic() - t0
        await pub.unpublish("video")
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
    print(f"FIGURES {codec}: frames {len(times)} of {sent} sent, span {span:.3f} s of {window:.3f} s")
    assert 0.6 * sent <= len(times) <= sent + 2, (len(times), sent)
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
        one_audio = pe.AudioConfig(routes=[pe.AudioRoute(track_id=pub.audio_track_sid)])
        sources = [pe.MediaSource(video_track_id=pub.video_track_sid), pe.MediaSource(audio=one_audio)]
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
    assert video.name == f"video-{pub.video_track_sid}.mp4"
    assert audio.name == f"audio-{pub.audio_track_sid}.ogg"
    profile, times = decoded_video(video)
    assert profile == "Constrained Baseline" and b"x264" not in video.read_bytes()  # the sender's
    assert len(times) >= 30, len(times)
    assert tone_present(str(audio), 440.0)
