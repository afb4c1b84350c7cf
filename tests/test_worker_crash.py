"""``pyegress worker`` when things go wrong: SIGTERM (drain), SIGKILL (state file, FAILED on the
next start) and a Redis restart mid-recording, in a real cluster (Debian's redis-server,
livekit-server with a ``redis:`` section, worker subprocesses, ``livekit-api`` as the client, all
inside the tests' network namespace); and the worker's IOInfo reporting against a psrpc server
of our own on a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
import redis.asyncio as aioredis
from livekit import api, rtc
from livekit.protocol import egress as pe

from pyegress.errors import EgressError, InvalidRequestError
from pyegress.testing import LiveKitServer, netns, probe
from pyegress.testing.ports import free_tcp_port
from pyegress.testing.redis_server import RedisServer
from pyegress.worker.config import parse_config
from pyegress.worker.egress import EgressWorker, _Egress
from pyegress.worker.proto import StartEgressRequest
from pyegress.worker.psrpc import Bus, RpcError
from pyegress.worker.state import DEFAULT_NAME

from .helpers import publisher, status

pytestmark = pytest.mark.integration

ENDED: set[int] = {pe.EGRESS_COMPLETE, pe.EGRESS_FAILED, pe.EGRESS_ABORTED, pe.EGRESS_LIMIT_REACHED}


@dataclass
class Worker:
    """A ``pyegress worker`` subprocess with its health port (answers once it serves)."""

    out: Path
    log: Path
    health_port: int
    body: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        cmd = [sys.executable, "-m", "pyegress.cli", "worker", "--config-body", self.body]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        return self

    async def health(self) -> tuple[int, dict[str, Any]] | None:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.health_port}/") as r:
                return r.status, await r.json()
        except aiohttp.ClientError:
            return None

    async def until(
        self, wanted: Callable[[int, dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            answer = await self.health()
            if answer is not None and wanted(*answer):
                return answer[1]
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker health {answer}, exit {self.proc.poll()}: {self.tail()}")
            await asyncio.sleep(0.1)

    async def serving(self) -> Worker:
        await self.until(lambda code, _: code == 200)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def exit_code(self, timeout: float) -> int:
        assert self.proc is not None
        proc = self.proc
        return await asyncio.to_thread(proc.wait, timeout)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / DEFAULT_NAME).read_text())
        return data


@dataclass
class Cluster:
    server: LiveKitServer
    redis: RedisServer
    root: Path
    workers: list[Worker]

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.server.url, self.server.api_key, self.server.api_secret)

    def worker(self, name: str, *extra: str) -> Worker:
        """A worker (not started) writing into ``root/name``; ``extra`` lines join its config."""
        out = self.root / name
        port = free_tcp_port()
        body = "\n".join(
            [
                f"api_key: {self.server.api_key}",
                f"api_secret: {self.server.api_secret}",
                f"ws_url: {self.server.url}",
                "redis:",
                f"  address: {self.redis.address}",
                f"output_dir: {out}",
                f"health_port: {port}",
                "log_level: info",
                *extra,
            ]
        )
        w = Worker(out, self.root / f"{name}.log", port, body)
        self.workers.append(w)
        return w


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as redis:
        yield redis


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[LiveKitServer]:
    if netns.current() is None:
        pytest.fail("WebRTC tests run inside a network namespace (scripts/test.sh does)", pytrace=False)
    lk = LiveKitServer(redis_address=redis_server.address)
    lk.start()
    try:
        yield lk
    finally:
        lk.stop()


@pytest.fixture
async def cluster(server: LiveKitServer, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    """This test's workers on the module's server; any still running at the end are killed."""
    c = Cluster(server, redis_server, tmp_path, [])
    try:
        yield c
    finally:
        for w in c.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()


async def _until(
    lk: api.LiveKitAPI, egress_id: str, wanted: set[Any], timeout: float
) -> pe.EgressInfo | None:
    """The server's info once its status is in ``wanted`` (else the last one, None if unknown).
    Server errors are retried until ``timeout``: right after a Redis restart livekit-server's
    Redis client answers its last dial error for a moment."""
    deadline = time.monotonic() + timeout
    info = None
    while True:
        try:
            res = await lk.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))
            info = res.items[0] if res.items else None
        except api.TwirpError:
            if time.monotonic() > deadline:
                raise
        if (info is not None and info.status in wanted) or time.monotonic() > deadline:
            return info
        await asyncio.sleep(0.2)


def _request(track_sids: tuple[str | None, ...], path: str) -> api.TrackCompositeEgressRequest:
    audio, video = track_sids
    return api.TrackCompositeEgressRequest(
        room_name="",
        audio_track_id=audio or "",
        video_track_id=video or "",
        advanced=api.EncodingOptions(
            width=320, height=240, framerate=15, video_bitrate=300, key_frame_interval=1
        ),
        file_outputs=[api.EncodedFileOutput(filepath=path)],
    )


async def _start(lk: api.LiveKitAPI, room: str, pub: Any, path: str) -> pe.EgressInfo:
    req = _request((pub.audio_track_sid, pub.video_track_sid), path)
    req.room_name = room
    info = await lk.egress.start_track_composite_egress(req)
    active = await _until(lk, info.egress_id, {pe.EGRESS_ACTIVE, *ENDED}, 20)
    assert active is not None and status(active) == "EGRESS_ACTIVE", active
    return active


def _decoded_seconds(path: Path, *, partial: bool = False) -> float:
    """Seconds of video and of audio the file decodes to (every frame decoded), the shorter.

    ``partial``: a file whose writer was killed ends in a cut fragment; decoding stops at the
    first packet of it that does not decode (a player stops there too)."""
    ends = {"video": 0.0, "audio": 0.0}
    with av.open(str(path)) as c:
        assert c.streams.video and c.streams.audio, path
        try:
            for packet in c.demux(c.streams.video[0], c.streams.audio[0]):
                for frame in packet.decode():
                    if frame.time is not None:
                        ends[packet.stream.type] = max(ends[packet.stream.type], float(frame.time))
        except av.error.InvalidDataError:
            if not partial:
                raise
    return min(ends.values())


async def test_sigterm_stops_claiming_drains_then_completes_and_exits_0(
    cluster: Cluster, room_name: str
) -> None:
    drain = 40.0  # the refused request takes the server's three tries, 21-25 s
    a = await cluster.worker("a", f"drain_timeout: {drain:g}s").start().serving()
    async with publisher(cluster.server, room_name) as pub, cluster.api() as lk:
        e1 = await _start(lk, room_name, pub, "{room_name}/drained.mp4")
        t_term = time.monotonic()
        a.signal(signal.SIGTERM)
        draining = await a.until(lambda code, body: code == 503 and body["status"] == "draining", 5)
        assert [e["egress_id"] for e in draining["active"]] == [e1.egress_id]
        # with only this worker, a new request finds no worker claiming it
        t0 = time.monotonic()
        with pytest.raises(api.TwirpError) as refused:
            await lk.egress.start_track_composite_egress(
                api.TrackCompositeEgressRequest(
                    room_name=room_name,
                    audio_track_id=pub.audio_track_sid,
                    file_outputs=[api.EncodedFileOutput(filepath="{room_name}/refused.mp4")],
                )
            )
        refused_after = time.monotonic() - t0
        print(f"refused after {refused_after:.1f} s: {refused.value.code} {refused.value.message}")
        assert refused.value.code == "unavailable", refused.value
        draining = await a.until(lambda code, _: code == 503, 1)
        assert [e["egress_id"] for e in draining["active"]] == [e1.egress_id]
        # with another worker up, the next request goes there
        b = await cluster.worker("b").start().serving()
        e3 = await _start(lk, room_name, pub, "{room_name}/other.mp4")
        assert time.monotonic() - t_term < drain, "the drain ended before the test could check it"
        still = await _until(lk, e1.egress_id, set(), 0)
        assert still is not None and status(still) == "EGRESS_ACTIVE"  # recording through the drain
        assert await a.exit_code(drain + 20) == 0, a.tail()
        exited_after = time.monotonic() - t_term
        final = await _until(lk, e1.egress_id, ENDED, 10)
        assert final is not None and status(final) == "EGRESS_COMPLETE", final
        assert final.ended_at > 0 and final.file_results[0].duration > 0
        path = Path(final.file_results[0].filename)
        assert path.is_relative_to(a.out)
        seconds = _decoded_seconds(path)
        assert seconds > drain - 3, seconds  # it kept recording until the drain timed out
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=e3.egress_id))
        other = await _until(lk, e3.egress_id, ENDED, 20)
        assert other is not None and status(other) == "EGRESS_COMPLETE", other
        assert Path(other.file_results[0].filename).is_relative_to(b.out)
    print(f"SIGTERM -> exit 0 after {exited_after:.1f} s (drain {drain:g} s)")
    b.signal(signal.SIGTERM)
    assert await b.exit_code(30) == 0, b.tail()
    assert a.state()["egresses"] == {} and b.state()["egresses"] == {}


async def test_sigkill_leaves_playable_files_and_the_restart_reports_them_failed(
    cluster: Cluster, room_name: str
) -> None:
    a = await cluster.worker("a").start().serving()
    async with publisher(cluster.server, room_name) as pub, cluster.api() as lk:
        started = [await _start(lk, room_name, pub, f"{{room_name}}/killed{i}.mp4") for i in range(2)]
        ids = sorted(e.egress_id for e in started)
        files = [a.out / room_name / f"killed{i}.mp4" for i in range(2)]
        await asyncio.sleep(5.0)  # ACTIVE for 5 s: each fragment (a key frame each 1 s) is on disk when cut
        print("on disk before SIGKILL:", [f.stat().st_size for f in files])
        state = a.state()
        assert sorted(state["egresses"]) == ids
        node_ids = {e["node_id"] for e in state["egresses"].values()}
        assert len(node_ids) == 1 and next(iter(node_ids)).startswith("EW_")
        node_id = node_ids.pop()
        assert all(e["room_name"] == room_name and e["request"] == "track_composite"
                   for e in state["egresses"].values())  # fmt: skip
        a.signal(signal.SIGKILL)
        assert await a.exit_code(10) == -signal.SIGKILL
        for f in files:  # fragmented MP4: what was written decodes
            seconds = _decoded_seconds(f, partial=True)
            assert seconds > 3.0, seconds  # up to the last key frame cut (1 s apart) of 5 s recorded
        listed = await lk.egress.list_egress(api.ListEgressRequest(room_name=room_name, active=True))
        assert sorted(i.egress_id for i in listed.items) == ids  # the server cannot know
        t0 = time.monotonic()
        a.start()
        await a.serving()
        finals = [await _until(lk, i, ENDED, 15) for i in ids]
        reported_after = time.monotonic() - t0
        for final in finals:
            assert final is not None and status(final) == "EGRESS_FAILED", final
            assert final.error == f"worker {node_id} died while recording"
            assert final.ended_at > final.started_at > 0 and final.room_name == room_name
        listed = await lk.egress.list_egress(api.ListEgressRequest(room_name=room_name, active=True))
        assert list(listed.items) == []
        await a.until(lambda *_: a.state()["egresses"] == {}, 5)
        # the restarted worker serves new requests
        fresh = await _start(lk, room_name, pub, "{room_name}/after.mp4")
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=fresh.egress_id))
        done = await _until(lk, fresh.egress_id, ENDED, 20)
        assert done is not None and status(done) == "EGRESS_COMPLETE", done
    print(f"restarted worker reported both FAILED {reported_after:.1f} s after starting")
    a.signal(signal.SIGTERM)
    assert await a.exit_code(30) == 0, a.tail()


async def test_a_start_egress_resent_while_starting_gets_the_first_starts_answer(
    server: LiveKitServer,
    redis_server: RedisServer,
    room_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """livekit-server re-sends StartEgress (same egress id, new request id) when the first try
    times out. A re-send reaching the worker while the first is still starting must get the
    first's answer (or its error), not start the egress again. A worker in this process on the
    real Redis and server; a psrpc Bus plays the server's two tries. The one stand-in: the
    service's start is held open until the re-send arrived (``EgressService`` starts without
    waiting today, so no real start is slow enough to catch the second try in the middle)."""
    caplog.set_level(logging.INFO, logger="pyegress.worker")
    config = parse_config(
        {"api_key": server.api_key, "api_secret": server.api_secret, "ws_url": server.url,
         "redis": {"address": redis_server.address}, "output_dir": str(tmp_path)}
    )  # fmt: skip
    client = aioredis.Redis.from_url(redis_server.url)
    worker_bus, caller = Bus(client, "EW_resend"), Bus(client, "test-resender")
    await worker_bus.start()
    await caller.start()
    worker = EgressWorker(config, worker_bus)
    await worker.start()
    real_start = worker.service.start_track_composite_egress
    gate, entered = asyncio.Event(), asyncio.Event()

    async def held(request: Any, *, egress_id: str) -> pe.EgressInfo:
        entered.set()
        await gate.wait()
        if request.file_outputs[0].filepath == "refused":
            raise InvalidRequestError("file_outputs[0].filepath", "refused by the test")
        return await real_start(request, egress_id=egress_id)

    monkeypatch.setattr(worker.service, "start_track_composite_egress", held)

    async def twice(request: Any) -> list[bytes | BaseException]:
        """The same request twice, the second while the first is held in the service's start."""
        raw = request.SerializeToString()
        gate.clear()
        entered.clear()
        caplog.clear()
        first = asyncio.create_task(caller.call("EgressInternal", "StartEgress", "", raw, timeout=10))
        await asyncio.wait_for(entered.wait(), 5)
        second = asyncio.create_task(caller.call("EgressInternal", "StartEgress", "", raw, timeout=10))
        deadline = time.monotonic() + 5
        while "re-sent while starting" not in caplog.text:
            assert time.monotonic() < deadline and not second.done(), "the re-send did not wait"
            await asyncio.sleep(0.02)
        assert not first.done()
        gate.set()
        return list(await asyncio.gather(first, second, return_exceptions=True))

    try:
        async with (
            publisher(server, room_name, video=False) as pub,
            api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk,
        ):
            room = (await lk.room.list_rooms(api.ListRoomsRequest(names=[room_name]))).rooms[0]
            request: Any = StartEgressRequest()
            request.room_id = room.sid
            tc = api.TrackCompositeEgressRequest(room_name=room_name, audio_track_id=pub.audio_track_sid)
            tc.file_outputs.append(
                api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath="refused")
            )
            request.egress_id = "EG_refused_" + os.urandom(4).hex()
            request.track_composite.ParseFromString(tc.SerializeToString())
            errors = await twice(request)
            assert all(isinstance(e, RpcError) for e in errors), errors
            assert [(e.code, e.message) for e in errors if isinstance(e, RpcError)] == [
                ("invalid_argument", "file_outputs[0].filepath: refused by the test")
            ] * 2
            assert worker.egresses == {}, "a failed start frees its cores"

            tc.file_outputs[0].filepath = "resent"
            request.egress_id = egress_id = "EG_resent_" + os.urandom(4).hex()
            request.track_composite.ParseFromString(tc.SerializeToString())
            first, second = await twice(request)
            assert isinstance(first, bytes) and first == second
            info = pe.EgressInfo.FromString(first)
            assert info.egress_id == egress_id and info.room_id == room.sid
            assert list(worker.egresses) == [egress_id]
            active = await _until(lk, egress_id, {pe.EGRESS_ACTIVE, *ENDED}, 15)
            assert active is not None and status(active) == "EGRESS_ACTIVE", active
            await asyncio.sleep(2.0)
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
            final = await _until(lk, egress_id, ENDED, 20)
    finally:
        await worker.drain(5)
        await worker.close()
        await caller.close()
        await worker_bus.close()
        await client.aclose()
    assert final is not None and status(final) == "EGRESS_COMPLETE", final
    (result,) = final.file_results
    assert sorted(tmp_path.rglob("*.ogg")) == [Path(result.filename)], "one recording"
    media = probe(result.filename)
    assert media.audio is not None and media.audio.codec == "opus"
    assert abs(media.duration - result.duration / 1e9) < 0.3 and media.duration > 1.5


async def test_an_egress_id_starts_on_one_worker_of_two(
    server: LiveKitServer,
    redis_server: RedisServer,
    room_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers get the same StartEgress (livekit-server re-sends it, and any worker may get
    the re-send): the egress runs once. The first start's worker holds the egress id's claim in
    Redis, so the other does not claim a re-send (here the first's subscription is down, as
    when its Redis connection drops, so only the other hears it), and handed it all the same
    (it lost an affinity race) answers the first's answer without starting anything. A failed
    start releases the claim, so the next try starts it on the other. Two workers in this
    process on the real Redis and server, a psrpc Bus as the server's tries; the one stand-in: the
    failed start (a refusing service method: no real start fails before it returns)."""

    def config(name: str) -> Any:
        return parse_config(
            {"api_key": server.api_key, "api_secret": server.api_secret, "ws_url": server.url,
             "redis": {"address": redis_server.address}, "output_dir": str(tmp_path / name)}
        )  # fmt: skip

    client = aioredis.Redis.from_url(redis_server.url)
    buses = [Bus(client, "EW_claim_a"), Bus(client, "EW_claim_b"), Bus(client, "test-resender")]
    for bus in buses:
        await bus.start()
    caller = buses[2]
    workers = [EgressWorker(config(name), bus) for name, bus in zip("ab", buses[:2], strict=True)]
    for worker in workers:
        await worker.start()

    def start_request(room_id: str, tc: api.TrackCompositeEgressRequest, path: str) -> tuple[str, bytes]:
        request: Any = StartEgressRequest()
        request.room_id = room_id
        request.egress_id = f"EG_{path}_{os.urandom(4).hex()}"
        tc.file_outputs[0].filepath = path
        request.track_composite.ParseFromString(tc.SerializeToString())
        return request.egress_id, request.SerializeToString()

    try:
        async with (
            publisher(server, room_name, video=False) as pub,
            api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk,
        ):
            room = (await lk.room.list_rooms(api.ListRoomsRequest(names=[room_name]))).rooms[0]
            tc = api.TrackCompositeEgressRequest(room_name=room_name, audio_track_id=pub.audio_track_sid)
            tc.file_outputs.append(api.EncodedFileOutput(file_type=api.EncodedFileType.OGG))
            once, raw = start_request(room.sid, tc, "once")
            first = await caller.call(
                "EgressInternal", "StartEgress", "", raw, timeout=10, affinity_timeout=1
            )
            home, other = sorted(workers, key=lambda w: once not in w.egresses)
            assert once in home.egresses and other.egresses == {}
            await home._served[0].stop()  # StartEgress: only the other worker hears the re-send
            with pytest.raises(RpcError) as unclaimed:
                await caller.call("EgressInternal", "StartEgress", "", raw, timeout=3, affinity_timeout=1)
            assert unclaimed.value.code == "deadline_exceeded", unclaimed.value
            assert await other._start_egress(raw) == first  # handed it anyway: the first's answer
            assert other.egresses == {}

            async def refuse(request: Any, *, egress_id: str) -> pe.EgressInfo:
                raise EgressError("refused by the test")

            moved, raw = start_request(room.sid, tc, "moved")
            monkeypatch.setattr(home.service, "start_track_composite_egress", refuse)
            with pytest.raises(RpcError, match="refused by the test"):
                await home._start_egress(raw)
            second = pe.EgressInfo.FromString(await other._start_egress(raw))
            assert second.egress_id == moved and list(other.egresses) == [moved]
            assert home.egresses.keys() == {once}
            for egress_id in (once, moved):
                active = await _until(lk, egress_id, {pe.EGRESS_ACTIVE, *ENDED}, 15)
                assert active is not None and status(active) == "EGRESS_ACTIVE", active
            await asyncio.sleep(2.0)
            for egress_id in (once, moved):
                await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
            finals = [await _until(lk, egress_id, ENDED, 20) for egress_id in (once, moved)]
    finally:
        for worker in workers:
            await worker.drain(5)
            await worker.close()
        for bus in buses:
            await bus.close()
        await client.aclose()
    homes = {"once": home.config.output_dir, "moved": other.config.output_dir}
    assert sorted(tmp_path.rglob("*.ogg")) == sorted(homes[p] / f"{p}.ogg" for p in homes), "each once"
    for final in finals:
        assert final is not None and status(final) == "EGRESS_COMPLETE", final
        (result,) = final.file_results
        media = probe(result.filename)
        assert media.audio is not None and media.audio.codec == "opus" and media.duration > 1.5


async def _joined(server: LiveKitServer, room: str, identity: str, timeout: float) -> Any:
    """A started publisher, retried while the server answers 500 (just after a Redis restart)."""
    deadline = time.monotonic() + timeout
    while True:
        pub = publisher(server, room, identity=identity)
        try:
            await pub.start()
            return pub
        except rtc.ConnectError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def test_a_redis_restart_mid_recording_loses_no_update(cluster: Cluster, room_name: str) -> None:
    # an egress whose room connection is lost (Redis away: livekit-server cannot take it back)
    # fails after reconnect_timeout, not retried
    a = await cluster.worker("a", "reconnect_timeout: 5s", "max_retries: 0").start().serving()
    async with publisher(cluster.server, room_name, identity="bob") as pub, cluster.api() as lk:
        kept = await _start(lk, room_name, pub, "{room_name}/kept.mp4")
        t_kept = time.monotonic()
        await asyncio.sleep(2.0)
        t0 = time.monotonic()
        await asyncio.to_thread(cluster.redis.restart)  # a Redis without persistence: empty again
        restart_s = time.monotonic() - t0
        # the worker sent it again: the server knows it, by id and by room, and can stop it
        again = await _until(lk, kept.egress_id, {pe.EGRESS_ACTIVE}, 15)
        assert again is not None and status(again) == "EGRESS_ACTIVE", again
        resynced_s = time.monotonic() - t0
        listed = await lk.egress.list_egress(api.ListEgressRequest(room_name=room_name, active=True))
        assert [i.egress_id for i in listed.items] == [kept.egress_id]
        # a new request after the restart is served by the same worker process (in a new room:
        # the server's store lost the old one, it answers "requested room does not exist")
        # and once livekit-server itself accepts participants again (its node is re-registered)
        pub2 = await _joined(cluster.server, room_name + "-after", "dave", 20)
        try:
            fresh = await _start(lk, room_name + "-after", pub2, "{room_name}/fresh.mp4")
            await asyncio.sleep(2.0)
            t_stop = time.monotonic()
            for e in (kept, fresh):
                await lk.egress.stop_egress(api.StopEgressRequest(egress_id=e.egress_id))
            done = [await _until(lk, e.egress_id, ENDED, 20) for e in (kept, fresh)]
        finally:
            await pub2.stop()
        files = []
        for d in done:
            assert d is not None and status(d) == "EGRESS_COMPLETE", d
            files.append(Path(d.file_results[0].filename))
            assert files[-1].is_relative_to(a.out)
        assert _decoded_seconds(files[0]) > t_stop - t_kept - 3  # it recorded through the restart
        assert _decoded_seconds(files[1]) > 1.0

    # Redis away for longer: livekit-server drops the room, the egress ends meanwhile, and its
    # final update waits in the worker until Redis is back
    async with publisher(cluster.server, room_name, identity="carol") as pub, cluster.api() as lk:
        held = await _start(lk, room_name, pub, "{room_name}/held.mp4")
        await asyncio.sleep(2.0)
        t_down = time.monotonic()
        await asyncio.to_thread(cluster.redis.stop, cleanup=False)
        await pub.stop()
        pending = await a.until(
            lambda _, body: any(e["egress_id"] == held.egress_id and e["status"] in
                                ("EGRESS_COMPLETE", "EGRESS_FAILED") for e in body["active"]),
            30,
        )  # fmt: skip
        await asyncio.to_thread(cluster.redis.start)
        t_up = time.monotonic()
        final = await _until(lk, held.egress_id, ENDED, 30)
        delivered_s = time.monotonic() - t_up
        assert final is not None, "the final update never reached the server"
        ended_here = next(e["status"] for e in pending["active"] if e["egress_id"] == held.egress_id)
        # the room connection went with Redis and did not come back: FAILED, saying so
        assert status(final) == ended_here == "EGRESS_FAILED", (final, ended_here)
        assert "not regained" in final.error, final.error
        assert final.ended_at > 0 and _decoded_seconds(Path(final.file_results[0].filename)) > 1.5
    await a.until(lambda _, body: body["active"] == [], 10)
    print(
        f"Redis restart {restart_s:.1f} s, running egress known again {resynced_s:.1f} s after it; "
        f"Redis down {t_up - t_down:.1f} s, held final update delivered {delivered_s:.1f} s after"
    )
    a.signal(signal.SIGTERM)
    assert await a.exit_code(30) == 0, a.tail()


# --- the reporter, against a psrpc IOInfo server of our own on a real Redis ---------------------


def _info(egress_id: str, state: int, n: int) -> pe.EgressInfo:
    return pe.EgressInfo(egress_id=egress_id, room_name="r", status=state, updated_at=n)  # type: ignore[arg-type]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test alone: on the module's one, livekit-server would serve IOInfo."""
    with RedisServer() as redis:
        yield redis


async def test_io_retries_are_logged_once_each_and_the_final_update_is_never_skipped(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    server_bus, worker_bus = Bus(client, "IO_test"), Bus(client, "EW_test")
    await server_bus.start()
    await worker_bus.start()
    config = parse_config(
        {"api_key": "k", "api_secret": "s", "ws_url": "ws://127.0.0.1:1", "redis": {"address": "x:1"},
         "output_dir": str(tmp_path)}
    )  # fmt: skip
    worker = EgressWorker(config, worker_bus)
    creates: list[pe.EgressInfo] = []
    updates: list[pe.EgressInfo] = []

    async def create(raw: bytes) -> bytes:
        creates.append(pe.EgressInfo.FromString(raw))
        if len(creates) <= 2:
            raise RpcError("unavailable", f"store down #{len(creates)}")
        return b""

    async def update(raw: bytes) -> bytes:
        updates.append(pe.EgressInfo.FromString(raw))
        await asyncio.sleep(0.3)  # a slow server: updates pile up meanwhile
        return b""

    served = [
        await server_bus.serve("IOInfo", "CreateEgress", "", create, affinity=lambda _: 1.0),
        await server_bus.serve("IOInfo", "UpdateEgress", "", update, affinity=lambda _: 1.0),
    ]
    try:
        caplog.set_level(logging.WARNING, logger="pyegress.worker")
        egress_id = "EG_reporter"
        first = _info(egress_id, pe.EGRESS_STARTING, 0)
        worker.egresses[egress_id] = entry = _Egress(0.5, slot="track", latest=first)
        reporter = asyncio.create_task(worker._report(egress_id, first))
        deadline = time.monotonic() + 15
        while len(creates) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(creates) == 3, creates
        saved = json.loads((tmp_path / DEFAULT_NAME).read_text())["egresses"]
        assert list(saved) == [egress_id] and saved[egress_id]["request"] == "track"
        for n in range(1, 31):
            worker._on_info(_info(egress_id, pe.EGRESS_ACTIVE, n))
            await asyncio.sleep(0.02)
        worker._on_info(_info(egress_id, pe.EGRESS_COMPLETE, 31))
        await asyncio.wait_for(reporter, 10)
        assert egress_id not in worker.egresses and entry.latest is not None
    finally:
        for s in served:
            await s.stop()
        await worker_bus.close()
        await server_bus.close()
        await client.aclose()
    retries = [r.getMessage() for r in caplog.records if "IOInfo.CreateEgress" in r.getMessage()]
    assert len(retries) == 2, retries  # one line per retry, with the server's reason
    assert "store down #1" in retries[0] and "store down #2" in retries[1]
    stamps = [u.updated_at for u in updates]
    assert stamps == sorted(stamps) and len(stamps) < 31, stamps  # in order, the latest wins
    assert updates[-1].status == pe.EGRESS_COMPLETE and updates[-1].updated_at == 31
    assert json.loads((tmp_path / DEFAULT_NAME).read_text())["egresses"] == {}


def test_drain_timeout_and_state_file_are_config_keys(tmp_path: Path) -> None:
    base = {"api_key": "k", "api_secret": "s", "ws_url": "ws://h", "redis": {"address": "h:1"},
            "output_dir": str(tmp_path)}  # fmt: skip
    default = parse_config(base)
    assert default.drain_timeout == 60.0 and default.state_path == tmp_path / DEFAULT_NAME
    custom = parse_config({**base, "drain_timeout": "2m30s", "state_file": str(tmp_path / "s.json")})
    assert custom.drain_timeout == 150.0 and custom.state_path == tmp_path / "s.json"
    with pytest.raises(Exception, match="drain_timeout"):
        parse_config({**base, "drain_timeout": "soon"})


def test_reconnect_timeout_and_max_retries_are_config_keys(tmp_path: Path) -> None:
    base = {"api_key": "k", "api_secret": "s", "ws_url": "ws://x", "redis": {"address": "127.0.0.1:1"}}
    default = parse_config(base)
    assert (default.reconnect_timeout, default.max_retries) == (30.0, 1)
    custom = parse_config({**base, "reconnect_timeout": "1m", "max_retries": 0})
    assert (custom.reconnect_timeout, custom.max_retries) == (60.0, 0)
    with pytest.raises(Exception, match="max_retries"):
        parse_config({**base, "max_retries": -1})
    with pytest.raises(Exception, match="reconnect_timeout"):
        parse_config({**base, "reconnect_timeout": "later"})
