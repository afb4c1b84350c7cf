"""The quality report of real recordings: a track composite of the synthetic publisher, its
manifest's ``quality`` block checked against the decoded file and what the publisher sent, and
``details`` carrying the summary after the end reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.sources.delays import MAX_ADVANCE
from pyegress.testing import LiveKitServer, cadence
from pyegress.testing.cadence import frame_shifts

from .helpers import check_file_result, manifest, publisher, status, wait_active

pytestmark = pytest.mark.integration

SMALL = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1200)


@pytest.fixture(params=["auto", "sdk"])
async def track_service(
    livekit_server: LiveKitServer, service: pyegress.EgressService, request: pytest.FixtureRequest
) -> AsyncIterator[pyegress.EgressService]:
    """The track composite through its default receive path (encoded) and through the SDK's."""
    async with pyegress.EgressService(
        livekit_server.url, livekit_server.api_key, livekit_server.api_secret,
        output_dir=service.output_dir, receive_path=request.param,
    ) as svc:  # fmt: skip
        yield svc


def _request(room: str, pub: Any) -> pe.TrackCompositeEgressRequest:
    return pe.TrackCompositeEgressRequest(
        room_name=room, video_track_id=pub.video_track_sid, audio_track_id=pub.audio_track_sid,
        advanced=SMALL, file_outputs=[pe.EncodedFileOutput(filepath="q.mp4")],
    )  # fmt: skip


async def test_the_report_matches_the_file_and_what_was_sent(
    livekit_server: LiveKitServer, track_service: pyegress.EgressService, room_name: str
) -> None:
    service = track_service
    async with publisher(livekit_server, room_name) as pub:
        started = await service.start_track_composite_egress(_request(room_name, pub))
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        sent0 = pub.frames_sent
        await asyncio.sleep(6)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        sent = pub.frames_sent - sent0
    assert info.status == pe.EGRESS_COMPLETE, info.error
    media = check_file_result(info)
    assert media.video is not None
    path = info.file_results[0].filename
    q: Any = manifest(path)["quality"]
    (video,) = q["video"]
    (audio,) = q["audio"]
    (out,) = q["outputs"]
    assert video["name"] == "alice/camera" and audio["name"] == "alice/microphone"
    # every frame the encoder made is in the file, and the bytes are most of it
    assert out["video_frames"] == media.video.frame_count, (out, media.video.frame_count)
    assert 0.9 * media.size < out["video_bytes"] + out["audio_bytes"] <= media.size, (out, media.size)
    # every source frame from the first the file shows on came (30 fps in, 30 out; a few more
    # may come while the recording ends, and until then fewer than sent)
    shifts = frame_shifts(path)
    first = next(k for k, s in enumerate(shifts) if s is not None) - 1  # black before it
    shown = media.video.frame_count - first
    assert shown - 5 <= video["frames_received"] <= shown + 15, (video, shown)
    assert video["frames_received"] <= sent, (video, sent)
    # a steady 30 fps source at 30 fps: a few repeats and skips (the schedule's start, a lip
    # sync correction moving the picture)
    assert video["frames_repeated"] <= 6 and video["frames_skipped"] <= 6, video
    # and they are the ones the file shows (cadence leaves out the frames around each flash)
    c = cadence(path)
    assert abs(c.repeats - video["frames_repeated"]) <= 2, (video, c.summary())
    assert abs(c.skips - video["frames_skipped"]) <= 2, (video, c.summary())
    assert video["longest_freeze_s"] < 0.15, video
    # audio: continuous (a few ms of silence at most, e.g. while the schedule starts)
    rate = audio["sample_rate"]
    assert audio["samples_received"] > 5.5 * rate, audio
    assert audio["silence_inserted"] < 0.1 * rate and audio["samples_dropped"] < 0.05 * rate, audio
    lag = audio["lag"]
    if service.receive_path == "sdk":
        # placed earlier than it came (its jitter buffer holds it longer than the camera's), or later
        assert lag["count"] > 0 and -MAX_ADVANCE <= lag["min"] <= lag["max"] <= 0.2, audio
    else:  # placed by its RTP time: no lag correction to report
        assert lag is None, audio
    # the summary follows the end reason
    reason, summary = info.details.split("; quality: ", 1)
    assert reason == "End reason: StopEgress API", info.details
    assert summary.startswith(f"video alice/camera: {video['frames_received']} in,"), info.details
    assert f"{out['name']}: {out['video_frames']} frames" in summary, info.details


async def test_a_paused_camera_is_a_freeze_of_the_pause(
    livekit_server: LiveKitServer, track_service: pyegress.EgressService, room_name: str
) -> None:
    service = track_service
    async with publisher(livekit_server, room_name) as pub:
        started = await service.start_track_composite_egress(_request(room_name, pub))
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(2)
        await pub.mute("video")  # the camera sends nothing while muted
        paused = time.monotonic()
        await asyncio.sleep(2)
        await pub.unmute("video")
        paused = time.monotonic() - paused
        await asyncio.sleep(2)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert info.status == pe.EGRESS_COMPLETE, info.error
    (video,) = manifest(info.file_results[0].filename)["quality"]["video"]  # type: ignore[index]
    # the frame before the pause stayed until the first after it (a key frame, asked for)
    assert paused - 0.1 < video["longest_freeze_s"] < paused + 0.6, (video, paused)
    assert f"longest freeze {video['longest_freeze_s']:.2f} s" in info.details
    assert Path(info.file_results[0].filename).exists()


async def test_a_room_composite_reports_each_tile_and_voice(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    pubs = [publisher(livekit_server, room_name, identity=name) for name in ("alice", "bob")]
    for p in pubs:
        await p.start()
    try:
        req = pe.RoomCompositeEgressRequest(
            room_name=room_name, layout="grid", file_outputs=[pe.EncodedFileOutput(filepath="grid.mp4")]
        )
        started = await service.start_room_composite_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        # the 4 s counted from when both cameras are coming in (subscribing is not measured here)
        recorder = service.recorder(started.egress_id)
        deadline = time.monotonic() + 10.0
        while not (len(v := recorder.quality().video) == 2 and all(x.frames_received for x in v)):
            assert time.monotonic() < deadline, recorder.quality().video
            await asyncio.sleep(0.05)
        await asyncio.sleep(4)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    finally:
        for p in pubs:
            await p.stop()
    assert info.status == pe.EGRESS_COMPLETE, info.error
    media = check_file_result(info)
    q: Any = manifest(info.file_results[0].filename)["quality"]
    assert sorted(v["name"] for v in q["video"]) == ["alice/camera", "bob/camera"], q
    assert sorted(a["name"] for a in q["audio"]) == ["alice/microphone", "bob/microphone"], q
    for v in q["video"]:
        assert v["frames_received"] > 3.5 * 30 and v["frames_repeated"] <= 3, v
    assert media.video is not None and q["outputs"][0]["video_frames"] == media.video.frame_count
