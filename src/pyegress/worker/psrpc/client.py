"""The calling side of psrpc: single-response calls (the first claim, or the best within an
affinity window, as livekit-server picks egress workers) and multi calls (every server answers).
Calls made while Redis is unreachable fail with ``unavailable``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import redis.asyncio
from google.protobuf.message import Message
from redis.exceptions import RedisError

from .. import proto
from .connection import Connection
from .wire import RpcError, channel, log, now_ns, unwrap


class Client(Connection):
    """Calls methods with the node id as its client id."""

    def __init__(self, redis: redis.asyncio.Redis, node_id: str) -> None:
        super().__init__(redis, node_id)
        # calls in flight: request id -> claims / responses received for it
        self._claims: dict[str, asyncio.Queue[Any]] = {}
        self._responses: dict[str, asyncio.Queue[Any]] = {}
        self._client_services: set[str] = set()

    def _on_client_message(
        self, cls: type[Message], queues: dict[str, asyncio.Queue[Any]]
    ) -> Callable[[bytes], None]:
        def on_message(payload: bytes) -> None:
            msg = unwrap(payload, cls)
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
        now = now_ns()
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
