"""psrpc over Redis pub/sub, as livekit-server (psrpc v0.7.2) speaks it.

One :class:`Bus` per node: it serves methods (``serve``) and calls them (``call``) with the node id
as both its server id and its client id. Every payload is an ``internal.Msg`` around one of psrpc's
envelopes (see :mod:`pyegress.worker.proto`); the RPC messages themselves travel as raw bytes, so
handlers decode and encode their own types. A handler (or affinity function) that cannot decode
its request raises ``google.protobuf.message.DecodeError``, answered ``malformed_request`` as psrpc's
own servers answer it.

One subscription connection is read by one task that only dispatches: handlers, claims and
``SET NX`` run as tasks of their own. When Redis goes away the reader reconnects with backoff and
subscribes every channel again by itself; calls made meanwhile fail with ``unavailable``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio
from google.protobuf.message import DecodeError, Message
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from . import proto

__all__ = ["Bus", "RpcError", "Served", "channel"]

log = logging.getLogger(__name__)

_TYPE_PREFIX = "type.googleapis.com/"
#: psrpc's queue lock: ``SET base64(sha256(payload)) 1 NX EX 5``.
_QUEUE_LOCK_SECONDS = 5
_MIN_RETRY, _MAX_RETRY = 0.1, 1.0
#: How long ``serve`` waits for Redis to confirm its subscriptions before returning anyway (the
#: reader keeps subscribing them until Redis is back).
_SUBSCRIBE_WAIT = 5.0
#: Extra tries of a command on a new connection (each stale pooled connection fails once).
_STALE_RETRIES = 3

_T = TypeVar("_T")


class RpcError(Exception):
    """A psrpc error: ``code`` is psrpc's lowercase code (``invalid_argument``, ``unavailable``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _escape(part: str) -> str:
    out: list[str] = []
    for ch in part:
        cp = ord(ch)
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"u+{cp:04x}")
        else:
            out.append(f"U+{cp:08x}")
    return "".join(out)


def channel(*parts: str) -> str:
    """psrpc's Redis channel name: parts joined by ``|``, empty ones dropped, characters outside
    ``[0-9A-Za-z_]`` written ``u+%04x`` (``U+%08x`` above U+FFFF)."""
    return "|".join(e for e in map(_escape, parts) if e)


def _now_ns() -> int:
    return time.time_ns()


def _wrap(msg: Message) -> bytes:
    """``msg`` inside psrpc's ``internal.Msg`` (``channel`` empty, as on Redis)."""
    return proto.Msg(
        type_url=_TYPE_PREFIX + msg.DESCRIPTOR.full_name, value=msg.SerializeToString()
    ).SerializeToString()


def _unwrap(payload: bytes, cls: type[Message]) -> Any | None:
    """The envelope of type ``cls`` in ``payload``; None (logged) for anything else."""
    try:
        outer: Any = proto.Msg.FromString(payload)
        if outer.type_url != _TYPE_PREFIX + cls.DESCRIPTOR.full_name:
            log.debug(
                "psrpc: ignoring a %s where a %s was expected", outer.type_url, cls.DESCRIPTOR.full_name
            )
            return None
        return cls.FromString(outer.value)
    except DecodeError:
        log.warning("psrpc: undecodable message ignored")
        return None


class Served:
    """A method served by a :class:`Bus`; ``await stop()`` unsubscribes it and waits for the
    requests it is handling."""

    def __init__(self, bus: Bus, channels: list[str]) -> None:
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


class Bus:
    """psrpc over Redis pub/sub for one node (server id / client id = node_id).

    ``redis`` must return bytes (``decode_responses=False``). Call :meth:`start` before use and
    :meth:`close` at the end; the Redis clients stay the caller's to close. ``keys``: the client
    of psrpc's one key command (the queue lock) when it is not ``redis``: with a Redis Cluster,
    pub/sub works on any node but a key only on the node owning its slot.
    """

    def __init__(
        self, redis: redis.asyncio.Redis, node_id: str, *, keys: redis.asyncio.RedisCluster | None = None
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("psrpc needs a Redis client with decode_responses=False (payloads are bytes)")
        self._redis = redis
        self._keys = keys
        self.node_id = node_id
        self._pubsub: PubSub | None = None
        self._handlers: dict[str, Callable[[bytes], None]] = {}
        self._confirmed: set[str] = set()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        # calls in flight: request id -> claims / responses received for it
        self._claims: dict[str, asyncio.Queue[Any]] = {}
        self._responses: dict[str, asyncio.Queue[Any]] = {}
        self._client_services: set[str] = set()
        # servers waiting for the caller's choice: request id -> future of the chosen server id
        self._claim_waits: dict[str, asyncio.Future[str]] = {}

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Start the subscription reader (subscriptions are made by ``serve`` and by the first
        ``call`` to each service: psrpc's RES and CLAIM channels are per service)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name=f"psrpc-reader-{self.node_id}")

    async def close(self) -> None:
        """Stop reading (stop the :class:`Served` first to let their requests finish)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await self._reset_pubsub()
        self._handlers.clear()

    # -- subscriptions ----------------------------------------------------------------
    async def _reset_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._confirmed.clear()
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read_loop(self) -> None:
        delay = 0.0
        while True:
            if not self._handlers:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._pubsub is None:
                    # published only once subscribed: redis-py's PubSub opens a second connection
                    # when two tasks subscribe while it connects, and one of them is never read
                    pubsub = self._redis.pubsub()
                    wanted = set(self._handlers)
                    await pubsub.subscribe(*wanted)
                    self._pubsub = pubsub
                    if added := set(self._handlers) - wanted:  # served meanwhile
                        await pubsub.subscribe(*added)
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as e:
                delay = min(max(delay * 2, _MIN_RETRY), _MAX_RETRY)
                log.warning("psrpc: Redis subscription lost (%s); retrying in %.1f s", e, delay)
                await self._reset_pubsub()
                await asyncio.sleep(delay)
                continue
            delay = 0.0
            if message is not None:
                await self._on_message(message)

    async def _on_message(self, message: dict[str, Any]) -> None:
        name = message["channel"].decode()
        if message["type"] == "subscribe":
            async with self._changed:
                self._confirmed.add(name)
                self._changed.notify_all()
        elif message["type"] == "message":
            handler = self._handlers.get(name)
            if handler is not None:
                handler(message["data"])

    async def _subscribe(self, handlers: dict[str, Callable[[bytes], None]], timeout: float) -> bool:
        """Subscribe ``handlers``' channels; True once Redis confirmed all within ``timeout``."""
        clash = set(handlers) & set(self._handlers)
        if clash:
            raise ValueError(f"already subscribed: {sorted(clash)}")
        self._handlers.update(handlers)
        self._wake.set()
        if self._pubsub is not None:
            # on failure the reader resubscribes everything once it reconnects
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.subscribe(*handlers)
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: set(handlers) <= self._confirmed), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True

    async def _unsubscribe(self, channels: Iterable[str]) -> None:
        names = [c for c in channels if self._handlers.pop(c, None) is not None]
        self._confirmed.difference_update(names)
        if names and self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(*names)

    async def _command(self, command: Callable[[], Awaitable[_T]]) -> _T:
        """Run a Redis command, again on a fresh connection when a pooled one went stale (a Redis
        restart closes them all; redis-py drops a connection that failed)."""
        for _ in range(_STALE_RETRIES):
            try:
                return await command()
            except redis.ConnectionError:
                pass
        return await command()

    async def _publish(self, name: str, msg: Message) -> None:
        payload = _wrap(msg)
        await self._command(lambda: self._redis.publish(name, payload))

    # -- serving ------------------------------------------------------------------------
    async def serve(
        self,
        service: str,
        method: str,
        topic: str,
        handler: Callable[[bytes], Awaitable[bytes]],
        *,
        affinity: Callable[[bytes], float | None] | None = None,
        multi: bool = False,
        queue: bool = False,
    ) -> Served:
        """Serve ``service.method`` on ``topic``: ``handler`` maps the raw request to the raw
        response (raise :class:`RpcError` to answer an error).

        ``affinity`` turns on psrpc's claim flow (every single-response method of livekit-server
        needs it; a method without an affinity function claims with 1.0): the request is handled
        only if the caller picks this node; None means do not claim. ``multi``: every server
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
            req = _unwrap(payload, proto.Request)
            if req is None or _now_ns() >= req.expiry:
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

    async def _queue_lock(self, payload: bytes) -> bool:
        key = base64.b64encode(hashlib.sha256(payload).digest()).decode()
        try:
            keys = self._keys or self._redis
            return bool(await self._command(lambda: keys.set(key, 1, nx=True, ex=_QUEUE_LOCK_SECONDS)))
        except (RedisError, OSError) as e:
            log.warning("psrpc: queue lock failed (%s); request dropped", e)
            return False

    def _on_claim_response(self, payload: bytes) -> None:
        res = _unwrap(payload, proto.ClaimResponse)
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
        affinity: Callable[[bytes], float | None] | None,
    ) -> None:
        raw: bytes = req.raw_request
        try:
            if claim_channel:
                assert affinity is not None
                value = affinity(raw)
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
            chosen = await asyncio.wait_for(waiter, max(0.0, (req.expiry - _now_ns()) / 1e9))
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
            sent_at=_now_ns(),
            raw_response=raw_response,
            code=code,
            error=error,
        )
        try:
            await self._publish(channel(service, req.client_id, "RES"), res)
        except (RedisError, OSError) as e:
            log.warning("psrpc: response to %s lost (%s)", req.request_id, e)

    # -- calling ------------------------------------------------------------------------
    def _on_client_message(
        self, cls: type[Message], queues: dict[str, asyncio.Queue[Any]]
    ) -> Callable[[bytes], None]:
        def on_message(payload: bytes) -> None:
            msg = _unwrap(payload, cls)
            if msg is not None and msg.request_id in queues:
                queues[msg.request_id].put_nowait(msg)

        return on_message

    async def _client_channels(self, service: str, timeout: float) -> None:
        """Subscribe this node's RES and CLAIM channels of ``service`` (once)."""
        if self._reader is None:
            raise RuntimeError("Bus.start() first")
        if service not in self._client_services:
            self._client_services.add(service)
            await self._subscribe(
                {
                    channel(service, self.node_id, "RES"): self._on_client_message(
                        proto.Response, self._responses
                    ),
                    channel(service, self.node_id, "CLAIM"): self._on_client_message(
                        proto.ClaimRequest, self._claims
                    ),
                },
                0,
            )
        wanted = {channel(service, self.node_id, "RES"), channel(service, self.node_id, "CLAIM")}
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: wanted <= self._confirmed), timeout)
            except asyncio.TimeoutError:
                raise RpcError("unavailable", "Redis is unreachable (not subscribed)") from None

    def _request(self, request: bytes, timeout: float, *, multi: bool) -> Any:
        now = _now_ns()
        return proto.Request(
            request_id="REQ_" + secrets.token_hex(8),
            client_id=self.node_id,
            sent_at=now,
            expiry=now + int(timeout * 1e9),
            multi=multi,
            raw_request=request,
        )

    async def call(
        self,
        service: str,
        method: str,
        topic: str,
        request: bytes,
        *,
        timeout: float,
        affinity_timeout: float = 0.0,
    ) -> bytes:
        """Call a single-response (claimed) method: the first server to claim handles it, or with
        ``affinity_timeout`` the highest affinity claimed within that time (affinity >= 1 at once),
        as livekit-server picks egress workers.

        Raises :class:`RpcError`: the server's error, ``unavailable`` while Redis is unreachable,
        ``deadline_exceeded`` when no claim or no response came within ``timeout``.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        await self._client_channels(service, timeout)
        req = self._request(request, max(0.0, deadline - asyncio.get_running_loop().time()), multi=False)
        claims: asyncio.Queue[Any] = asyncio.Queue()
        responses: asyncio.Queue[Any] = asyncio.Queue()
        self._claims[req.request_id] = claims
        self._responses[req.request_id] = responses
        try:
            await self._publish(channel(service, method, topic, "REQ"), req)
            claim_or_error = await self._first(claims, responses, deadline, "no server claimed the request")
            if affinity_timeout > 0 and claim_or_error.DESCRIPTOR.full_name == "internal.ClaimRequest":
                claim_or_error = await self._best_claim(claim_or_error, claims, affinity_timeout)
            if claim_or_error.DESCRIPTOR.full_name == "internal.ClaimRequest":
                await self._publish(
                    channel(service, method, topic, "RCLAIM"),
                    proto.ClaimResponse(request_id=req.request_id, server_id=claim_or_error.server_id),
                )
                res = await self._first(
                    None, responses, deadline, "no response from the server that claimed it"
                )
            else:
                res = claim_or_error  # only a malformed request is answered before a claim
        except (RedisError, OSError) as e:
            raise RpcError("unavailable", f"Redis is unreachable: {e}") from e
        finally:
            self._claims.pop(req.request_id, None)
            self._responses.pop(req.request_id, None)
        if res.error or res.code:
            raise RpcError(res.code or "unknown", res.error)
        return bytes(res.raw_response)

    @staticmethod
    async def _best_claim(first: Any, claims: asyncio.Queue[Any], window: float) -> Any:
        """The highest-affinity claim of those arriving within ``window`` after ``first``."""
        best = first
        loop = asyncio.get_running_loop()
        end = loop.time() + window
        while best.affinity < 1 and (left := end - loop.time()) > 0:
            try:
                claim = await asyncio.wait_for(claims.get(), left)
            except asyncio.TimeoutError:
                break
            if claim.affinity > best.affinity:
                best = claim
        return best

    async def _first(
        self, claims: asyncio.Queue[Any] | None, responses: asyncio.Queue[Any], deadline: float, what: str
    ) -> Any:
        """The first claim (when ``claims`` is given) or error response, or the first response."""
        getters = [asyncio.ensure_future(responses.get())]
        if claims is not None:
            getters.append(asyncio.ensure_future(claims.get()))
        try:
            done, _ = await asyncio.wait(
                getters,
                timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                raise RpcError("deadline_exceeded", what)
            # a claim wins over a response that came at the same time; no other response comes first
            return next(g for g in reversed(getters) if g in done).result()
        finally:
            for g in getters:
                g.cancel()

    async def call_multi(
        self, service: str, method: str, topic: str, request: bytes, *, timeout: float
    ) -> list[bytes]:
        """Call a multi method (every server answers): the raw responses received within
        ``timeout``; error responses are logged and left out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._client_channels(service, timeout)
        req = self._request(request, max(0.0, deadline - loop.time()), multi=True)
        responses: asyncio.Queue[Any] = asyncio.Queue()
        self._responses[req.request_id] = responses
        out: list[bytes] = []
        try:
            await self._publish(channel(service, method, topic, "REQ"), req)
            while (left := deadline - loop.time()) > 0:
                try:
                    res = await asyncio.wait_for(responses.get(), left)
                except asyncio.TimeoutError:
                    break
                if res.error or res.code:
                    log.warning(
                        "psrpc: %s.%s error from %s: %s %s",
                        service,
                        method,
                        res.server_id,
                        res.code,
                        res.error,
                    )
                else:
                    out.append(bytes(res.raw_response))
        except (RedisError, OSError) as e:
            raise RpcError("unavailable", f"Redis is unreachable: {e}") from e
        finally:
            self._responses.pop(req.request_id, None)
        return out
