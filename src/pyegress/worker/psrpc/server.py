"""The serving side of psrpc: requests, psrpc's claim flow (affinity, the caller's choice),
queue locks and responses. A handler (or affinity function) that cannot decode its request raises
``google.protobuf.message.DecodeError``, answered ``malformed_request`` as psrpc's own servers
answer it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio
from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from .. import proto
from .connection import Connection
from .wire import RpcError, channel, log, now_ns, unwrap

#: psrpc's queue lock: ``SET base64(sha256(payload)) 1 NX EX 5``.
_QUEUE_LOCK_SECONDS = 5
#: How long ``serve`` waits for Redis to confirm its subscriptions before returning anyway (the
#: reader keeps subscribing them until Redis is back).
_SUBSCRIBE_WAIT = 5.0

_T = TypeVar("_T")
#: How much a server wants a request (None: it does not claim it), at once or after awaiting.
Affinity = Callable[[bytes], float | Awaitable[float | None] | None]


class Served:
    """A method served by a bus; ``await stop()`` unsubscribes it and waits for the
    requests it is handling."""

    def __init__(self, bus: Server, channels: list[str]) -> None:
        self._bus = bus
        self._channels = channels
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # as psrpc does: no new requests, let the ones in hand finish (their claims still answered)
        await self._bus._unsubscribe(self._channels[:1])
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._bus._unsubscribe(self._channels[1:])


class Server(Connection):
    """Serves methods with the node id as its server id. ``keys``: the client of psrpc's one key
    command (the queue lock) when it is not ``redis``: with a Redis Cluster, pub/sub works on any
    node but a key only on the node owning its slot."""

    def __init__(
        self, redis: redis.asyncio.Redis, node_id: str, *, keys: redis.asyncio.RedisCluster | None = None
    ) -> None:
        super().__init__(redis, node_id)
        self._keys = keys
        # servers waiting for the caller's choice: request id -> future of the chosen server id
        self._claim_waits: dict[str, asyncio.Future[str]] = {}

    async def serve(
        self,
        service: str,
        method: str,
        topic: str,
        handler: Callable[[bytes], Awaitable[bytes]],
        *,
        affinity: Affinity | None = None,
        multi: bool = False,
        queue: bool = False,
    ) -> Served:
        """Serve ``service.method`` on ``topic``: ``handler`` maps the raw request to the raw
        response (raise :class:`RpcError` to answer an error).

        ``affinity`` turns on psrpc's claim flow (every single-response method of livekit-server
        needs it; a method without an affinity function claims with 1.0): the request is handled
        only if the caller picks this node; None means do not claim (it may be a coroutine, to
        ask Redis first). ``multi``: every server
        answers, no claim. ``queue``: only the server winning psrpc's ``SET NX`` on the payload
        handles it.
        """
        if multi and affinity is not None:
            raise ValueError("a multi method has no claim flow")
        if self._reader is None:
            raise RuntimeError("Bus.start() first")
        req_channel = channel(service, method, topic, "REQ")
        served = Served(self, [req_channel])
        claim_channel = channel(service, method, topic, "RCLAIM") if affinity is not None else ""

        async def handle(payload: bytes) -> None:
            if queue and not await self._queue_lock(payload):
                return
            req = unwrap(payload, proto.Request)
            if req is None or now_ns() >= req.expiry:
                return
            await self._handle_request(service, claim_channel, req, handler, affinity)

        def on_request(payload: bytes) -> None:
            served._spawn(handle(payload))

        handlers: dict[str, Callable[[bytes], None]] = {req_channel: on_request}
        if claim_channel:
            handlers[claim_channel] = self._on_claim_response
            served._channels.append(claim_channel)
        if not await self._subscribe(handlers, _SUBSCRIBE_WAIT):
            log.warning(
                "psrpc: %s not subscribed yet (Redis unreachable?); will be when it is back", req_channel
            )
        return served

    async def key_command(
        self, command: Callable[[redis.asyncio.Redis | redis.asyncio.RedisCluster], Awaitable[_T]]
    ) -> _T:
        """Run a key command on the client owning keys (the cluster client when there is one),
        again on a fresh connection when a pooled one went stale."""
        keys = self._keys or self._redis
        return await self._command(lambda: command(keys))

    async def _queue_lock(self, payload: bytes) -> bool:
        key = base64.b64encode(hashlib.sha256(payload).digest()).decode()
        try:
            locked = await self.key_command(lambda keys: keys.set(key, 1, nx=True, ex=_QUEUE_LOCK_SECONDS))
            return bool(locked)
        except (RedisError, OSError) as e:
            log.warning("psrpc: queue lock failed (%s); request dropped", e)
            return False

    def _on_claim_response(self, payload: bytes) -> None:
        res = unwrap(payload, proto.ClaimResponse)
        if res is None:
            return
        waiter = self._claim_waits.get(res.request_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(res.server_id)

    async def _handle_request(
        self,
        service: str,
        claim_channel: str,
        req: Any,
        handler: Callable[[bytes], Awaitable[bytes]],
        affinity: Affinity | None,
    ) -> None:
        raw: bytes = req.raw_request
        try:
            if claim_channel:
                assert affinity is not None
                value = affinity(raw)
                if inspect.isawaitable(value):
                    value = await value
                if value is None or not await self._claim(service, req, value):
                    return
            response = await handler(raw)
        except RpcError as e:
            await self._respond(service, req, code=e.code, error=e.message)
        except DecodeError as e:
            await self._respond(service, req, code="malformed_request", error=str(e) or "malformed request")
        except Exception as e:
            log.exception("psrpc: %s handler failed", service)
            await self._respond(service, req, code="internal", error=str(e) or type(e).__name__)
        else:
            await self._respond(service, req, raw_response=response)

    async def _claim(self, service: str, req: Any, affinity: float) -> bool:
        """Offer to handle ``req``; True when the caller picked this node before the expiry."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._claim_waits[req.request_id] = waiter
        try:
            await self._publish(
                channel(service, req.client_id, "CLAIM"),
                proto.ClaimRequest(request_id=req.request_id, server_id=self.node_id, affinity=affinity),
            )
            chosen = await asyncio.wait_for(waiter, max(0.0, (req.expiry - now_ns()) / 1e9))
        except (asyncio.TimeoutError, RedisError, OSError):
            return False
        finally:
            self._claim_waits.pop(req.request_id, None)
        return chosen == self.node_id

    async def _respond(
        self, service: str, req: Any, *, raw_response: bytes = b"", code: str = "", error: str = ""
    ) -> None:
        res = proto.Response(
            request_id=req.request_id,
            server_id=self.node_id,
            sent_at=now_ns(),
            raw_response=raw_response,
            code=code,
            error=error,
        )
        try:
            await self._publish(channel(service, req.client_id, "RES"), res)
        except (RedisError, OSError) as e:
            log.warning("psrpc: response to %s lost (%s)", req.request_id, e)
