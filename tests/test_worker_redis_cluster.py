"""``pyegress worker`` on a Redis Cluster: three Debian redis-server masters joined with
``redis-cli --cluster create``, livekit-server v1.13.5 with ``redis.cluster_addresses``, one
worker subprocess with the same key, ``livekit-api`` as the client (inside the tests' network
namespace)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api
from livekit.protocol import egress as pe

from pyegress.testing import LiveKitServer, netns, probe, tone_present
from pyegress.testing.ports import free_tcp_port
from pyegress.testing.redis_server import RedisCluster

from .helpers import publisher, status

pytestmark = pytest.mark.integration

ENDED = {pe.EGRESS_COMPLETE, pe.EGRESS_FAILED, pe.EGRESS_ABORTED, pe.EGRESS_LIMIT_REACHED}


class ClusterLiveKitServer(LiveKitServer):
    """livekit-server whose ``redis:`` section names a Redis Cluster's nodes."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__()
        self.cluster_addresses = addresses

    def _config_yaml(self) -> str:
        return (
            super()._config_yaml() + f"redis:\n  cluster_addresses: [{', '.join(self.cluster_addresses)}]\n"
        )


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as cluster:
        yield cluster


async def _until(
    lk: api.LiveKitAPI, egress_id: str, wanted: Collection[int], timeout: float
) -> pe.EgressInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = (await lk.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))).items[0]
        if info.status in wanted or time.monotonic() > deadline:
            return info
        await asyncio.sleep(0.2)


async def test_a_track_composite_on_a_redis_cluster_completes(
    redis_cluster: RedisCluster, room_name: str, tmp_path: Path
) -> None:
    if netns.current() is None:
        pytest.fail("WebRTC tests run inside a network namespace (scripts/test.sh does)", pytrace=False)
    server = ClusterLiveKitServer(redis_cluster.addresses)
    server.start()
    out, health_port = tmp_path / "out", free_tcp_port()
    body = "\n".join(
        [
            f"api_key: {server.api_key}",
            f"api_secret: {server.api_secret}",
            f"ws_url: {server.url}",
            "redis:",
            f"  cluster_addresses: [{', '.join(reversed(redis_cluster.addresses))}]",
            f"output_dir: {out}",
            f"health_port: {health_port}",
        ]
    )
    log = tmp_path / "worker.log"
    cmd = [sys.executable, "-m", "pyegress.cli", "worker", "--config-body", body, "--drain-timeout", "5"]
    worker = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as s:
            while True:  # it answers its health port once it serves
                try:
                    async with s.get(f"http://127.0.0.1:{health_port}/") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
        async with (
            publisher(server, room_name) as pub,
            api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk,
        ):
            started = await lk.egress.start_track_composite_egress(
                api.TrackCompositeEgressRequest(
                    room_name=room_name,
                    audio_track_id=pub.audio_track_sid,
                    video_track_id=pub.video_track_sid,
                    advanced=api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=800),
                    file_outputs=[api.EncodedFileOutput(filepath="{room_name}/tc.mp4")],
                )
            )
            active = await _until(lk, started.egress_id, {pe.EGRESS_ACTIVE, *ENDED}, 15)
            assert status(active) == "EGRESS_ACTIVE", active.error
            await asyncio.sleep(4.0)
            stopped = await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            assert stopped.status in (pe.EGRESS_ENDING, pe.EGRESS_COMPLETE)
            final = await _until(lk, started.egress_id, ENDED, 20)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        server.stop()
    assert status(final) == "EGRESS_COMPLETE", final.error
    (result,) = final.file_results
    path = Path(result.filename)
    assert path.is_relative_to(out) and result.size == path.stat().st_size
    media = probe(path)
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    assert media.audio is not None and media.audio.codec == "aac"
    assert abs(media.duration - result.duration / 1e9) < 0.25 and media.duration > 3.5
    assert tone_present(path, 440.0, start=0.5, end=media.duration - 0.5)
