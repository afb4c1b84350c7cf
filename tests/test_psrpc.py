"""psrpc over a real Redis: channel names, the claim flow, multi, queue, expiry, errors, Redis
restarts, and livekit-server v1.13.5 itself calling a served StartEgress."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from livekit import api
from livekit.protocol import egress as lk_egress
from redis.asyncio.client import PubSub

from pyegress.testing.redis_server import RedisCluster, RedisServer, RedisServerError
from pyegress.testing.server import LiveKitServer
from pyegress.worker import proto
from pyegress.worker.config import RedisConfig
from pyegress.worker.psrpc import Bus, RpcError, channel
from pyegress.worker.redis_clients import make_cluster_keys, make_redis


def test_channel_names() -> None:
    assert channel("EgressInternal", "StartEgress", "", "REQ") == "EgressInternal|StartEgress|REQ"
    assert channel("EgressHandler", "StopEgress", "EG_ab12", "REQ") == "EgressHandler|StopEgress|EG_ab12|REQ"
    assert channel("IOInfo", "CLI_x", "CLAIM") == "IOInfo|CLI_x|CLAIM"
    assert channel("S", "M", "a-b.c", "RCLAIM") == "S|M|au+002dbu+002ec|RCLAIM"
    assert channel("S", "é😀", "RES") == "S|u+00e9U+0001f600|RES"
    assert channel("", "S", "", "", "REQ") == "S|REQ"


integration = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def make_bus(redis_server: RedisServer) -> AsyncIterator[Callable[[str], Awaitable[Bus]]]:
    """Buses (each with a Redis client of its own, as separate workers have), closed after the test."""
    made: list[tuple[Bus, redis.asyncio.Redis]] = []

    async def make(node_id: str) -> Bus:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        bus = Bus(client, node_id)
        await bus.start()
        made.append((bus, client))
        return bus

    yield make
    for bus, client in made:
        await bus.close()
        await client.aclose()


def _service() -> str:
    return "Test" + uuid.uuid4().hex[:8]  # fresh channels per test: nothing leaks between tests


async def _echo(raw: bytes) -> bytes:
    if raw == b"bad":
        raise RpcError("invalid_argument", "field x is bad")
    if raw == b"boom":
        raise RuntimeError("it broke")
    return b"echo:" + raw


@integration
async def test_call_claim_response_and_errors(make_bus: Callable[[str], Awaitable[Bus]]) -> None:
    server, client = await make_bus("SRV_a"), await make_bus("CLI_b")
    svc = _service()
    served = await server.serve(svc, "Echo", "", _echo, affinity=lambda _: 0.5)
    assert await client.call(svc, "Echo", "", b"hi", timeout=3) == b"echo:hi"
    with pytest.raises(RpcError) as err:
        await client.call(svc, "Echo", "", b"bad", timeout=3)
    assert (err.value.code, err.value.message) == ("invalid_argument", "field x is bad")
    with pytest.raises(RpcError) as err:
        await client.call(svc, "Echo", "", b"boom", timeout=3)
    assert (err.value.code, err.value.message) == ("internal", "it broke")
    # topics are channels of their own
    with pytest.raises(RpcError) as err:
        await client.call(svc, "Echo", "other-topic", b"hi", timeout=0.5)
    assert err.value.code == "deadline_exceeded"
    await served.stop()
    with pytest.raises(RpcError) as err:
        await client.call(svc, "Echo", "", b"hi", timeout=0.5)
    assert err.value.code == "deadline_exceeded"


@integration
async def test_slow_handler_blocks_nothing(make_bus: Callable[[str], Awaitable[Bus]]) -> None:
    svc = _service()
    release = asyncio.Event()

    async def handler(raw: bytes) -> bytes:
        if raw == b"slow":
            await release.wait()
        return raw

    server, client = await make_bus("SRV_s"), await make_bus("CLI_s")
    await server.serve(svc, "M", "", handler, affinity=lambda _: 1.0)
    slow = asyncio.create_task(client.call(svc, "M", "", b"slow", timeout=5))
    assert await client.call(svc, "M", "", b"fast", timeout=1) == b"fast"
    assert not slow.done()
    release.set()
    assert await slow == b"slow"


@integration
async def test_affinity_picks_the_highest_and_none_never_claims(
    make_bus: Callable[[str], Awaitable[Bus]],
) -> None:
    svc = _service()
    handled: Counter[str] = Counter()

    async def serve(node: str, affinity: float | None) -> None:
        bus = await make_bus(node)

        async def handler(raw: bytes) -> bytes:
            handled[node] += 1
            return node.encode()

        await bus.serve(svc, "Start", "", handler, affinity=lambda _: affinity)

    await serve("SRV_low", 0.5)
    await serve("SRV_high", 0.8)
    await serve("SRV_none", None)
    client = await make_bus("CLI_c")
    for _ in range(4):
        assert await client.call(svc, "Start", "", b"", timeout=3, affinity_timeout=0.3) == b"SRV_high"
    assert handled == {"SRV_high": 4}

    # with nobody else claiming, the only claimer handles; a None-affinity server alone never does
    svc2 = _service()
    none_bus, low_bus = await make_bus("SRV_none2"), await make_bus("SRV_low2")
    await none_bus.serve(svc2, "Start", "", _echo, affinity=lambda _: None)
    with pytest.raises(RpcError) as err:
        await client.call(svc2, "Start", "", b"x", timeout=0.7)
    assert err.value.code == "deadline_exceeded"
    await low_bus.serve(svc2, "Start", "", _echo, affinity=lambda _: 0.1)
    assert await client.call(svc2, "Start", "", b"x", timeout=3) == b"echo:x"


@integration
async def test_multi_every_server_answers(make_bus: Callable[[str], Awaitable[Bus]]) -> None:
    svc = _service()
    for node, ids in (("SRV_1", ["EG_a"]), ("SRV_2", ["EG_b", "EG_c"])):
        bus = await make_bus(node)

        async def handler(raw: bytes, ids: list[str] = ids) -> bytes:
            proto.ListActiveEgressRequest.FromString(raw)
            return proto.ListActiveEgressResponse(egress_ids=ids).SerializeToString()

        await bus.serve(svc, "ListActiveEgress", "", handler, multi=True)
    client = await make_bus("CLI_m")
    answers = await client.call_multi(
        svc, "ListActiveEgress", "", proto.ListActiveEgressRequest().SerializeToString(), timeout=1
    )
    found: list[str] = []
    for raw in answers:
        res: Any = proto.ListActiveEgressResponse.FromString(raw)
        found += res.egress_ids
    assert sorted(found) == ["EG_a", "EG_b", "EG_c"]


async def _publish_request(
    client: redis.asyncio.Redis, svc: str, method: str, request_id: str, *, expiry_ns: int, raw: bytes = b""
) -> None:
    """A psrpc request published by hand, as another client's would be."""
    req = proto.Request(
        request_id=request_id, client_id="CLI_raw", sent_at=time.time_ns(), expiry=expiry_ns, raw_request=raw
    )
    msg = proto.Msg(type_url="type.googleapis.com/internal.Request", value=req.SerializeToString())
    await client.publish(channel(svc, method, "", "REQ"), msg.SerializeToString())


async def _subscribe_responses(client: redis.asyncio.Redis, svc: str) -> PubSub:
    """CLI_raw's RES channel, subscribed (confirmed) when this returns."""
    pubsub = client.pubsub()
    await pubsub.subscribe(channel(svc, "CLI_raw", "RES"))
    confirmation = await pubsub.get_message(timeout=2)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    return pubsub


async def _collect(pubsub: PubSub, wait: float) -> list[Any]:
    """The responses received within ``wait``."""
    out: list[Any] = []
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if m is not None:
            outer: Any = proto.Msg.FromString(m["data"])
            out.append(proto.Response.FromString(outer.value))
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    return out


@integration
async def test_expired_requests_are_dropped(
    make_bus: Callable[[str], Awaitable[Bus]], redis_server: RedisServer
) -> None:
    svc = _service()
    handled: list[bytes] = []

    async def handler(raw: bytes) -> bytes:
        handled.append(raw)
        return raw

    bus = await make_bus("SRV_e")
    await bus.serve(svc, "M", "", handler, multi=True)
    raw_client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        pubsub = await _subscribe_responses(raw_client, svc)
        await _publish_request(raw_client, svc, "M", "REQ_old", expiry_ns=time.time_ns() - 1, raw=b"old")
        await _publish_request(raw_client, svc, "M", "REQ_new", expiry_ns=time.time_ns() + 10**9, raw=b"new")
        responses = await _collect(pubsub, 1.0)
    finally:
        await raw_client.aclose()
    assert handled == [b"new"]
    assert [(r.request_id, r.raw_response) for r in responses] == [("REQ_new", b"new")]


@integration
@pytest.mark.parametrize("queue", [True, False])
async def test_queue_one_server_handles(
    make_bus: Callable[[str], Awaitable[Bus]], redis_server: RedisServer, queue: bool
) -> None:
    svc = _service()
    handled: Counter[str] = Counter()
    for node in ("SRV_q1", "SRV_q2"):
        bus = await make_bus(node)

        async def handler(raw: bytes) -> bytes:
            handled[raw.decode()] += 1
            return raw

        await bus.serve(svc, "M", "", handler, queue=queue)
    raw_client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        pubsub = await _subscribe_responses(raw_client, svc)
        for i in range(5):
            await _publish_request(
                raw_client, svc, "M", f"REQ_{i}", expiry_ns=time.time_ns() + 10**9, raw=b"%d" % i
            )
        responses = await _collect(pubsub, 1.0)
    finally:
        await raw_client.aclose()
    per_server = 1 if queue else 2
    assert handled == {str(i): per_server for i in range(5)}
    assert len(responses) == 5 * per_server


@integration
async def test_malformed_request(make_bus: Callable[[str], Awaitable[Bus]]) -> None:
    svc = _service()
    handled: list[Any] = []

    async def handler(raw: bytes) -> bytes:
        handled.append(proto.StartEgressRequest.FromString(raw))
        return b""

    def affinity(raw: bytes) -> float:
        proto.StartEgressRequest.FromString(raw)
        return 0.5

    server, client = await make_bus("SRV_mal"), await make_bus("CLI_mal")
    await server.serve(svc, "Start", "", handler, affinity=affinity)
    await server.serve(svc, "NoAffinityCheck", "", handler, affinity=lambda _: 1.0)
    for method in ("Start", "NoAffinityCheck"):
        with pytest.raises(RpcError) as err:
            await client.call(svc, method, "", b"\xff\xff\xff", timeout=3)
        assert err.value.code == "malformed_request"
    assert handled == []
    good = proto.StartEgressRequest(egress_id="EG_1").SerializeToString()
    assert await client.call(svc, "Start", "", good, timeout=3) == b""
    assert len(handled) == 1


@integration
async def test_a_redis_cluster_pub_sub_on_any_node_queue_lock_on_its_slot() -> None:
    """A 3-master Redis Cluster: each bus subscribes and publishes on one node (PUBLISH reaches
    every node), the queue lock goes to the node owning its slot (a plain client on one node
    gets MOVED for two thirds of them, and the request would be dropped), and a bus whose node
    stops goes on through the next address of ``cluster_addresses``."""
    made: list[Any] = []

    async def bus(node_id: str, addresses: list[str]) -> Bus:
        cfg = RedisConfig(cluster_addresses=addresses)
        client, keys = make_redis(cfg), make_cluster_keys(cfg)
        b = Bus(client, node_id, keys=keys)
        await b.start()
        made.extend([b, client, keys])
        return b

    svc = _service()
    handled: Counter[str] = Counter()

    async def handler(raw: bytes) -> bytes:
        handled[raw.decode()] += 1
        return raw

    with RedisCluster() as cluster:
        first, second, third = cluster.addresses
        try:
            servers = [await bus("SRV_c1", [second, third]), await bus("SRV_c2", [third, second])]
            for server in servers:  # as the worker serves StopEgress: claimed, and queued
                await server.serve(svc, "Q", "", handler, affinity=lambda _: 1.0, queue=True)
                await server.serve(svc, "Echo", "", _echo, affinity=lambda _: 0.5)
            caller = await bus("CLI_c", [first, second, third])
            for i in range(12):
                assert await caller.call(svc, "Q", "", b"%d" % i, timeout=3) == b"%d" % i
            assert handled == {str(i): 1 for i in range(12)}

            await asyncio.to_thread(cluster.stop_node, 0)  # the caller's node
            deadline = time.monotonic() + 15
            while True:
                try:
                    answer = await caller.call(svc, "Echo", "", b"after", timeout=2)
                    break
                except RpcError as e:  # unavailable until it reconnected to the next node
                    assert time.monotonic() < deadline, e
            assert answer == b"echo:after"
            print(f"the caller went on {15 - (deadline - time.monotonic()):.1f} s after its node stopped")
        finally:
            for thing in made:
                if isinstance(thing, Bus):
                    await thing.close()
                elif thing is not None:
                    await thing.aclose()


@integration
async def test_redis_restart(make_bus: Callable[[str], Awaitable[Bus]], redis_server: RedisServer) -> None:
    svc = _service()
    server, client = await make_bus("SRV_r"), await make_bus("CLI_r")
    await server.serve(svc, "Echo", "", _echo, affinity=lambda _: 0.5)
    assert await client.call(svc, "Echo", "", b"before", timeout=3) == b"echo:before"

    await asyncio.to_thread(redis_server.stop, cleanup=False)
    started = time.monotonic()
    with pytest.raises(RpcError) as err:
        await client.call(svc, "Echo", "", b"down", timeout=3)
    assert err.value.code == "unavailable"
    assert time.monotonic() - started < 10

    await asyncio.to_thread(redis_server.start)
    assert await client.call(svc, "Echo", "", b"after", timeout=5) == b"echo:after"
    await asyncio.to_thread(redis_server.restart)
    assert await client.call(svc, "Echo", "", b"again", timeout=5) == b"echo:again"


@integration
async def test_livekit_server_dispatches_start_egress(
    make_bus: Callable[[str], Awaitable[Bus]], redis_server: RedisServer
) -> None:
    """livekit-server v1.13.5 with Redis hands StartEgress to a served handler and returns its info;
    the worker's IOInfo calls reach the server's store."""
    received: list[Any] = []

    async def start_egress(raw: bytes) -> bytes:
        req: Any = proto.StartEgressRequest.FromString(raw)
        received.append(req)
        request = proto.recast(req.track_composite, lk_egress.TrackCompositeEgressRequest)
        return lk_egress.EgressInfo(
            egress_id=req.egress_id,
            room_id=req.room_id,
            room_name=request.room_name,
            status=lk_egress.EgressStatus.EGRESS_STARTING,
        ).SerializeToString()

    worker = await make_bus("EW_pyegress_test")
    await worker.serve("EgressInternal", "StartEgress", "", start_egress, affinity=lambda _: 0.5)
    async with LiveKitServer(redis_address=redis_server.address) as lk:
        lkapi = lk.api_client()
        try:
            listed = await lkapi.egress.list_egress(api.ListEgressRequest())
            assert list(listed.items) == []
            room = await lkapi.room.create_room(api.CreateRoomRequest(name="psrpc-" + uuid.uuid4().hex[:6]))
            info = await lkapi.egress.start_track_composite_egress(
                api.TrackCompositeEgressRequest(
                    room_name=room.name,
                    audio_track_id="TR_audio",
                    file_outputs=[api.EncodedFileOutput(filepath="out.mp4")],
                )
            )
            # and the worker's calls reach the server: CreateEgress, then UpdateEgress, show in its list
            report = lk_egress.EgressInfo()
            report.CopyFrom(info)
            assert (
                await worker.call("IOInfo", "CreateEgress", "", report.SerializeToString(), timeout=5) == b""
            )
            listed = await lkapi.egress.list_egress(api.ListEgressRequest(room_name=room.name))
            assert [(i.egress_id, i.status) for i in listed.items] == [(info.egress_id, info.status)]
            report.status = lk_egress.EgressStatus.EGRESS_ACTIVE
            assert (
                await worker.call("IOInfo", "UpdateEgress", "", report.SerializeToString(), timeout=5) == b""
            )
            listed = await lkapi.egress.list_egress(api.ListEgressRequest(egress_id=info.egress_id))
            assert [i.status for i in listed.items] == [lk_egress.EgressStatus.EGRESS_ACTIVE]
        finally:
            await lkapi.aclose()
    assert len(received) == 1
    req = received[0]
    assert proto.start_request_kind(req) == "track_composite"
    assert req.egress_id.startswith("EG_") and req.room_id == room.sid
    assert req.track_composite.audio_track_id == "TR_audio"
    assert (info.egress_id, info.room_id, info.room_name, info.status) == (
        req.egress_id,
        room.sid,
        room.name,
        lk_egress.EgressStatus.EGRESS_STARTING,
    )


def test_redis_server_missing_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYEGRESS_REDIS_SERVER", str(tmp_path / "no-redis-server"))
    with pytest.raises(RedisServerError, match=r"install-redis-server\.sh"):
        RedisServer().start()
