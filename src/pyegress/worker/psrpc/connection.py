"""One node's Redis side of psrpc: the subscription connection, read by one task that only
dispatches, and publishing. When Redis goes away the reader reconnects with backoff and
subscribes every channel again by itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio
from google.protobuf.message import Message
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .wire import log, wrap

_MIN_RETRY, _MAX_RETRY = 0.1, 1.0
#: Extra tries of a command on a new connection (each stale pooled connection fails once).
_STALE_RETRIES = 3

_T = TypeVar("_T")


class Connection:
    """The subscriptions and publishing of one node (``redis`` must return bytes:
    ``decode_responses=False``). Call :meth:`start` before use and :meth:`close` at the end; the
    Redis client stays the caller's to close."""

    def __init__(self, redis: redis.asyncio.Redis, node_id: str) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("psrpc needs a Redis client with decode_responses=False (payloads are bytes)")
        self._redis = redis
        self.node_id = node_id
        self._pubsub: PubSub | None = None
        self._handlers: dict[str, Callable[[bytes], None]] = {}
        self._confirmed: set[str] = set()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Start the subscription reader (subscriptions are made by ``serve`` and by the first
        ``call`` to each service: psrpc's RES and CLAIM channels are per service)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name=f"psrpc-reader-{self.node_id}")

    async def close(self) -> None:
        """Stop reading (stop the ``Served`` first to let their requests finish)."""
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
        payload = wrap(msg)
        await self._command(lambda: self._redis.publish(name, payload))
