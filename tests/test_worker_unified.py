"""The unified request through a real cluster: ``LiveKitAPI().egress.start_egress`` to
livekit-server, dispatched over Redis to ``pyegress worker`` (the cluster of test_worker)."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit import api
from livekit.protocol import egress as pe

from pyegress.testing import probe, tone_present

from .helpers import publisher, status
from .test_worker import Cluster, _active, _complete, cluster, redis_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


async def test_start_egress_with_a_media_source_through_the_server(cluster: Cluster, room_name: str) -> None:  # noqa: F811
    async with publisher(cluster.server, room_name, "alice") as pub, cluster.api() as lk:
        video_sid = pub.video_track_sid
        started = await lk.egress.start_egress(
            pe.StartEgressRequest(
                room_name=room_name,
                media=pe.MediaSource(
                    video_track_id=video_sid,
                    audio=pe.AudioConfig(routes=[pe.AudioRoute(participant_identity="alice")]),
                ),
                advanced=api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=800),
                outputs=[pe.Output(file=pe.FileOutput(filepath="{room_name}/media.mp4"))],
            )
        )
        assert started.WhichOneof("request") == "egress" and started.room_name == room_name
        await _active(cluster, started.egress_id)
        await asyncio.sleep(3.0)
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
        t0 = time.monotonic()
        with pytest.raises(api.TwirpError) as refused:  # refused at once by the worker, naming the field
            await lk.egress.start_egress(
                pe.StartEgressRequest(
                    room_name=room_name,
                    media=pe.MediaSource(participant_video=pe.ParticipantVideo()),
                    outputs=[pe.Output(file=pe.FileOutput())],
                )
            )
        assert time.monotonic() - t0 < 2.0
    assert "media.participant_video.identity" in refused.value.message, refused.value
    final = await _complete(cluster, started.egress_id)
    assert status(final) == "EGRESS_COMPLETE", final.error
    assert final.egress.media.video_track_id == video_sid
    path = final.file_results[0].filename
    media = probe(path)
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    assert media.audio is not None and media.duration > 2.5
    assert tone_present(path, 440.0)
