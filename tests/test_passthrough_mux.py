"""Participant and track composite egress with the PASSTHROUGH preset, against a real
livekit-server: the camera and microphone as sent in one file (H.264 + Opus → MP4, VP8 + Opus
→ WebM), lined up by when their frames arrive; the files are decoded and their flashes and
beeps (sent at the same instants) measured."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import av
import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer, av_offset, frame_timestamps, tone_present

from .helpers import check_file_result, end_reason, publisher, record_for, status, wait_active

pytestmark = pytest.mark.integration

#: Audio against picture in a passthrough file (the markers' flash and beep were sent together):
#: issue 15's goal. Measured -4..-5 ms flat (the sender's encode time), also under load. The
#: drift of earlier sessions (+4 -> +24 ms in a session's first test, +35 -> +47 ms once in CI)
#: was the publisher's: paced in the recorder's busy loop, its first frames went out 100+ ms late
#: and libwebrtc's timestamp aligner carried that into the video's RTP clock for seconds.
SYNC = 0.020


def _ms(values: list[float]) -> str:
    return " ".join(f"{v * 1000:+.0f}" for v in values) + " ms"


@pytest.mark.parametrize(
    ("codec", "ext", "kind"),
    [("h264", ".mp4", "participant"), ("vp8", ".webm", "track_composite"), ("h264", ".mp4", "egress")],
)
async def test_camera_and_microphone_are_written_as_sent_and_in_sync(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    room_name: str,
    codec: str,
    ext: str,
    kind: str,
) -> None:
    async with publisher(livekit_server, room_name, video_codec=codec) as pub:
        out = [pe.EncodedFileOutput(filepath="{publisher_identity}-as-sent")]
        if kind == "participant":
            started = await service.start_participant_egress(pe.ParticipantEgressRequest(
                room_name=room_name, identity="alice", preset=pe.PASSTHROUGH, file_outputs=out))  # fmt: skip
        elif kind == "egress":  # the unified request: a participant's camera with their microphone
            camera = pe.ParticipantVideo(identity="alice")
            microphone = pe.AudioConfig(routes=[pe.AudioRoute(participant_identity="alice")])
            file = pe.FileOutput(filepath="{publisher_identity}-as-sent")
            started = await service.start_egress(pe.StartEgressRequest(
                room_name=room_name, preset=pe.PASSTHROUGH, outputs=[pe.Output(file=file)],
                media=pe.MediaSource(participant_video=camera, audio=microphone)))  # fmt: skip
        else:
            started = await service.start_track_composite_egress(pe.TrackCompositeEgressRequest(
                room_name=room_name, audio_track_id=pub.audio_track_sid, video_track_id=pub.video_track_sid,
                preset=pe.PASSTHROUGH, file_outputs=out))  # fmt: skip
        info = await record_for(service, started, 6.0)
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert path.name == f"alice-as-sent{ext}"
    assert media.video is not None and media.audio is not None
    assert (media.video.codec, media.video.width, media.video.height) == (codec, 640, 360)
    assert (media.audio.codec, media.audio.sample_rate) == ("opus", 48000)
    if codec == "h264":
        assert media.video.profile == "Constrained Baseline" and b"x264" not in path.read_bytes()
    assert abs(media.duration - info.file_results[0].duration / 1e9) < 0.1
    assert 4.0 < media.duration < 7.5, media.duration
    times = frame_timestamps(path)  # every frame decodes, in order
    assert all(b > a for a, b in itertools.pairwise(times))
    assert tone_present(path, 440.0)
    off = av_offset(path)
    print(f"FIGURES {codec}: A/V {_ms(off.offsets)} (median {off.median * 1000:+.1f} ms), "
          f"{len(times)} frames, {media.duration:.2f} s")  # fmt: skip
    assert off.count >= 3, off
    assert max(map(abs, off.offsets)) <= SYNC, off


async def test_mute_and_republish_leave_a_gap_and_the_sync(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    pub = publisher(livekit_server, room_name)
    await pub.start()
    req = pe.ParticipantEgressRequest(room_name=room_name, identity="alice", preset=pe.PASSTHROUGH,
                                      file_outputs=[pe.EncodedFileOutput(filepath="gap")])  # fmt: skip
    started = await service.start_participant_egress(req)
    try:
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        t0 = time.monotonic()
        await asyncio.sleep(2.0)
        await pub.mute("video")
        await pub.mute("audio")
        await asyncio.sleep(1.0)
        await pub.unmute("video")
        await pub.unmute("audio")
        await asyncio.sleep(1.0)
        await pub.unpublish("video")
        await asyncio.sleep(1.5)
        await pub.republish("video")
        await asyncio.sleep(3.5)
    finally:
        await pub.stop()  # the participant leaves: the egress ends by itself
    info = await service.wait_egress(started.egress_id, timeout=15)
    wall = time.monotonic() - t0
    assert end_reason(info) == "End reason: Source closed (participant alice left)"
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert path.suffix == ".mp4" and media.video is not None and media.audio is not None
    assert wall - 2.0 < media.duration < wall + 0.5, (media.duration, wall)
    times = frame_timestamps(path)  # the whole file decodes, frames in order
    assert all(b > a for a, b in itertools.pairwise(times))
    # the camera was unpublished: a gap, then its new track; the mute before it may leave a gap
    # about as long (a second muted, then a key frame), so the unpublish is the last long one
    gaps = [(b - a, a) for a, b in itertools.pairwise(times) if b - a > 0.5]
    assert 1 <= len(gaps) <= 2, gaps
    (gap, at), back = gaps[-1], gaps[-1][1] + gaps[-1][0]
    assert 1.0 < gap < 3.0 and at > 3.0, gaps
    assert tone_present(path, 440.0, start=at + 0.2, end=back - 0.2), "the microphone went on"
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    # the sound decodes over its length (at most the muted second missing, if nothing was sent)
    assert -0.05 < media.audio.duration - samples / 48000 < 1.2, (samples, media.audio.duration)
    off = av_offset(path)
    after = [d for d, f in zip(off.offsets, off.paired_flashes, strict=True) if f > back]
    before = off.offsets[: len(off.offsets) - len(after)]
    print(
        f"FIGURES gap {gap:.2f} s at {at:.2f} s; A/V before {_ms(before)}, after the republish {_ms(after)}"
    )
    # the new camera track is in sync with the microphone after the republish, as before it
    assert before and len(after) >= 2 and max(map(abs, off.offsets)) <= SYNC, off
