"""``start_egress`` with LiveKit's unified request, end to end on a real livekit-server: a media
source (a camera and routed voices, a preferred screen share), a template source, outputs with
their own store on MinIO, and the CLI running unified JSON. Outputs are decoded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from livekit import rtc
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

import pyegress
from pyegress.testing import (
    LiveKitServer,
    SyntheticPublisher,
    picture_moves,
    probe,
    region_color,
    tone_present,
)
from pyegress.testing.checks import AudioData
from pyegress.testing.signals import PatternGenerator
from pyegress.testing.storage_emulators import MinioServer

from .helpers import (
    NO_MARKERS,
    SMALL,
    check_file_result,
    cli_env,
    near,
    publisher,
    record_for,
    status,
    wait_active,
)
from .test_web import site  # noqa: F401 - the test pages, served on loopback

pytestmark = pytest.mark.integration

RED, GREEN, BLUE = (220, 40, 40), (40, 200, 40), (40, 60, 220)


def channels(path: str) -> tuple[AudioData, AudioData]:
    """The left and right channels of the first audio stream, decoded."""
    with av.open(path) as c:
        frames = [(f.to_ndarray(), f.sample_rate) for f in c.decode(audio=0)]
    pcm = np.concatenate([a for a, _ in frames], axis=1).astype(np.float32)  # planar (2, n)
    assert pcm.shape[0] == 2, pcm.shape
    rate = frames[0][1]
    return AudioData(pcm[0], rate, 0.0), AudioData(pcm[1], rate, 0.0)


def voice(
    server: LiveKitServer, room: str, identity: str, hz: float, *, kind: str = ""
) -> SyntheticPublisher:
    """An audio-only participant with a steady tone (``kind``: an agent, SIP... participant)."""
    return publisher(server, room, identity, kind=kind, video=False, tone_hz=hz, marker_interval=NO_MARKERS)


@contextlib.asynccontextmanager
async def screen_share(pub: SyntheticPublisher, color: tuple[int, int, int]) -> AsyncIterator[str]:
    """``pub`` shares a screen of one colour (its own track, source SCREEN_SHARE) while open."""
    w, h = 640, 360
    source = rtc.VideoSource(w, h)
    track = rtc.LocalVideoTrack.create_video_track("screen", source)
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE)
    shared = await pub.room.local_participant.publish_track(track, opts)
    data = PatternGenerator(w, h, 15, color=color, marker_interval=NO_MARKERS).frame_at(0).tobytes()

    async def frames() -> None:
        while True:
            source.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.I420, data))
            await asyncio.sleep(1 / 15)

    task = asyncio.get_running_loop().create_task(frames())
    try:
        yield shared.sid
    finally:
        task.cancel()
        await pub.room.local_participant.unpublish_track(shared.sid)
        await source.aclose()


async def test_media_camera_with_two_voices_routed_left_and_right(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    """A participant's camera with two other participants' audio, one left and one right (by
    track id and by identity), an agent in both by kind; the camera's own microphone is not
    routed and must not be heard."""
    async with (
        publisher(livekit_server, room_name, "cam", color=RED, tone_hz=300.0, marker_interval=NO_MARKERS),
        voice(livekit_server, room_name, "lefty", 440.0) as lefty,
        voice(livekit_server, room_name, "righty", 880.0),
        voice(livekit_server, room_name, "bot", 660.0, kind="agent"),
    ):
        req = pe.StartEgressRequest(
            room_name=room_name,
            media=pe.MediaSource(
                participant_video=pe.ParticipantVideo(identity="cam"),
                audio=pe.AudioConfig(
                    routes=[
                        pe.AudioRoute(track_id=lefty.audio_track_sid, channel=pe.AUDIO_CHANNEL_LEFT),
                        pe.AudioRoute(participant_identity="righty", channel=pe.AUDIO_CHANNEL_RIGHT),
                        pe.AudioRoute(
                            participant_kind=pm.ParticipantInfo.AGENT, channel=pe.AUDIO_CHANNEL_BOTH
                        ),
                    ]
                ),
            ),
            advanced=SMALL,
            outputs=[pe.Output(file=pe.FileOutput(filepath="{room_name}-{publisher_identity}.mp4"))],
        )
        info = await record_for(service, await service.start_egress(req), 4.0)
    media = check_file_result(info)
    path = info.file_results[0].filename
    assert path.endswith(f"{room_name}-cam.mp4")
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    assert near(region_color(path, media.duration / 2), RED), "the picture is cam's camera"
    left, right = channels(path)
    span = {"start": 1.0, "end": media.duration - 0.5}
    assert tone_present(left, 440.0, **span) and not tone_present(left, 880.0, **span)
    assert tone_present(right, 880.0, **span) and not tone_present(right, 440.0, **span)
    assert tone_present(left, 660.0, **span) and tone_present(right, 660.0, **span), "the agent: both"
    for side in (left, right):
        assert not tone_present(side, 300.0, min_relative_db=-40.0, **span), "cam's own mic is not routed"
    assert info.source_type == pe.EGRESS_SOURCE_TYPE_SDK and info.WhichOneof("request") == "egress"
    assert info.egress.media.participant_video.identity == "cam"


async def test_participant_video_prefers_the_screen_share_while_it_lasts(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(
        livekit_server, room_name, "presenter", color=RED, audio=True, marker_interval=NO_MARKERS
    ) as pres:
        async with screen_share(pres, GREEN):
            info = await service.start_egress(
                pe.StartEgressRequest(
                    room_name=room_name,
                    media=pe.MediaSource(
                        participant_video=pe.ParticipantVideo(identity="presenter", prefer_screen_share=True),
                        audio=pe.AudioConfig(routes=[pe.AudioRoute(participant_identity="presenter")]),
                    ),
                    advanced=SMALL,
                    outputs=[pe.Output(file=pe.FileOutput(filepath="share.mp4"))],
                )
            )
            active = await wait_active(service, info.egress_id)
            assert status(active) == "EGRESS_ACTIVE", active.error
            await asyncio.sleep(3.5)
        await asyncio.sleep(3.0)  # the share is over: back to the camera
        final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    media = check_file_result(final)
    path = final.file_results[0].filename
    assert near(region_color(path, 1.5), GREEN), "the screen share while it is published"
    assert near(region_color(path, media.duration - 0.7), RED), "then the camera again"
    assert tone_present(path, 440.0)


async def test_template_source_records_the_room_and_takes_a_layout_update(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, "a", color=BLUE, marker_interval=NO_MARKERS):
        info = await service.start_egress(
            pe.StartEgressRequest(
                room_name=room_name,
                template=pe.TemplateSource(layout="grid"),
                advanced=SMALL,
                outputs=[pe.Output(file=pe.FileOutput(filepath="composite.mp4"))],
            )
        )
        assert info.egress.template.layout == "grid"
        await asyncio.sleep(2.0)
        updated = await service.update_layout(
            pe.UpdateLayoutRequest(egress_id=info.egress_id, layout="speaker")
        )
        assert updated.egress.template.layout == "speaker" and updated.WhichOneof("request") == "egress"
        final = await record_for(service, info, 1.5)
    media = check_file_result(final)
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    assert near(region_color(final.file_results[0].filename, media.duration / 2, (300, 160, 340, 200)), BLUE)
    assert tone_present(final.file_results[0].filename, 440.0)
    assert final.egress.template.layout == "speaker"


async def test_outputs_go_to_their_own_store_and_the_request_store(
    livekit_server: LiveKitServer, minio: MinioServer, bucket_name: str, room_name: str, tmp_path: Path
) -> None:
    """A file with its own S3 bucket, HLS segments to the request's ``storage``; the service's
    default (a missing bucket) is used by neither."""
    own, shared = f"{bucket_name}-own", f"{bucket_name}-req"
    minio.make_bucket(own)
    minio.make_bucket(shared)
    async with (
        pyegress.EgressService(
            livekit_server.url,
            livekit_server.api_key,
            livekit_server.api_secret,
            output_dir=tmp_path,
            wait_timeout=4.0,
            storage=pe.StorageConfig(s3=minio.upload_message("no-such-default-bucket")),
        ) as svc,
        publisher(livekit_server, room_name, "alice", marker_interval=NO_MARKERS) as pub,
    ):
        req = pe.StartEgressRequest(
            room_name=room_name,
            media=pe.MediaSource(
                video_track_id=pub.video_track_sid,
                audio=pe.AudioConfig(routes=[pe.AudioRoute(track_id=pub.audio_track_sid)]),
            ),
            advanced=SMALL,
            storage=pe.StorageConfig(s3=minio.upload_message(shared)),
            outputs=[
                pe.Output(
                    file=pe.FileOutput(filepath="{room_name}/media.mp4"),
                    storage=pe.StorageConfig(s3=minio.upload_message(own)),
                ),
                pe.Output(segments=pe.SegmentedFileOutput(filename_prefix="hls/seg", segment_duration=2)),
            ],
        )
        info = await record_for(svc, await svc.start_egress(req), 4.5)
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert not info.backup_storage_used and not info.error
    key = f"{room_name}/media.mp4"
    assert info.file_results[0].location == f"{minio.endpoint}/{own}/{key}"
    downloaded = tmp_path / "downloaded.mp4"
    downloaded.write_bytes(minio.read(own, key))
    media = probe(downloaded)
    assert media.video is not None and media.audio is not None and 3.5 < media.duration < 6.5
    seg = info.segment_results[0]
    assert seg.playlist_location == f"{minio.endpoint}/{shared}/hls/seg.m3u8"
    playlist = minio.read(shared, "hls/seg.m3u8").decode()
    names = [line for line in playlist.splitlines() if line.endswith(".ts")]
    assert len(names) >= 2 and seg.segment_count == len(names)
    first = tmp_path / "first.ts"
    first.write_bytes(minio.read(shared, f"hls/{names[0]}"))
    assert probe(first).video is not None
    assert info.egress.outputs[0].storage.s3.secret == "{redacted}"
    assert minio.secret_key not in str(info) and minio.access_key not in str(info)


async def test_cli_runs_unified_json(livekit_server: LiveKitServer, tmp_path: Path, room_name: str) -> None:
    async with voice(livekit_server, room_name, "speaker", 440.0):
        request = tmp_path / "egress.json"
        request.write_text(
            json.dumps(
                {
                    "roomName": room_name,
                    "media": {"audio": {"captureAll": True}},
                    "outputs": [{"file": {"fileType": "OGG", "filepath": "cli/{room_name}"}}],
                }
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyegress.cli", "record", str(request), "--duration", "3", "--quiet",
            "--output-dir", str(tmp_path), env=cli_env(livekit_server),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    info = json.loads(out)
    assert info["status"] == "EGRESS_COMPLETE" and info["egress"]["media"]["audio"]["capture_all"]
    path = Path(info["file_results"][0]["filename"])
    assert path == tmp_path / "cli" / f"{room_name}.ogg"
    media = probe(path)
    assert media.video is None and media.audio is not None and 2.0 < media.duration < 4.5
    assert tone_present(path, 440.0)


async def test_media_source_fails_naming_what_is_missing_or_wrong(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, "alice") as pub:
        audio_sid = pub.audio_track_sid
        wrong = await service.start_egress(
            pe.StartEgressRequest(
                room_name=room_name,
                media=pe.MediaSource(video_track_id=audio_sid),
                outputs=[pe.Output(file=pe.FileOutput(filepath="wrong.mp4"))],
            )
        )
        absent = await service.start_egress(
            pe.StartEgressRequest(
                room_name=room_name,
                media=pe.MediaSource(
                    video_track_id=pub.video_track_sid,
                    audio=pe.AudioConfig(routes=[pe.AudioRoute(participant_identity="nobody")]),
                ),
                outputs=[pe.Output(file=pe.FileOutput(filepath="absent.mp4"))],
            )
        )
        wrong = await service.wait_egress(wrong.egress_id, timeout=10)
        absent = await service.wait_egress(absent.egress_id, timeout=10)
    assert status(wrong) == "EGRESS_FAILED"
    assert wrong.error == f"media.video_track_id: {audio_sid} is not a video track"
    assert status(absent) == "EGRESS_FAILED"
    assert absent.error.startswith("media.audio.routes[0].participant_identity: participant 'nobody' not in")


async def test_web_source_records_the_page(service: pyegress.EgressService, site: str) -> None:  # noqa: F811
    req = pe.StartEgressRequest(
        web=pe.WebSource(url=f"{site}/animated.html", await_start_signal=True, video_only=True),
        advanced=SMALL,
        outputs=[pe.Output(file=pe.FileOutput(filepath="page.mp4"))],
    )
    info = await record_for(service, await service.start_egress(req), 3.0)
    media = check_file_result(info)
    assert media.video is not None and media.audio is None and media.video.width == 640
    assert picture_moves(info.file_results[0].filename, min_moving_pairs=0.8)
    assert info.source_type == pe.EGRESS_SOURCE_TYPE_WEB and info.egress.web.await_start_signal


@contextlib.asynccontextmanager
async def pcm_receiver() -> AsyncIterator[tuple[str, list[bytes], asyncio.Event]]:
    """A real aiohttp WebSocket server on loopback: the URL, the binary frames it got, closed."""
    frames: list[bytes] = []
    closed = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append(msg.data)
        closed.set()
        return ws

    app = web.Application()
    app.router.add_get("/pcm", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"ws://127.0.0.1:{runner.addresses[0][1]}/pcm", frames, closed
    finally:
        await runner.cleanup()


async def test_websocket_stream_output_sends_the_routed_audio_as_pcm(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    """A media source with a camera and a voice, a file and a ``protocol: WEBSOCKET`` output:
    as in LiveKit, the WebSocket makes the egress audio only; it gets the voice's tone as 48 kHz
    PCM and has its entry in ``stream_results`` (the URL's token hidden)."""
    async with (
        pcm_receiver() as (url, frames, closed),
        publisher(livekit_server, room_name, "cam", video=True, audio=False, marker_interval=NO_MARKERS),
        voice(livekit_server, room_name, "lefty", 440.0),
    ):
        req = pe.StartEgressRequest(
            room_name=room_name,
            media=pe.MediaSource(
                participant_video=pe.ParticipantVideo(identity="cam"),
                audio=pe.AudioConfig(routes=[pe.AudioRoute(participant_identity="lefty")]),
            ),
            outputs=[
                pe.Output(file=pe.FileOutput(filepath="{room_name}-ws.mp4")),
                pe.Output(stream=pe.StreamOutput(protocol=pe.WEBSOCKET, urls=[f"{url}?token=ws-s3cret"])),
            ],
        )
        info = await record_for(service, await service.start_egress(req), 4.0)
        await asyncio.wait_for(closed.wait(), 10)
    media = check_file_result(info)
    assert media.video is None and media.audio is not None, "a WebSocket output makes the egress audio only"
    (result,) = info.stream_results
    assert result.status == pe.StreamInfo.FINISHED and result.url.startswith(url), result
    assert "ws-s3cret" not in str(info) and result.duration > 3e9
    pcm = np.frombuffer(b"".join(frames), "<i2").reshape(-1, 2)
    assert 3.0 < len(pcm) / 48000 < 6.0, len(pcm) / 48000
    for ch in (0, 1):
        assert tone_present(AudioData(pcm[:, ch].astype(np.float32) / 32768, 48000, 0.0), 440.0, start=0.5)
