"""Pause, resume and marks of a worker's egresses: pyegress's own psrpc methods beside LiveKit's.

LiveKit's protocol has no pause (livekit/egress#195), so livekit-server has nothing to forward.
A worker serves, for each egress it runs, ``PauseEgress``, ``ResumeEgress`` and ``MarkEgress`` of
the psrpc service ``PyegressControl`` on the cluster's Redis, the way it serves LiveKit's
``EgressHandler.StopEgress``: the topic is the egress id, so only the worker running it claims a
call. :class:`WorkerControl` calls them from any process that reaches that Redis (the
``pyegress control`` command). livekit-server never sees these channels. Anyone who can reach
the Redis can already stop any egress, so pausing one needs no further right.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from livekit.protocol import egress as pe

from ..errors import EgressError, EgressNotFoundError, InvalidRequestError, NotSupportedError
from ..pauses import PauseFill, check_fill
from ..service import EgressService
from .config import RedisConfig
from .proto import ControlRequest
from .psrpc import Bus, RpcError, Served
from .redis_clients import make_cluster_keys, make_redis

SERVICE = "PyegressControl"
#: How long a call waits for the worker's answer (livekit-server gives StopEgress as long).
TIMEOUT = 3.0
_CODES: dict[type[EgressError], str] = {
    EgressNotFoundError: "not_found",
    NotSupportedError: "unimplemented",
    InvalidRequestError: "invalid_argument",
}


async def serve_control(bus: Bus, service: EgressService, egress_id: str) -> list[Served]:
    """Serve the control methods of ``egress_id`` (running on ``service``) on ``bus``."""

    async def pause(req: Any) -> pe.EgressInfo:
        return await service.pause_egress(req.egress_id, fill=check_fill(req.fill or "cut"))

    async def resume(req: Any) -> pe.EgressInfo:
        return await service.resume_egress(req.egress_id)

    async def mark(req: Any) -> pe.EgressInfo:
        await service.mark(req.egress_id, req.label, _json(req.data or "null"))
        (info,) = (await service.list_egress(pe.ListEgressRequest(egress_id=req.egress_id))).items
        return info

    methods = {"PauseEgress": pause, "ResumeEgress": resume, "MarkEgress": mark}
    return [
        await bus.serve(SERVICE, name, egress_id, _handler(fn), affinity=lambda _: 1.0, queue=True)
        for name, fn in methods.items()
    ]


def _handler(fn: Callable[[Any], Awaitable[pe.EgressInfo]]) -> Callable[[bytes], Awaitable[bytes]]:
    """``fn`` on the decoded request; its answer as bytes, pyegress's errors as psrpc's."""

    async def handle(raw: bytes) -> bytes:
        req = ControlRequest.FromString(raw)  # DecodeError: answered malformed_request
        try:
            return (await fn(req)).SerializeToString()
        except EgressError as e:
            code = next((c for t, c in _CODES.items() if isinstance(e, t)), "internal")
            raise RpcError(code, str(e)) from None

    return handle


class WorkerControl:
    """Pause, resume and mark egresses that workers of the cluster run, through ``bus`` (a
    started :class:`~pyegress.worker.psrpc.Bus` on the cluster's Redis). The methods answer
    as :class:`~pyegress.EgressService`'s do."""

    def __init__(self, bus: Bus, *, timeout: float = TIMEOUT) -> None:
        self.bus = bus
        self.timeout = timeout

    async def pause_egress(self, egress_id: str, *, fill: PauseFill = "cut") -> pe.EgressInfo:
        """Pause ``egress_id`` (see :meth:`pyegress.EgressService.pause_egress`)."""
        return await self._call("PauseEgress", egress_id, fill=check_fill(fill))

    async def resume_egress(self, egress_id: str) -> pe.EgressInfo:
        """Record ``egress_id`` again after a pause."""
        return await self._call("ResumeEgress", egress_id)

    async def mark(self, egress_id: str, label: str, data: object = None) -> pe.EgressInfo:
        """Put an application marker in ``egress_id``'s events sidecar at its media time now."""
        try:
            text = json.dumps(data)
        except (TypeError, ValueError) as e:
            raise InvalidRequestError("data", f"must be JSON-serializable: {e}") from None
        return await self._call("MarkEgress", egress_id, label=label, data=text)

    async def _call(self, method: str, egress_id: str, **fields: str) -> pe.EgressInfo:
        raw = ControlRequest(egress_id=egress_id, **fields).SerializeToString()
        try:
            answer = await self.bus.call(SERVICE, method, egress_id, raw, timeout=self.timeout)
        except RpcError as e:
            raise _error(e, egress_id) from None
        return pe.EgressInfo.FromString(answer)


@contextlib.asynccontextmanager
async def connect(redis: RedisConfig, *, timeout: float = TIMEOUT) -> AsyncIterator[WorkerControl]:
    """A :class:`WorkerControl` on the cluster's Redis (``redis``: as the workers' config has
    it), closed on leaving."""
    client, keys = make_redis(redis), make_cluster_keys(redis)
    bus = Bus(client, "PC_" + secrets.token_hex(6), keys=keys)
    await bus.start()
    try:
        yield WorkerControl(bus, timeout=timeout)
    finally:
        await bus.close()
        await client.aclose()
        if keys is not None:
            await keys.aclose()


async def run_control(
    redis: RedisConfig, action: str, egress_id: str, fill: str, label: str, data: str
) -> int:
    """``pyegress control``: one action, its answer (or error) printed; 0 when it was done."""
    try:
        async with connect(redis) as control:
            if action == "pause":
                info = await control.pause_egress(egress_id, fill=check_fill(fill))
            elif action == "resume":
                info = await control.resume_egress(egress_id)
            else:
                info = await control.mark(egress_id, label, _json(data))
    except EgressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{egress_id}: {action} done ({pe.EgressStatus.Name(info.status)})")
    return 0


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidRequestError("data", f"not JSON: {e}") from None


def _error(e: RpcError, egress_id: str) -> EgressError:
    """pyegress's error for a psrpc error (the worker's own, or no worker claiming the call)."""
    if e.code == "not_found" or (e.code == "deadline_exceeded" and "claimed" in e.message):
        return EgressNotFoundError(f"egress_id: no worker runs egress {egress_id!r}")
    if e.code == "invalid_argument":
        field, _, message = e.message.partition(": ")
        return InvalidRequestError(field, message)
    if e.code == "unimplemented":
        return NotSupportedError(e.message)
    return EgressError(str(e), code=503 if e.code == "unavailable" else 500)
