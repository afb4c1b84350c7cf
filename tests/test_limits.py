"""Session limits end an egress EGRESS_LIMIT_REACHED with complete, playable outputs of the
limit's length (real livekit-server, nginx-rtmp, decoded files); LiveKit's end reasons and codes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import av
import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer, picture_moves, probe, tone_present
from pyegress.testing.rtmp_server import RtmpServer

from .helpers import end_reason, publisher, status, wait_active
from .test_outputs import playlist_entries

pytestmark = pytest.mark.integration

LIMIT = 3.0
SMALL = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1200, key_frame_interval=1)
KEY = "sk_live_limit_0123456789abcdef"


def decoded_frames(path: Path) -> int:
    """Video frames that decode, to the end (a truncated file fails here)."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


async def limited(
    livekit_server: LiveKitServer,
    tmp_path: Path,
    room_name: str,
    limits: pyegress.SessionLimits,
    **outputs: object,
) -> pe.EgressInfo:
    """Record alice with ``outputs`` under ``limits``, never stopped: the final info."""
    async with (
        publisher(livekit_server, room_name),
        pyegress.EgressService(
            livekit_server.url,
            livekit_server.api_key,
            livekit_server.api_secret,
            output_dir=tmp_path,
            limits=limits,
        ) as svc,
    ):
        req = pe.ParticipantEgressRequest(room_name=room_name, identity="alice", advanced=SMALL, **outputs)  # type: ignore[arg-type]
        started = await svc.start_participant_egress(req)
        active = await wait_active(svc, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        return await svc.wait_egress(started.egress_id, timeout=LIMIT + 15)


def check_limit(info: pe.EgressInfo, name: str) -> None:
    assert status(info) == "EGRESS_LIMIT_REACHED", (info.error, info.details)
    assert info.error == "Session limit reached" and info.error_code == 413
    assert info.details.startswith("End reason: Session limit reached") and name in info.details, info.details
    assert info.ended_at >= info.started_at > 0


async def test_file_duration_limit(livekit_server: LiveKitServer, tmp_path: Path, room_name: str) -> None:
    info = await limited(
        livekit_server,
        tmp_path,
        room_name,
        pyegress.SessionLimits(file_output_max_duration=LIMIT, stream_output_max_duration=1.0),
        file_outputs=[pe.EncodedFileOutput(filepath="limited.mp4")],
    )
    check_limit(info, "file_output_max_duration: 3 s")  # the stream limit applies to no output here
    res = info.file_results[0]
    path = Path(res.filename)
    media = probe(path)
    assert abs(media.duration - LIMIT) < 0.25, media.duration
    assert abs(res.duration / 1e9 - media.duration) < 0.25 and res.size == path.stat().st_size
    assert abs(decoded_frames(path) - LIMIT * 30) <= 8
    assert picture_moves(path) and tone_present(path, 440.0)
    manifest = json.loads(Path(str(path) + ".json").read_text())
    assert manifest["status"] == "EGRESS_LIMIT_REACHED"


async def test_segment_duration_limit(livekit_server: LiveKitServer, tmp_path: Path, room_name: str) -> None:
    info = await limited(
        livekit_server,
        tmp_path,
        room_name,
        pyegress.SessionLimits(segment_output_max_duration=LIMIT, file_output_max_duration=60),
        segment_outputs=[pe.SegmentedFileOutput(filename_prefix="hls/seg", playlist_name="hls/index.m3u8",
                                                segment_duration=1)],
    )  # fmt: skip
    check_limit(info, "segment_output_max_duration")
    playlist = tmp_path / "hls" / "index.m3u8"
    assert playlist.read_text().rstrip().endswith("#EXT-X-ENDLIST")
    entries = playlist_entries(playlist)
    seg = info.segment_results[0]
    assert seg.segment_count == len(entries)
    assert abs(sum(d for d, _ in entries) - LIMIT) < 0.25, entries
    media = probe(playlist)
    assert abs(media.duration - LIMIT) < 0.3 and abs(seg.duration / 1e9 - media.duration) < 0.3
    assert abs(decoded_frames(playlist) - LIMIT * 30) <= 8 and tone_present(playlist, 440.0)


async def test_stream_duration_limit(
    livekit_server: LiveKitServer, tmp_path: Path, room_name: str, rtmp: RtmpServer
) -> None:
    info = await limited(
        livekit_server,
        tmp_path,
        room_name,
        pyegress.SessionLimits(stream_output_max_duration=LIMIT),
        stream_outputs=[pe.StreamOutput(urls=[rtmp.url(KEY)])],
    )
    check_limit(info, "stream_output_max_duration")
    (result,) = info.stream_results
    assert result.status == pe.StreamInfo.FINISHED, result.error
    for _ in range(50):  # nginx closes its recording once the connection is gone
        if rtmp.recorded(KEY):
            break
        await asyncio.sleep(0.1)
    (flv,) = rtmp.recorded(KEY)
    got = probe(flv)
    assert got.video is not None and abs(got.video.duration - LIMIT) < 0.4, got.video.duration
    assert abs(result.duration / 1e9 - LIMIT) < 0.5, result.duration
    assert decoded_frames(flv) >= (LIMIT - 0.4) * 30 and tone_present(flv, 440.0)


async def test_image_limit_is_the_smallest_of_the_outputs(
    livekit_server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    """File and images under a 6 s and a 3 s limit: the images' 3 s ends both outputs."""
    info = await limited(
        livekit_server,
        tmp_path,
        room_name,
        pyegress.SessionLimits(file_output_max_duration=2 * LIMIT, image_output_max_duration=LIMIT),
        file_outputs=[pe.EncodedFileOutput(filepath="both.mp4")],
        image_outputs=[pe.ImageOutput(capture_interval=1, width=320, height=180, filename_prefix="img/shot")],
    )
    check_limit(info, "image_output_max_duration: 3 s")
    shots = sorted((tmp_path / "img").glob("shot_*.jpeg"))
    assert info.image_results[0].image_count == len(shots) and len(shots) in (3, 4), shots
    for shot in shots:
        with av.open(str(shot)) as c:
            assert next(c.decode(video=0)).width == 320
    assert abs(probe(tmp_path / "both.mp4").duration - LIMIT) < 0.25


async def test_file_size_limit(livekit_server: LiveKitServer, tmp_path: Path, room_name: str) -> None:
    max_size = 200_000  # a few seconds of the synthetic picture
    info = await limited(
        livekit_server,
        tmp_path,
        room_name,
        pyegress.SessionLimits(file_output_max_size=max_size),
        file_outputs=[pe.EncodedFileOutput(filepath="sized.mp4")],
    )
    check_limit(info, "file_output_max_size")
    res = info.file_results[0]
    path = Path(res.filename)
    media = probe(path)
    assert media.duration > 1.0 and abs(res.duration / 1e9 - media.duration) < 0.25
    # one fragment a second reaches the disk, checked twice a second: at most ~1.5 s more
    per_second = res.size / media.duration
    assert max_size <= res.size == path.stat().st_size < max_size + 1.5 * per_second, (res.size, per_second)
    assert abs(decoded_frames(path) - media.duration * 30) <= 8 and tone_present(path, 440.0)


async def test_limit_before_start_aborts(
    livekit_server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    """Waiting for a participant who never comes: the 1.5 s limit aborts it, as LiveKit does
    without a start signal, well before the 10 s wait is over."""
    async with (
        publisher(livekit_server, room_name, identity="alice"),
        pyegress.EgressService(
            livekit_server.url,
            livekit_server.api_key,
            livekit_server.api_secret,
            output_dir=tmp_path,
            wait_timeout=10,
            limits=pyegress.SessionLimits(file_output_max_duration=1.5),
        ) as svc,
    ):
        t0 = time.monotonic()
        started = await svc.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name, identity="bob", file_outputs=[pe.EncodedFileOutput()]
            )
        )
        info = await svc.wait_egress(started.egress_id, timeout=10)
        took = time.monotonic() - t0
    assert status(info) == "EGRESS_ABORTED", info.error
    assert info.error == "Session limit reached before start signal" and info.error_code == 412
    assert "file_output_max_duration" in info.details
    assert 1.4 < took < 4.0, took
    assert not info.file_results and not list(tmp_path.glob("*.mp4"))


async def test_stop_says_stop_egress_api_and_a_stop_before_start_aborts(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name):
        started = await service.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name, identity="alice", file_outputs=[pe.EncodedFileOutput()]
            )
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(1.0)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        early = await service.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name, identity="nobody", file_outputs=[pe.EncodedFileOutput()]
            )
        )
        t0 = time.monotonic()
        aborted = await service.stop_egress(pe.StopEgressRequest(egress_id=early.egress_id))
        took = time.monotonic() - t0
    assert status(info) == "EGRESS_COMPLETE" and end_reason(info) == "End reason: StopEgress API"
    assert not info.error and info.error_code == 0
    assert status(aborted) == "EGRESS_ABORTED" and end_reason(aborted) == "End reason: StopEgress API"
    assert aborted.error == "Stop called before pipeline could start" and aborted.error_code == 412
    assert took < 1.0, "a stop does not wait out the wait for the participant"


def test_bad_limits_name_the_field() -> None:
    with pytest.raises(pyegress.InvalidRequestError) as err:
        pyegress.SessionLimits(stream_output_max_duration=-1)
    assert err.value.field == "limits.stream_output_max_duration"
    with pytest.raises(pyegress.InvalidRequestError) as err:
        pyegress.SessionLimits(file_output_max_size=1.5)  # type: ignore[arg-type]
    assert err.value.field == "limits.file_output_max_size"
