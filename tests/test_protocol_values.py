"""The remaining protocol values, decoded: ``twitch://`` streams (LiveKit's mapping to Twitch's
ingest), ``AudioCodec.AC_MP3`` (MP3 files only, as LiveKit), ``IMAGE_SUFFIX_NONE_OVERWRITE``."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest
from aiohttp import web
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

import pyegress
from pyegress.outputs import twitch
from pyegress.outputs.stream import StreamOutput
from pyegress.testing import LiveKitServer, picture_moves, probe, tone_present
from pyegress.testing.rtmp_server import RtmpServer

from .helpers import SMALL, publisher, status, wait_active

pytestmark = pytest.mark.integration

KEY = "live_123456789_TwitchKeyabcdefXYZ"


@pytest.fixture
async def ingests(rtmp: RtmpServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Twitch's ingest list, served on loopback in its real shape (the test may not reach
    ingest.twitch.tv), its best ingest being the local RTMPS server; yields the requests seen."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        body = {
            "ingests": [
                {
                    "_id": 1,
                    "name": "Local (test)",
                    "priority": 0,
                    "url_template": rtmp.url("{stream_key}"),
                    "url_template_secure": rtmp.rtmps_url("{stream_key}"),
                },
                {"_id": 2, "name": "Unused", "url_template": "rtmp://127.0.0.1:9/app/{stream_key}"},
            ]
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/ingests", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    monkeypatch.setattr(twitch, "INGESTS_URL", f"http://127.0.0.1:{runner.addresses[0][1]}/ingests")
    try:
        yield seen
    finally:
        await runner.cleanup()


async def test_twitch_url_streams_to_the_recommended_ingest(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    rtmp: RtmpServer,
    ingests: list[str],
    room_name: str,
) -> None:
    async with publisher(livekit_server, room_name):
        started = await service.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name,
                identity="alice",
                advanced=SMALL,
                stream_outputs=[pe.StreamOutput(urls=[f"twitch://{KEY}"])],
            )
        )
        active = await wait_active(service, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        await asyncio.sleep(4.0)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert status(info) == "EGRESS_COMPLETE", info.error
    (result,) = info.stream_results
    assert result.status == pe.StreamInfo.FINISHED and not result.error and result.retries == 0
    assert result.url.startswith("twitch://{") and KEY not in str(info)
    assert ingests == ["/ingests"]  # read once, on the stream's thread
    for _ in range(50):
        if rtmp.recorded(KEY):
            break
        await asyncio.sleep(0.1)
    (flv,) = rtmp.recorded(KEY)  # arrived over RTMPS (url_template_secure) under the key
    got = probe(flv)
    assert got.video is not None and got.audio is not None
    assert (got.video.codec, got.video.width, got.audio.codec) == ("h264", 640, "aac")
    assert abs(got.video.duration - result.duration / 1e9) < 0.5 and got.video.duration > 3.0
    assert picture_moves(flv) and tone_present(flv, 440.0)


async def test_twitch_without_an_ingest_list_fails_clearly(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    room_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(twitch, "INGESTS_URL", "http://127.0.0.1:9/ingests")  # nothing listens
    monkeypatch.setattr(StreamOutput, "max_retries", 0)
    async with publisher(livekit_server, room_name):
        started = await service.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name,
                identity="alice",
                advanced=SMALL,
                stream_outputs=[pe.StreamOutput(urls=[f"twitch://{KEY}"])],
            )
        )
        info = await service.wait_egress(started.egress_id, timeout=20)
    assert status(info) == "EGRESS_FAILED"
    assert "Twitch's ingest list" in info.error and KEY not in str(info), info.error
    assert info.error_code == 503  # a destination that cannot be reached: unavailable


def test_mp3_audio_codec_only_in_mp3_files() -> None:
    """LiveKit's CodecCompatibility: MP3 audio goes in MP3 files, nowhere else."""
    opts = pe.EncodingOptions(audio_codec=pm.AC_MP3)
    for outputs in (
        {"file_outputs": [pe.EncodedFileOutput(file_type=pe.MP4)]},
        {
            "file_outputs": [pe.EncodedFileOutput(file_type=pe.MP3)],
            "segment_outputs": [pe.SegmentedFileOutput()],
        },
    ):
        req = pe.TrackCompositeEgressRequest(room_name="r", audio_track_id="TR_a", advanced=opts, **outputs)  # type: ignore[arg-type]
        with pytest.raises(pyegress.InvalidRequestError) as err:
            pyegress.Recorder(req)
        assert err.value.field == "advanced.audio_codec" and err.value.code == 400


async def test_mp3_audio_codec_records_an_mp3_file(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, video=False) as pub:
        started = await service.start_track_composite_egress(
            pe.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                advanced=pe.EncodingOptions(audio_codec=pm.AC_MP3, audio_bitrate=64),
                file_outputs=[pe.EncodedFileOutput(file_type=pe.MP3, filepath="ac-mp3")],
            )
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(3.0)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert status(info) == "EGRESS_COMPLETE", info.error
    path = Path(info.file_results[0].filename)
    media = probe(path)
    assert path.name == "ac-mp3.mp3" and media.video is None and media.audio is not None
    assert (
        media.audio.codec.startswith("mp3")
        and abs(media.duration - info.file_results[0].duration / 1e9) < 0.25
    )
    with av.open(str(path)) as c:
        assert c.streams.audio[0].bit_rate == 64000
    assert tone_present(path, 440.0)


async def test_image_none_overwrite_keeps_one_current_image(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, tmp_path: Path
) -> None:
    async with publisher(livekit_server, room_name):
        started = await service.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name,
                identity="alice",
                advanced=SMALL,
                image_outputs=[
                    pe.ImageOutput(
                        capture_interval=1,
                        width=320,
                        height=180,
                        filename_prefix="thumb/latest",
                        filename_suffix=pe.IMAGE_SUFFIX_NONE_OVERWRITE,
                    )
                ],
            )
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        image = tmp_path / "thumb" / "latest.jpeg"
        pictures: list[bytes] = []
        for _ in range(50):  # the one file, read as it is rewritten (replaced whole, never half)
            await asyncio.sleep(0.1)
            if image.exists():
                data = image.read_bytes()
                if not pictures or data != pictures[-1]:
                    pictures.append(data)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert sorted(p.name for p in (tmp_path / "thumb").iterdir()) == ["latest.jpeg", "latest.json"]
    # rewritten with new pictures (the first ones may all be black until the camera's frames come)
    assert info.image_results[0].image_count >= 5 and len(pictures) >= 2, (info.image_results, len(pictures))
    for data in pictures:
        with av.open(io.BytesIO(data)) as c:
            frame = next(c.decode(video=0))
            assert (frame.width, frame.height) == (320, 180)
    listed = json.loads((tmp_path / "thumb" / "latest.json").read_text())["images"]
    assert len(listed) == info.image_results[0].image_count and {i["filename"] for i in listed} == {
        "latest.jpeg"
    }
