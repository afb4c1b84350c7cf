"""``pyegress worker`` in a real cluster: Debian's redis-server, livekit-server with a ``redis:``
section and a webhook URL, two worker processes, and ``livekit-api``'s ``LiveKitAPI().egress``
as the client (all on loopback and inside the tests' network namespace)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis.asyncio
from aiohttp import web
from google.protobuf import json_format
from livekit import api
from livekit.protocol import egress as pe

from pyegress.errors import EgressNotFoundError, SourceError
from pyegress.sources.web import find_chromium
from pyegress.testing import LiveKitServer, netns, picture_moves, probe, region_color, tone_present
from pyegress.testing.checks import AudioData
from pyegress.testing.ports import free_tcp_port
from pyegress.testing.redis_server import RedisServer
from pyegress.testing.server import find_server_binary
from pyegress.worker import control
from pyegress.worker.config import DEFAULT_CPU_COST, RedisConfig
from pyegress.worker.proto import StartEgressRequest
from pyegress.worker.psrpc import Bus

from .helpers import CANVAS, NO_MARKERS, box, check_cut, manifest, near, publisher, start_rtmp, status

REPO = Path(__file__).resolve().parents[1]
PAGES = Path(__file__).parent / "pages"
TEMPLATES = REPO / "examples" / "templates" / "dist"
#: The newest livekit-server release (``scripts/install-livekit-server.sh --latest`` builds it
#: beside the pinned one). Opt-in with PYEGRESS_LATEST_SERVER=1: v1.13.6 and later need
#: LiveKit's forks of pion (``replace`` directives) that the Go module proxy does not serve.
LATEST_SERVER = REPO / ".tools" / "bin" / "livekit-server-latest"
#: Seconds two workers get to serve their health ports (each imports PyAV, the SDK and redis-py
#: and registers on Redis: a few seconds on a quiet machine). A CI run once saw 20 s pass with no
#: log to tell why: a worker that exits, or one still silent at the end, fails with its log.
WORKER_START = 40.0
SERVERS = ["v1.13.5"] + (["latest"] if os.environ.get("PYEGRESS_LATEST_SERVER") == "1" else [])

pytestmark = pytest.mark.integration


@dataclass
class Hooks:
    """Webhooks the server sent, verified with livekit-api's WebhookReceiver."""

    url: str
    events: list[api.WebhookEvent] = field(default_factory=list)

    def of(self, egress_id: str) -> list[str]:
        return [e.event for e in self.events if e.egress_info.egress_id == egress_id]


#: What one worker may reserve: the worker's own formula (cores x max_cpu_utilization); its
#: subprocess sees the same cores as this one.
CAPACITY = (os.cpu_count() or 1) * DEFAULT_CPU_COST["max_cpu_utilization"]
#: The cluster's workers reserve a fifth of their capacity for a track egress (the cheapest
#: request: an audio track copied to Ogg), so each holds five (test_ten_requests_...).
TRACK_COST = CAPACITY / 5


@dataclass
class Cluster:
    server: LiveKitServer
    redis: RedisServer
    hooks: Hooks
    outputs: list[Path]
    workers: list[subprocess.Popen[bytes]]
    health_ports: list[int]

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.server.url, self.server.api_key, self.server.api_secret)

    async def health(self) -> list[dict[str, Any]]:
        """Each worker's health JSON (capacity, reserved cores, egresses running there)."""
        async with aiohttp.ClientSession() as s:
            answers = []
            for port in self.health_ports:
                async with s.get(f"http://127.0.0.1:{port}/") as r:
                    answers.append(await r.json())
        return answers


def _worker(
    server: LiveKitServer, redis: RedisServer, out: Path, log: Path, health_port: int
) -> subprocess.Popen[bytes]:
    body = "\n".join(
        [
            f"api_key: {server.api_key}",
            f"api_secret: {server.api_secret}",
            f"ws_url: {server.url}",
            "redis:",
            f"  address: {redis.address}",
            f"output_dir: {out}",
            f"health_port: {health_port}",
            "cpu_cost:",
            f"  track_cpu_cost: {TRACK_COST!r}",
            "log_level: info",
            # only test_session_limit_of_the_worker_config has image outputs: the others run unlimited
            "session_limits:",
            "  image_output_max_duration: 3s",
        ]
    )
    cmd = [sys.executable, "-m", "pyegress.cli", "worker", "--config-body", body, "--drain-timeout", "5"]
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=dict(os.environ))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as redis:
        yield redis


@pytest.fixture(scope="module", params=SERVERS)
async def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Cluster]:
    """The cluster on the pinned livekit-server ("v1.13.5") and, opted in, the newest ("latest")."""
    if netns.current() is None:
        pytest.fail("WebRTC tests run inside a network namespace (scripts/test.sh does)", pytrace=False)
    binary = find_server_binary() if request.param != "latest" else LATEST_SERVER
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"{binary} is missing: run scripts/install-livekit-server.sh --latest", pytrace=False)
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
    server = LiveKitServer(binary=binary, redis_address=redis_server.address, webhook_urls=[hooks.url])
    server.start()
    outputs = [root / f"w{i}" for i in range(2)]
    ports = [free_tcp_port() for _ in outputs]
    workers = [
        _worker(server, redis_server, out, root / f"w{i}.log", port)
        for i, (out, port) in enumerate(zip(outputs, ports, strict=True))
    ]
    cluster = Cluster(server, redis_server, hooks, outputs, workers, ports)

    def logs() -> dict[str, str]:
        return {p.name: p.read_text(errors="replace")[-2000:] for p in root.glob("w*.log")}

    try:
        deadline = time.monotonic() + WORKER_START
        while True:  # each answers its health port once it serves
            try:
                await cluster.health()
                break
            except aiohttp.ClientError:
                for i, w in enumerate(workers):
                    if w.poll() is not None and "address already in use" in logs()[f"w{i}.log"].lower():
                        # free_tcp_port's race: another socket took the port meanwhile
                        ports[i] = free_tcp_port()
                        workers[i] = _worker(server, redis_server, outputs[i], root / f"w{i}.log", ports[i])
                exited = [w.poll() for w in workers]
                if any(code is not None for code in exited):
                    pytest.fail(f"a worker exited at start ({exited}): {logs()}", pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail(f"the workers did not serve in {WORKER_START} s: {logs()}", pytrace=False)
                await asyncio.sleep(0.2)
        yield cluster
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
        assert codes == [0, 0], f"workers exited {codes} after SIGTERM: {logs()}"


async def _until(cluster: Cluster, egress_id: str, wanted: Collection[int], timeout: float) -> pe.EgressInfo:
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


async def _both_empty(cluster: Cluster, timeout: float = 30) -> None:
    """Wait until no egress runs on either worker (earlier tests' final reports went out)."""
    deadline = time.monotonic() + timeout
    while any(h["active"] for h in await cluster.health()):
        assert time.monotonic() < deadline, "egresses of earlier tests still running"
        await asyncio.sleep(0.2)


async def test_ten_requests_spread_over_both_workers_none_over_its_capacity(
    cluster: Cluster, room_name: str
) -> None:
    """Ten track egresses (TRACK_COST: five fill a worker) go five to each worker: a busy worker
    claims with 1.0 against an idle one's 0.5 until it is full. Neither ever reserves more than
    its capacity (its health port, polled all along), and an eleventh finds no worker to claim it."""
    seen: list[tuple[float, float]] = []  # (reserved, capacity) of every health answer

    async def watch() -> None:
        while True:
            for h in await cluster.health():
                seen.append((sum(a["cost"] for a in h["active"]), h["cpu_capacity"]))
            await asyncio.sleep(0.05)

    await _both_empty(cluster)
    watcher = asyncio.create_task(watch())
    try:
        async with publisher(cluster.server, room_name, video=False) as pub, cluster.api() as lk:

            def request(name: str) -> api.TrackEgressRequest:
                return api.TrackEgressRequest(
                    room_name=room_name,
                    track_id=pub.audio_track_sid,
                    file=api.DirectFileOutput(filepath=f"ten/{name}.ogg"),
                )

            ids = [(await lk.egress.start_track_egress(request(str(i)))).egress_id for i in range(10)]
            for egress_id in ids:
                await _active(cluster, egress_id)
            health = await cluster.health()
            assert sorted(len(h["active"]) for h in health) == [5, 5], health
            assert all(h["cpu_available"] < TRACK_COST for h in health), health
            t0 = time.monotonic()
            with pytest.raises(api.TwirpError) as refused:  # the server tries three times, ~21-25 s
                await lk.egress.start_track_egress(request("eleventh"))
            print(f"eleventh refused after {time.monotonic() - t0:.1f} s: {refused.value}")
            assert refused.value.code == "unavailable", refused.value
            running = await _list(cluster, room_name=room_name, active=True)
            assert sorted(running) == sorted(ids), "the eleventh was not started"
            for egress_id in ids:
                await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
        finals = [await _complete(cluster, i) for i in ids]
    finally:
        watcher.cancel()
    print(f"{len(seen)} health answers; most reserved {max(r for r, _ in seen):.3f} of {CAPACITY:.3f}")
    assert len(seen) > 100 and max(r for r, _ in seen) > CAPACITY - TRACK_COST / 2, "seen full"
    assert all(reserved <= capacity + 1e-6 for reserved, capacity in seen), max(seen)
    homes = [Path(f.file_results[0].filename).parent.parent for f in finals]
    assert sorted(homes.count(out) for out in cluster.outputs) == [5, 5], homes
    assert not any(list(out.glob("ten/eleventh*")) for out in cluster.outputs)
    for f in finals:
        media = probe(f.file_results[0].filename)
        assert media.audio is not None and media.audio.codec == "opus" and media.duration > 15
        assert tone_present(f.file_results[0].filename, 440.0, start=0.5, end=media.duration - 0.5)


# --- every request type, and the server's features, through the cluster ----------------------

RED, BLUE = (220, 40, 40), (40, 60, 220)
SMALL = api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1000)
ENDED = {pe.EGRESS_COMPLETE, pe.EGRESS_FAILED, pe.EGRESS_ABORTED, pe.EGRESS_LIMIT_REACHED}


async def _active(cluster: Cluster, egress_id: str) -> pe.EgressInfo:
    info = await _until(cluster, egress_id, {pe.EGRESS_ACTIVE} | ENDED, 20)
    assert status(info) == "EGRESS_ACTIVE", info.error
    return info


async def _complete(cluster: Cluster, egress_id: str) -> pe.EgressInfo:
    """The final info, COMPLETE, with its file (if any) in one worker's output folder."""
    info = await _until(cluster, egress_id, ENDED, 30)
    assert status(info) == "EGRESS_COMPLETE", info.error
    for result in info.file_results:
        path = Path(result.filename)
        assert path.is_file() and any(out in path.parents for out in cluster.outputs), path
        assert abs(probe(path).duration - result.duration / 1e9) < 0.3
    return info


async def test_room_composite_grid_layout_update_stop_twice_and_list(
    cluster: Cluster, room_name: str
) -> None:
    async with (
        publisher(cluster.server, room_name, "a", color=RED, marker_interval=NO_MARKERS),
        publisher(cluster.server, room_name, "b", color=BLUE, audio=False, marker_interval=NO_MARKERS),
        cluster.api() as lk,
    ):
        started = await lk.egress.start_room_composite_egress(
            api.RoomCompositeEgressRequest(
                room_name=room_name,
                layout="grid",
                advanced=CANVAS,
                file_outputs=[api.EncodedFileOutput(filepath="{room_name}-grid.mp4")],
            )
        )
        active = await _active(cluster, started.egress_id)
        by_room = await lk.egress.list_egress(api.ListEgressRequest(room_name=room_name))
        by_id = await lk.egress.list_egress(api.ListEgressRequest(egress_id=started.egress_id))
        live = await lk.egress.list_egress(api.ListEgressRequest(active=True))
        assert [i.egress_id for i in by_room.items] == [started.egress_id]
        assert [i.room_composite.layout for i in by_id.items] == ["grid"]
        assert started.egress_id in [i.egress_id for i in live.items]
        assert all(i.status in (pe.EGRESS_STARTING, pe.EGRESS_ACTIVE) for i in live.items)
        await asyncio.sleep(3.0)
        t_update = (time.time_ns() - active.started_at) / 1e9
        await lk.egress.update_layout(
            api.UpdateLayoutRequest(egress_id=started.egress_id, layout="grid-light")
        )
        await asyncio.sleep(3.0)
        t0 = time.monotonic()
        first = await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
        assert first.status in (pe.EGRESS_ENDING, pe.EGRESS_COMPLETE)
        try:  # the second stop answers the info or a clear error, quickly
            second = await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            assert second.egress_id == started.egress_id and second.status in (
                pe.EGRESS_ENDING,
                pe.EGRESS_COMPLETE,
            )
        except api.TwirpError as e:
            # ours ("not active"), or livekit-server's own once it holds the egress as complete
            refused = ("not active", "EGRESS_COMPLETE cannot be stopped")
            assert e.code == "failed_precondition" and any(r in e.message for r in refused), e
        assert time.monotonic() - t0 < 8.0
    final = await _complete(cluster, started.egress_id)
    assert final.room_composite.layout == "grid-light"
    path = final.file_results[0].filename
    media = probe(path)
    assert media.video is not None and (media.video.width, media.video.height) == (1280, 720)
    assert media.audio is not None and tone_present(path, 440.0, start=0.5, end=t_update)
    before, after = t_update - 0.7, t_update + 1.0  # the new layout within one second
    assert near(region_color(path, before, box(320, 360)), RED)
    assert near(region_color(path, before, box(960, 360)), BLUE)
    assert near(region_color(path, before, box(640, 360, 2)), (0, 0, 0), 30), "grid: dark background"
    assert near(region_color(path, after, box(640, 360, 2)), (255, 255, 255), 25), "grid-light background"
    assert near(region_color(path, after, box(320, 360)), RED)
    assert near(region_color(path, after, box(960, 360)), BLUE)
    running = await _list(cluster, active=True)
    assert started.egress_id not in running


async def _list(cluster: Cluster, **kw: object) -> list[str]:
    async with cluster.api() as lk:
        res = await lk.egress.list_egress(api.ListEgressRequest(**kw))  # type: ignore[arg-type]
    return [i.egress_id for i in res.items]


async def test_participant_and_video_track_egress_complete(cluster: Cluster, room_name: str) -> None:
    async with publisher(cluster.server, room_name, "alice") as pub, cluster.api() as lk:
        video_sid = pub.video_track_sid
        part = await lk.egress.start_participant_egress(
            api.ParticipantEgressRequest(
                room_name=room_name,
                identity="alice",
                advanced=SMALL,
                file_outputs=[api.EncodedFileOutput(filepath="{room_name}/participant.mp4")],
            )
        )
        track = await lk.egress.start_track_egress(
            api.TrackEgressRequest(
                room_name=room_name,
                track_id=video_sid,
                file=api.DirectFileOutput(filepath="{room_name}/{track_id}.mp4"),
            )
        )
        for egress_id in (part.egress_id, track.egress_id):
            await _active(cluster, egress_id)
        assert sorted(await _list(cluster, room_name=room_name)) == sorted([part.egress_id, track.egress_id])
        await asyncio.sleep(4.0)
        for egress_id in (part.egress_id, track.egress_id):
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
    p_final, t_final = await _complete(cluster, part.egress_id), await _complete(cluster, track.egress_id)
    p_media = probe(p_final.file_results[0].filename)
    assert p_media.video is not None and (p_media.video.codec, p_media.video.width) == ("h264", 640)
    assert p_media.audio is not None and p_media.audio.codec == "aac" and p_media.duration > 3.0
    assert tone_present(p_final.file_results[0].filename, 440.0)
    t_path = Path(t_final.file_results[0].filename)
    assert t_path.name == f"{video_sid}.mp4"
    t_media = probe(t_path)
    assert t_media.video is not None and t_media.audio is None and t_media.video.codec == "h264"
    assert (t_media.video.width, t_media.video.height) == (640, 360) and t_media.duration > 3.0
    assert picture_moves(t_path, min_moving_pairs=0.3)


async def test_audio_track_egress_to_a_websocket_receives_pcm(cluster: Cluster, room_name: str) -> None:
    chunks: list[bytes] = []
    closed = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                chunks.append(msg.data)
        closed.set()
        return ws

    app = web.Application()
    app.router.add_get("/audio", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with publisher(cluster.server, room_name, video=False) as pub, cluster.api() as lk:
            started = await lk.egress.start_track_egress(
                api.TrackEgressRequest(
                    room_name=room_name,
                    track_id=pub.audio_track_sid,
                    websocket_url=f"ws://127.0.0.1:{port}/audio",
                )
            )
            await _active(cluster, started.egress_id)
            await asyncio.sleep(4.0)
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            await _complete(cluster, started.egress_id)
            await asyncio.wait_for(closed.wait(), 10)
    finally:
        await runner.cleanup()
    pcm = np.frombuffer(b"".join(chunks), "<i2").reshape(-1, 2)  # s16le stereo at 48 kHz
    seconds = len(pcm) / 48000
    assert 3.0 < seconds < 7.0, seconds
    mono = pcm.mean(axis=1).astype(np.float32) / 32768
    assert tone_present(AudioData(mono, 48000, 0.0), 440.0, start=0.5, end=seconds - 0.5)


async def test_web_egress_of_a_local_page_completes(cluster: Cluster) -> None:
    try:
        find_chromium()
    except SourceError as e:
        pytest.fail(f"{e} (run scripts/install-chromium.sh)", pytrace=False)
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with cluster.api() as lk:
            started = await lk.egress.start_web_egress(
                api.WebEgressRequest(
                    url=f"http://127.0.0.1:{port}/animated.html",
                    await_start_signal=True,
                    advanced=SMALL,
                    file_outputs=[api.EncodedFileOutput(filepath="web/page.mp4")],
                )
            )
            assert started.web.url.endswith("/animated.html")
            await _active(cluster, started.egress_id)
            await asyncio.sleep(4.0)
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            final = await _complete(cluster, started.egress_id)
    finally:
        await runner.cleanup()
    path = final.file_results[0].filename
    media = probe(path)
    assert media.video is not None and (media.video.codec, media.video.width, media.video.height) == (
        "h264",
        640,
        360,
    )
    assert media.audio is not None and media.duration > 3.0
    assert picture_moves(path, min_moving_pairs=0.5)
    assert tone_present(path, 440.0, start=0.5, end=media.duration - 0.5)


async def test_a_template_room_composite_through_the_server_completes(
    cluster: Cluster, room_name: str
) -> None:
    """``custom_base_url``: the worker's Chromium (inside the tests' namespace) opens the sample
    livekit-client template (examples/templates, built by scripts/build-templates.sh) served
    here, with the room's token; two publishers side by side, the first one's tone."""
    try:
        find_chromium()
    except SourceError as e:
        pytest.fail(f"{e} (run scripts/install-chromium.sh)", pytrace=False)
    if not (TEMPLATES / "grid" / "index.html").is_file():
        pytest.fail(f"{TEMPLATES} is not built: run scripts/build-templates.sh", pytrace=False)
    await _both_empty(cluster)  # a web request (1.5 cores) fits only on an idle worker
    app = web.Application()
    app.router.add_static("/templates/", TEMPLATES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with publisher(cluster.server, room_name, "red", color=RED, marker_interval=NO_MARKERS):
            await asyncio.sleep(0.3)  # a distinct join order: red left, blue right
            async with (
                publisher(
                    cluster.server, room_name, "blue", color=BLUE, audio=False, marker_interval=NO_MARKERS
                ),
                cluster.api() as lk,
            ):
                started = await lk.egress.start_room_composite_egress(
                    api.RoomCompositeEgressRequest(
                        room_name=room_name,
                        layout="grid",
                        custom_base_url=f"http://127.0.0.1:{port}/templates/grid/index.html",
                        advanced=SMALL,
                        file_outputs=[api.EncodedFileOutput(filepath="template/{room_name}.mp4")],
                    )
                )
                assert started.room_composite.custom_base_url.endswith("/grid/index.html")
                await _active(cluster, started.egress_id)
                await asyncio.sleep(5.0)
                await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
                final = await _complete(cluster, started.egress_id)
    finally:
        await runner.cleanup()
    (result,) = final.file_results
    path = Path(result.filename)
    assert path.name == f"{room_name}.mp4" and result.size == path.stat().st_size > 50_000
    media = probe(path)
    assert media.video is not None and (media.video.codec, media.video.width, media.video.height) == (
        "h264",
        640,
        360,
    )
    assert media.audio is not None and media.audio.codec == "aac" and media.duration > 4.0
    t = media.duration - 1.0
    assert near(region_color(path, t, box(160, 180)), RED), region_color(path, t, box(160, 180))
    assert near(region_color(path, t, box(480, 180)), BLUE), region_color(path, t, box(480, 180))
    assert tone_present(path, 440.0, start=1.0, end=media.duration - 0.5)


async def test_update_stream_through_the_server_adds_an_rtmp_url(cluster: Cluster, room_name: str) -> None:
    rtmp = start_rtmp()
    key_a, key_b = "worker_a_0123456789abcdef", "worker_b_0123456789abcdef"
    try:
        async with publisher(cluster.server, room_name) as pub, cluster.api() as lk:
            started = await lk.egress.start_track_composite_egress(
                api.TrackCompositeEgressRequest(
                    room_name=room_name,
                    audio_track_id=pub.audio_track_sid,
                    video_track_id=pub.video_track_sid,
                    advanced=SMALL,
                    stream_outputs=[
                        api.StreamOutput(protocol=api.StreamProtocol.RTMP, urls=[rtmp.url(key_a)])
                    ],
                )
            )
            await _active(cluster, started.egress_id)
            await asyncio.sleep(1.5)
            added = await lk.egress.update_stream(
                api.UpdateStreamRequest(egress_id=started.egress_id, add_output_urls=[rtmp.url(key_b)])
            )
            assert len(added.stream_results) == 2
            assert [s.status for s in added.stream_results] == [pe.StreamInfo.ACTIVE] * 2
            await asyncio.sleep(5.0)  # past the next key frame (4 s GOP)
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
        final = await _complete(cluster, started.egress_id)
        assert [s.status for s in final.stream_results] == [pe.StreamInfo.FINISHED] * 2
        deadline = time.monotonic() + 5
        while not (rtmp.recorded(key_a) and rtmp.recorded(key_b)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for key in (key_a, key_b):
            (flv,) = rtmp.recorded(key)
            got = probe(flv)
            assert got.video is not None and got.video.codec == "h264" and got.video.duration > 1.0, key
            assert got.audio is not None, key
    finally:
        rtmp.stop()


async def test_a_duplicate_start_egress_answers_the_running_egress(cluster: Cluster, room_name: str) -> None:
    """The server re-sends StartEgress on a timeout (same egress id): the worker running it
    answers its info, even when it is full (another worker would start it a second time)."""
    async with publisher(cluster.server, room_name, video=False) as pub, cluster.api() as lk:
        requests = [
            api.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                file_outputs=[api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath=f"dup/{i}")],
            )
            for i in range(3)  # packed on one worker: a busy worker claims with 1.0, an idle one 0.5
        ]
        ids = [(await lk.egress.start_track_composite_egress(r)).egress_id for r in requests]
        actives = [await _active(cluster, i) for i in ids]
        resend: Any = StartEgressRequest()  # the same egress id, a new request id
        resend.egress_id = ids[0]
        resend.room_id = actives[0].room_id
        resend.track_composite.ParseFromString(requests[0].SerializeToString())
        client = redis.asyncio.Redis.from_url(cluster.redis.url)
        bus = Bus(client, "test-resender")
        await bus.start()
        try:
            t0 = time.monotonic()
            raw = await bus.call(
                "EgressInternal",
                "StartEgress",
                "",
                resend.SerializeToString(),
                timeout=10,
                affinity_timeout=1.0,
            )
            elapsed = time.monotonic() - t0
        finally:
            await bus.close()
            await client.aclose()
        again = pe.EgressInfo.FromString(raw)
        assert elapsed < 2.0, elapsed
        assert again.egress_id == ids[0] and again.status == pe.EGRESS_ACTIVE
        assert sorted(await _list(cluster, room_name=room_name)) == sorted(ids)
        await asyncio.sleep(1.0)
        for egress_id in ids:
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
    finals = [await _complete(cluster, i) for i in ids]
    homes = {Path(f.file_results[0].filename).parent.parent for f in finals}
    assert len(homes) == 1, "the three were packed on one worker, so it was full"
    assert [len(list(out.glob("dup/0.ogg"))) for out in cluster.outputs].count(1) == 1, "one recording of it"
    assert all(probe(f.file_results[0].filename).audio is not None for f in finals)


async def test_auto_egress_from_create_room(cluster: Cluster, room_name: str) -> None:
    async with cluster.api() as lk:
        await lk.room.create_room(
            api.CreateRoomRequest(
                name=room_name,
                egress=api.RoomEgress(
                    room=api.RoomCompositeEgressRequest(
                        layout="grid",
                        advanced=SMALL,
                        file_outputs=[api.EncodedFileOutput(filepath="auto/{room_name}/room.mp4")],
                    ),
                    participant=api.AutoParticipantEgress(
                        advanced=SMALL,
                        file_outputs=[
                            api.EncodedFileOutput(filepath="auto/{room_name}/{publisher_identity}.mp4")
                        ],
                    ),
                    tracks=api.AutoTrackEgress(filepath="auto/{room_name}/track.file"),
                ),
            )
        )
        async with (
            publisher(cluster.server, room_name, "alice", color=RED, marker_interval=NO_MARKERS) as alice,
            publisher(cluster.server, room_name, "bob", video=False, tone_hz=660.0) as bob,
        ):
            deadline = time.monotonic() + 20
            infos: list[pe.EgressInfo] = []
            while time.monotonic() < deadline:
                infos = list((await lk.egress.list_egress(api.ListEgressRequest(room_name=room_name))).items)
                if len(infos) >= 6 and all(i.status == pe.EGRESS_ACTIVE for i in infos):
                    break
                await asyncio.sleep(0.3)
            kinds = sorted(i.WhichOneof("request") for i in infos)
            assert kinds == ["participant", "participant", "room_composite", "track", "track", "track"], [
                (i.WhichOneof("request"), status(i), i.error) for i in infos
            ]
            assert all(i.status == pe.EGRESS_ACTIVE for i in infos), [(status(i), i.error) for i in infos]
            tracks = {alice.video_track_sid, alice.audio_track_sid, bob.audio_track_sid}
            await asyncio.sleep(4.0)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))
    finals = [await _complete(cluster, i.egress_id) for i in infos]
    by_kind: dict[str, list[pe.EgressInfo]] = {}
    for f in finals:
        by_kind.setdefault(f.WhichOneof("request") or "", []).append(f)
    (room,) = by_kind["room_composite"]
    room_media = probe(room.file_results[0].filename)
    assert room_media.video is not None and room_media.audio is not None and room_media.duration > 3.0
    assert Path(room.file_results[0].filename).name == "room.mp4"
    people = {Path(f.file_results[0].filename).name: f for f in by_kind["participant"]}
    assert sorted(people) == ["alice.mp4", "bob.mp4"]
    alice_media = probe(people["alice.mp4"].file_results[0].filename)
    assert alice_media.video is not None and alice_media.audio is not None
    assert tone_present(people["bob.mp4"].file_results[0].filename, 660.0)
    names = sorted(Path(f.file_results[0].filename).name for f in by_kind["track"])
    assert {f.track.track_id for f in by_kind["track"]} == tracks
    assert all(any(f"track-{sid}" in n for n in names) for sid in tracks), names
    for f in by_kind["track"]:
        media = probe(f.file_results[0].filename)
        assert media.duration > 2.5 and (media.video is not None or media.audio is not None)


@pytest.fixture(scope="module")
def egressclient() -> Path:
    """The Go server SDK client (scripts/install-go-client.sh builds it: the tests' network
    namespace has no Go module proxy)."""
    binary = REPO / ".tools" / "bin" / "egressclient"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"{binary} is missing: run scripts/install-go-client.sh", pytrace=False)
    return binary


async def _go_start(
    cluster: Cluster, client: Path, kind: str, request: dict[str, object], tmp: Path
) -> pe.EgressInfo:
    body = tmp / f"{kind}.json"
    body.write_text(json.dumps(request))
    s = cluster.server
    proc = await asyncio.create_subprocess_exec(
        str(client), "--url", s.http_url, "--api-key", s.api_key, "--api-secret", s.api_secret,
        "--type", kind, str(body),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    info = pe.EgressInfo()
    json_format.Parse(out, info)
    return info


async def test_the_go_server_sdk_starts_room_and_track_composites(
    cluster: Cluster, egressclient: Path, room_name: str, tmp_path: Path
) -> None:
    async with (
        publisher(cluster.server, room_name, "a", color=RED, marker_interval=NO_MARKERS) as pub,
        publisher(cluster.server, room_name, "b", color=BLUE, audio=False, marker_interval=NO_MARKERS),
        cluster.api() as lk,
    ):
        room = await _go_start(
            cluster,
            egressclient,
            "room-composite",
            {
                "room_name": room_name,
                "layout": "grid",
                "file_outputs": [{"filepath": "go/{room_name}-room.mp4"}],
            },
            tmp_path,
        )
        track = await _go_start(
            cluster,
            egressclient,
            "track-composite",
            {
                "room_name": room_name,
                "audio_track_id": pub.audio_track_sid,
                "video_track_id": pub.video_track_sid,
                "file_outputs": [{"filepath": "go/{room_name}-tc.mp4"}],
            },
            tmp_path,
        )
        assert room.egress_id.startswith("EG_") and room.room_composite.layout == "grid"
        assert track.track_composite.video_track_id == pub.video_track_sid
        for info in (room, track):
            await _active(cluster, info.egress_id)
        await asyncio.sleep(4.0)
        for info in (room, track):
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
    room_final, track_final = (
        await _complete(cluster, room.egress_id),
        await _complete(cluster, track.egress_id),
    )
    path = room_final.file_results[0].filename
    media = probe(path)
    assert media.video is not None and media.audio is not None and media.duration > 3.0
    w, h = media.video.width, media.video.height
    t = media.duration - 1.0
    assert near(region_color(path, t, box(w // 4, h // 2)), RED)
    assert near(region_color(path, t, box(3 * w // 4, h // 2)), BLUE)
    tc = probe(track_final.file_results[0].filename)
    assert tc.video is not None and tc.video.codec == "h264" and tc.audio is not None and tc.duration > 3.0
    assert tone_present(track_final.file_results[0].filename, 440.0)


async def test_session_limit_of_the_worker_config(cluster: Cluster, room_name: str) -> None:
    """The workers' ``session_limits`` (3 s for image outputs) end an egress LIMIT_REACHED; the
    server's egress_ended webhook says so, and the file is complete at 3 s."""
    async with publisher(cluster.server, room_name) as pub, cluster.api() as lk:
        started = await lk.egress.start_track_composite_egress(
            api.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                video_track_id=pub.video_track_sid,
                advanced=api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=800),
                file_outputs=[api.EncodedFileOutput(filepath="{room_name}/limited.mp4")],
                image_outputs=[api.ImageOutput(capture_interval=1, filename_prefix="{room_name}/img")],
            )
        )
        final = await _until(cluster, started.egress_id, {pe.EGRESS_LIMIT_REACHED, pe.EGRESS_FAILED}, 20)
    assert status(final) == "EGRESS_LIMIT_REACHED", final.error
    assert final.error == "Session limit reached" and final.error_code == 413
    assert final.details.startswith("End reason: Session limit reached (image_output_max_duration: 3 s")
    media = probe(final.file_results[0].filename)
    assert abs(media.duration - 3.0) < 0.25, media.duration
    assert abs(media.duration - final.file_results[0].duration / 1e9) < 0.25
    assert final.image_results[0].image_count in (3, 4)
    deadline = time.monotonic() + 5
    while "egress_ended" not in cluster.hooks.of(started.egress_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    ended = [
        e
        for e in cluster.hooks.events
        if e.event == "egress_ended" and e.egress_info.egress_id == started.egress_id
    ]
    assert ended and ended[0].egress_info.status == pe.EGRESS_LIMIT_REACHED


async def test_pyegress_control_pauses_an_egress_a_worker_runs(cluster: Cluster, room_name: str) -> None:
    """LiveKit's protocol has no pause: pyegress's own psrpc methods on the cluster's Redis reach
    the worker running the egress, and the paused span is cut from its file."""
    redis = RedisConfig(address=cluster.redis.address)
    paused_for = 1.5
    async with (
        publisher(cluster.server, room_name) as pub,
        cluster.api() as lk,
        control.connect(redis) as ctl,
    ):
        started = await lk.egress.start_track_composite_egress(
            api.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                video_track_id=pub.video_track_sid,
                advanced=SMALL,
                file_outputs=[api.EncodedFileOutput(filepath="{room_name}-paused.mp4")],
            )
        )
        egress_id = started.egress_id
        await _active(cluster, egress_id)
        await asyncio.sleep(2.3)
        answer = await ctl.pause_egress(egress_id)
        assert answer.egress_id == egress_id and answer.status == pe.EGRESS_ACTIVE
        await asyncio.sleep(paused_for)
        await ctl.resume_egress(egress_id)
        await asyncio.sleep(2.3)
        # the command: a mark goes to the events sidecar, which these workers do not write
        config = f"api_key: k\napi_secret: s\nws_url: ws://h\nredis:\n  address: {cluster.redis.address}\n"
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyegress.cli", "control", "mark", egress_id, "--label", "x",
            "--config-body", config, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await cli.communicate()
        assert cli.returncode == 1 and err.startswith(b"error: sidecars: marks go to the events"), (out, err)
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
        with pytest.raises(EgressNotFoundError, match="no worker runs"):
            await control.WorkerControl(ctl.bus, timeout=1.0).pause_egress("EG_nowhere")
    final = await _complete(cluster, egress_id)
    encoded = manifest(final.file_results[0].filename)["quality"]["outputs"][0]["video_frames"] / 30
    check_cut(final, encoded, paused_for)
