"""``pyegress worker`` in a real cluster: Debian's redis-server, livekit-server with a ``redis:``
section and a webhook URL, two worker processes, and ``livekit-api``'s ``LiveKitAPI().egress``
as the client (all on loopback and inside the tests' network namespace)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from livekit import api
from livekit.protocol import egress as pe

from pyegress.testing import LiveKitServer, netns, probe
from pyegress.testing.ports import free_tcp_port
from pyegress.testing.redis_server import RedisServer
from pyegress.worker.config import DEFAULT_CPU_COST

from .helpers import publisher, status

pytestmark = pytest.mark.integration


@dataclass
class Hooks:
    """Webhooks the server sent, verified with livekit-api's WebhookReceiver."""

    url: str
    events: list[api.WebhookEvent] = field(default_factory=list)

    def of(self, egress_id: str) -> list[str]:
        return [e.event for e in self.events if e.egress_info.egress_id == egress_id]


@dataclass
class Cluster:
    server: LiveKitServer
    redis: RedisServer
    hooks: Hooks
    outputs: list[Path]
    workers: list[subprocess.Popen[bytes]]

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.server.url, self.server.api_key, self.server.api_secret)


def _worker(server: LiveKitServer, redis: RedisServer, out: Path, log: Path) -> subprocess.Popen[bytes]:
    body = "\n".join(
        [
            f"api_key: {server.api_key}",
            f"api_secret: {server.api_secret}",
            f"ws_url: {server.url}",
            "redis:",
            f"  address: {redis.address}",
            f"output_dir: {out}",
            f"health_port: {free_tcp_port()}",
            "log_level: info",
        ]
    )
    cmd = [sys.executable, "-m", "pyegress.cli", "worker", "--config-body", body, "--drain-timeout", "5"]
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=dict(os.environ))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as redis:
        yield redis


@pytest.fixture(scope="module")
async def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    if netns.current() is None:
        pytest.fail("WebRTC tests run inside a network namespace (scripts/test.sh does)", pytrace=False)
    root = tmp_path_factory.mktemp("cluster")
    port = free_tcp_port()
    hooks = Hooks(f"http://127.0.0.1:{port}/hook")

    async def receive(request: web.Request) -> web.Response:
        receiver = api.WebhookReceiver(api.TokenVerifier(server.api_key, server.api_secret))
        hooks.events.append(receiver.receive(await request.text(), request.headers.get("Authorization", "")))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = LiveKitServer(redis_address=redis_server.address, webhook_urls=[hooks.url])
    server.start()
    outputs = [root / f"w{i}" for i in range(2)]
    workers = [_worker(server, redis_server, out, root / f"w{i}.log") for i, out in enumerate(outputs)]
    await asyncio.sleep(2.0)  # the workers subscribe
    try:
        yield Cluster(server, redis_server, hooks, outputs, workers)
    finally:
        codes = []
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                codes.append(w.wait(30))
            except subprocess.TimeoutExpired:
                w.kill()
                codes.append(-9)
        server.stop()
        await runner.cleanup()
        logs = {p.name: p.read_text()[-2000:] for p in root.glob("w*.log")}
        assert codes == [0, 0], f"workers exited {codes} after SIGTERM: {logs}"


async def _until(cluster: Cluster, egress_id: str, wanted: set[int], timeout: float) -> pe.EgressInfo:
    deadline = time.monotonic() + timeout
    async with cluster.api() as lk:
        while True:
            res = await lk.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))
            info = res.items[0]
            if info.status in wanted or time.monotonic() > deadline:
                return info
            await asyncio.sleep(0.2)


async def test_a_track_composite_through_the_server_completes_with_webhooks(
    cluster: Cluster, room_name: str
) -> None:
    async with publisher(cluster.server, room_name) as pub, cluster.api() as lk:
        started = await lk.egress.start_track_composite_egress(
            api.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                video_track_id=pub.video_track_sid,
                advanced=api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=800),
                file_outputs=[api.EncodedFileOutput(filepath="{room_name}/tc.mp4")],
            )
        )
        assert started.egress_id.startswith("EG_") and started.room_name == room_name
        active = await _until(cluster, started.egress_id, {pe.EGRESS_ACTIVE}, 15)
        assert status(active) == "EGRESS_ACTIVE", active.error
        listed = await lk.egress.list_egress(api.ListEgressRequest(room_name=room_name, active=True))
        assert [i.egress_id for i in listed.items] == [started.egress_id]
        await asyncio.sleep(4.0)
        stopped = await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
        assert stopped.status in (pe.EGRESS_ENDING, pe.EGRESS_COMPLETE)
    final = await _until(cluster, started.egress_id, {pe.EGRESS_COMPLETE, pe.EGRESS_FAILED}, 20)
    assert status(final) == "EGRESS_COMPLETE", final.error
    result = final.file_results[0]
    path = Path(result.filename)
    assert path.is_file() and path.parent.name == room_name and path.parent.parent in cluster.outputs
    media = probe(path)
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    assert media.audio is not None and media.audio.codec == "aac"
    assert abs(media.duration - result.duration / 1e9) < 0.25 and media.duration > 3.5
    deadline = time.monotonic() + 5
    while "egress_ended" not in cluster.hooks.of(started.egress_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    events = cluster.hooks.of(started.egress_id)
    assert events[0] == "egress_started" and events[-1] == "egress_ended", events
    assert "egress_updated" in events, events
    ended = [
        e
        for e in cluster.hooks.events
        if e.event == "egress_ended" and e.egress_info.egress_id == started.egress_id
    ]
    assert ended[0].egress_info.status == pe.EGRESS_COMPLETE


async def test_a_bad_request_is_refused_at_once_naming_the_field(cluster: Cluster, room_name: str) -> None:
    async with publisher(cluster.server, room_name, video=False) as pub, cluster.api() as lk:
        t0 = time.monotonic()
        with pytest.raises(api.TwirpError) as err:
            await lk.egress.start_track_composite_egress(
                api.TrackCompositeEgressRequest(
                    room_name=room_name,
                    audio_track_id=pub.audio_track_sid,
                    file_outputs=[api.EncodedFileOutput(filepath="../../outside.mp4")],
                )
            )
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed
    assert err.value.code == "invalid_argument", err.value
    assert "file_outputs[0].filepath" in err.value.message and "escapes" in err.value.message


async def test_requests_spread_over_both_workers_within_their_capacity(
    cluster: Cluster, room_name: str
) -> None:
    fit = int((os.cpu_count() or 1) * 0.8 / DEFAULT_CPU_COST["track_composite_cpu_cost"] + 1e-9)
    count = fit + 1  # default max_cpu_utilization and cost: one more than fits on one worker
    async with publisher(cluster.server, room_name, video=False) as pub, cluster.api() as lk:
        ids = []
        for i in range(count):  # one more than fit on one worker
            info = await lk.egress.start_track_composite_egress(
                api.TrackCompositeEgressRequest(
                    room_name=room_name,
                    audio_track_id=pub.audio_track_sid,
                    file_outputs=[
                        api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath=f"spread/{i}")
                    ],
                )
            )
            ids.append(info.egress_id)
        for egress_id in ids:
            active = await _until(cluster, egress_id, {pe.EGRESS_ACTIVE}, 15)
            assert status(active) == "EGRESS_ACTIVE", active.error
        await asyncio.sleep(2.0)
        for egress_id in ids:
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
    finals = [await _until(cluster, i, {pe.EGRESS_COMPLETE, pe.EGRESS_FAILED}, 20) for i in ids]
    assert [status(f) for f in finals] == ["EGRESS_COMPLETE"] * count, [f.error for f in finals]
    homes = [Path(f.file_results[0].filename).parent.parent for f in finals]
    per_worker = [homes.count(out) for out in cluster.outputs]
    # packed: a busy worker claims with 1.0 against an idle one's 0.5, until it is full
    assert sorted(per_worker) == [1, fit], per_worker
    for f in finals:
        media = probe(f.file_results[0].filename)
        assert media.audio is not None and media.audio.codec == "opus" and media.duration > 1.5
