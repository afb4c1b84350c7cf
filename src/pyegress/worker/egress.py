"""The egress worker: LiveKit's dispatched requests turned into calls on ``EgressService``.

It serves ``EgressInternal.StartEgress`` (claimed with an affinity when the request's measured
cost fits), ``ListActiveEgress``, and per egress ``EgressHandler.StopEgress`` /
``UpdateStream`` (and pyegress's own pause, resume and marks, :mod:`.control`); it follows
each egress through the service's listeners and reports it with ``IOInfo.CreateEgress``
(awaited first, so the server sends ``egress_started``) and then ``IOInfo.UpdateEgress`` on
every change (serialized per egress, the latest info wins, retried with backoff while the
server cannot be reached). It never reaches into recorders.

What it sends is mirrored in its state file (:mod:`.state`): at start it reports the egresses a
killed run left there FAILED; after a Redis restart (:meth:`EgressWorker.resync`) it sends each
running egress again, since a Redis without persistence forgot them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from ..config import REQUEST_TYPES, Kind, build_config
from ..config.unified import source_kind
from ..ending import EndReason
from ..errors import EgressError, InvalidRequestError, NotSupportedError
from ..info import is_terminal, snapshot
from ..service import EgressService
from ..webhooks import request_webhooks
from .claims import StartClaims
from .config import WorkerConfig
from .control import serve_control
from .proto import ListActiveEgressResponse, StartEgressRequest, recast, start_request_kind
from .psrpc import Bus, RpcError, Served
from .state import Left, StateFile

log = logging.getLogger("pyegress.worker")

#: psrpc services and their timeouts as livekit-server v1.13.5 uses them.
INTERNAL, HANDLER, IOINFO = "EgressInternal", "EgressHandler", "IOInfo"
#: How long one IOInfo call may take before it is retried.
IO_TIMEOUT = 3.0
#: How long a drain waits for the final reports when the server cannot be reached.
FINAL_REPORT_WAIT = 30.0
#: Longest wait between retries of an IOInfo call while the server is unreachable.
IO_MAX_BACKOFF = 10.0

#: The request fields of ``rpc.StartEgressRequest`` pyegress serves, by the service method.
_METHODS = {t.slot: t.method for t in REQUEST_TYPES}


@dataclass
class _Egress:
    """One egress this worker runs: its reserved cost, its handlers and its reporter."""

    cost: float
    slot: str = ""
    resync: bool = False
    served: list[Served] = field(default_factory=list)
    latest: pe.EgressInfo | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reporter: asyncio.Task[None] | None = None
    #: The first start's answer: a re-sent request arriving meanwhile awaits it.
    started: asyncio.Future[bytes] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    webhooks: list[pm.WebhookConfig] = field(default_factory=list)


class EgressWorker:
    """One worker node of a LiveKit cluster (``node_id`` is its psrpc server id)."""

    def __init__(self, config: WorkerConfig, bus: Bus, *, cpus: float | None = None) -> None:
        self.config = config
        self.bus = bus
        self.service = EgressService(
            config.ws_url,
            config.api_key,
            config.api_secret,
            output_dir=config.output_dir,
            storage=config.storage,
            backup_storage=config.backup,
            insecure=config.insecure,
            webhooks=None,  # livekit-server sends them, the requests' too (see _for_server)
            limits=config.session_limits,
            reconnect_timeout=config.reconnect_timeout,
            max_retries=config.max_retries,
            sidecars=config.sidecars,
            receive_path=config.receive_path,
        )
        cores = cpus if cpus is not None else float(os.cpu_count() or 1)
        self.capacity = cores * config.cpu_cost.get("max_cpu_utilization", 0.8)
        self.egresses: dict[str, _Egress] = {}
        self.draining = False
        self.io_retries: dict[str, int] = {}  # IOInfo calls retried, by method (metrics)
        self.state = StateFile(config.state_path)
        self.claims = StartClaims(bus)
        self._recovery: asyncio.Task[None] | None = None
        self._served: list[Served] = []
        self._stop_listening: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def reserved(self) -> float:
        """CPU cores reserved by the egresses running here."""
        return sum(e.cost for e in self.egresses.values())

    @property
    def available(self) -> float:
        """CPU cores left for new egresses."""
        return max(0.0, self.capacity - self.reserved)

    async def start(self) -> None:
        """Report what a killed run left, follow the service's egresses and serve the server."""
        left = self.state.load()
        self._stop_listening = self.service.listen(self._on_info)
        self._served = [
            await self.bus.serve(INTERNAL, "StartEgress", "", self._start_egress, affinity=self._affinity),
            await self.bus.serve(INTERNAL, "ListActiveEgress", "", self._list_active, multi=True),
        ]
        if left:  # in the background: new requests are served meanwhile
            self._recovery = asyncio.get_running_loop().create_task(self._report_left(left))

    async def drain(self, timeout: float) -> None:
        """Stop claiming, let running egresses end by themselves for up to ``timeout`` s, then
        stop the rest cleanly; their final updates are sent before this returns, unless the
        server stays unreachable for ``FINAL_REPORT_WAIT`` s (they stay in the state file, and
        the next start of this worker reports them)."""
        self.draining = True
        ids = list(self.egresses)
        waits = [self.service.wait_egress(i) for i in ids]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), timeout)
        await self.service.aclose()
        reporters = [e.reporter for e in self.egresses.values() if e.reporter is not None]
        _done, pending = (
            await asyncio.wait(reporters, timeout=FINAL_REPORT_WAIT) if reporters else (set(), set())
        )
        for task in pending:
            log.warning("worker: final report not delivered; left in %s for the next start", self.state.path)
            task.cancel()

    async def close(self) -> None:
        """Stop serving (after :meth:`drain` for a clean exit)."""
        self.draining = True
        if self._recovery is not None:  # not reported yet: they stay in the state file
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        for served in self._served:
            await served.stop()
        if self._stop_listening is not None:
            self._stop_listening()

    # --- StartEgress ---------------------------------------------------------------------

    def _cost(self, raw: bytes) -> float | None:
        req: Any = StartEgressRequest.FromString(raw)  # DecodeError: answered malformed_request
        which = start_request_kind(req)
        if which == "room_composite" and req.room_composite.custom_base_url.strip():
            which = "web"
        elif which == "egress":  # the unified request costs what its source records
            which = source_kind(req.egress)
        return self.config.cost(which or "room_composite")

    async def _affinity(self, raw: bytes) -> float | None:
        """None (no claim) when draining or full; else 0.5 idle and 1.0 busy, as LiveKit's
        worker does (busy workers take small jobs first, so the cluster packs them). A request
        re-sent for an egress running here is claimed at 1.0 even when full or draining: only
        this worker can answer it with the running egress's info; one whose egress id another
        worker claimed (:mod:`.claims`) is not claimed (this one would start it twice)."""
        req: Any = StartEgressRequest.FromString(raw)
        if req.egress_id in self.egresses:
            return 1.0
        cost = self._cost(raw)
        if self.draining or cost is None or cost > self.available + 1e-9:  # 4 x 0.4 is not 1.6 in floats
            return None
        if await self.claims.holder(req.egress_id) is not None:
            return None
        return 1.0 if self.egresses else 0.5

    async def _start_egress(self, raw: bytes) -> bytes:
        try:
            req: Any = StartEgressRequest.FromString(raw)
        except DecodeError as e:
            raise RpcError("malformed_request", f"StartEgressRequest: {e}") from None
        egress_id: str = req.egress_id
        running = self.egresses.get(egress_id)
        if running is not None:  # the server re-sent it: the first start's answer, or its error
            if not running.started.done():
                log.info("egress %s: re-sent while starting; answering with the first start", egress_id)
                return await asyncio.shield(running.started)
            if running.latest is None:
                return running.started.result()
            return self._for_server(running.latest).SerializeToString()
        which = start_request_kind(req)
        if which not in _METHODS:
            raise RpcError("invalid_argument", f"request: {which or 'none'} requests are not supported yet")
        entry_type = next(t for t in REQUEST_TYPES if t.slot == which)
        request: Any = recast(getattr(req, which), entry_type.message)  # into livekit.protocol's class
        try:  # every user error answers at once, naming the field, instead of a 503 after retries
            built = build_config(request, output_dir=self.config.output_dir, default=self.config.storage)
        except EgressError as e:
            raise RpcError("invalid_argument", str(e)) from None
        cost = self._cost(raw) or 0.0
        if self.draining or cost > self.available + 1e-9:
            raise RpcError("resource_exhausted", "this worker is full or draining")
        entry = _Egress(cost, slot=which, webhooks=list(request_webhooks(request)))
        self.egresses[egress_id] = entry  # no await since the lookup: a re-send finds it
        try:
            elsewhere = await self.claims.take(egress_id)
            if elsewhere is not None:  # started by another worker: its answer, nothing runs here
                self.egresses.pop(egress_id, None)
                entry.started.set_result(elsewhere)
                return elsewhere
            try:
                native = built.kind is Kind.ROOM_COMPOSITE and not built.template
                info = await self._begin(which, request, egress_id, native)
            except BaseException:
                await self.claims.release(egress_id)
                raise
        except BaseException as e:  # nothing runs: free its cores, answer the error (to re-sends too)
            self.egresses.pop(egress_id, None)
            failure = e if isinstance(e, RpcError) else RpcError("internal", str(e) or type(e).__name__)
            entry.started.set_exception(failure)
            entry.started.exception()  # retrieved: no warning when no re-send awaited it
            raise
        if req.room_id and not info.room_id:
            info.room_id = req.room_id
        entry.latest = info
        answer = self._for_server(info).SerializeToString()  # the server's CreateEgress may use it
        entry.started.set_result(answer)
        await self.claims.started(egress_id, answer)
        entry.reporter = asyncio.get_running_loop().create_task(self._report(egress_id, info))
        if not is_terminal(info.status):
            entry.served = [
                await self.bus.serve(HANDLER, "StopEgress", egress_id, self._stop_egress,
                                     affinity=lambda _: 1.0, queue=True),
                await self.bus.serve(HANDLER, "UpdateStream", egress_id, self._update_stream,
                                     affinity=lambda _: 1.0, queue=True),
                *await serve_control(self.bus, self.service, egress_id),  # pyegress's own: pause...
            ]  # fmt: skip
        log.info("egress %s started (%s, %.2f cores reserved)", egress_id, which, cost)
        return answer

    async def _begin(self, which: str, request: Any, egress_id: str, native: bool = False) -> pe.EgressInfo:
        """Start the egress on the service (a ``native`` room composite with the config's
        selection and speaker tracks); its errors as psrpc errors."""
        start: Callable[..., Awaitable[pe.EgressInfo]] = getattr(self.service, _METHODS[which])
        extra: dict[str, Any] = {}
        if native:
            extra = {"selection": self.config.selection, "speaker_tracks": self.config.speaker_tracks}
        try:
            return await start(request, egress_id=egress_id, **extra)
        except (InvalidRequestError, NotSupportedError) as e:
            raise RpcError("invalid_argument", str(e)) from None
        except EgressError as e:
            raise RpcError("internal", str(e)) from None

    async def _list_active(self, raw: bytes) -> bytes:
        active = [i for i, e in self.egresses.items() if e.latest is None or not is_terminal(e.latest.status)]
        answer: Any = ListActiveEgressResponse()
        answer.egress_ids.extend(active)
        return bytes(answer.SerializeToString())

    # --- per egress ----------------------------------------------------------------------

    async def _stop_egress(self, raw: bytes) -> bytes:
        stop = pe.StopEgressRequest.FromString(raw)
        try:
            recorder = self.service.recorder(stop.egress_id)
        except EgressError:
            entry = self.egresses.get(stop.egress_id)
            if entry is None or entry.latest is None:
                raise RpcError("not_found", f"egress_id: {stop.egress_id} is not running here") from None
            return entry.latest.SerializeToString()  # already over: stopping twice is harmless
        recorder.end(EndReason.API)

        async def ending() -> pe.EgressInfo:
            info = snapshot(recorder.info)
            async for info in recorder.updates():
                if info.status == pe.EGRESS_ENDING or is_terminal(info.status):
                    break
            return info

        try:  # answer within the server's 3 s: ENDING (the files finish after)
            info = await asyncio.wait_for(ending(), 2.0)
        except asyncio.TimeoutError:
            info = snapshot(recorder.info)
        return info.SerializeToString()

    async def _update_stream(self, raw: bytes) -> bytes:
        update = pe.UpdateStreamRequest.FromString(raw)
        try:
            info = await self.service.update_stream(update)
        except EgressError as e:
            raise RpcError("invalid_argument", str(e)) from None
        return info.SerializeToString()

    # --- reporting to the server ---------------------------------------------------------

    def _on_info(self, info: pe.EgressInfo) -> None:
        entry = self.egresses.get(info.egress_id)
        if entry is not None:
            entry.latest = info
            entry.changed.set()

    def resync(self) -> None:
        """Send every running egress again (Redis restarted: the server's store may be empty)."""
        for entry in self.egresses.values():
            entry.resync = True
            entry.changed.set()

    async def _send(self, entry: _Egress, method: str, info: pe.EgressInfo) -> None:
        """One report, saved in the state file first (so a crash meanwhile still reports it)."""
        if not is_terminal(info.status):
            self.state.save(self.bus.node_id, entry.slot, info)
        await self._io(method, info)

    async def _report(self, egress_id: str, first: pe.EgressInfo) -> None:
        """CreateEgress, then UpdateEgress with the latest info after each change, in order:
        the latest wins, and the final one is always sent (this loop ends only after it)."""
        entry = self.egresses[egress_id]
        await self._send(entry, "CreateEgress", first)
        sent = first
        while not is_terminal(sent.status):
            entry.changed.clear()
            latest = entry.latest or sent
            if entry.resync:  # CreateEgress is a no-op on the server when it still has it
                entry.resync = False
                await self._send(entry, "CreateEgress", sent)
                await self._send(entry, "UpdateEgress", latest)
                sent = latest
            elif latest != sent:
                await self._send(entry, "UpdateEgress", latest)
                sent = latest
            elif not entry.changed.is_set():
                await entry.changed.wait()
        with contextlib.suppress(EgressError):  # its manifests too: then the info is final
            await self.service.wait_egress(egress_id)
        if entry.latest is not None and entry.latest != sent:
            sent = entry.latest
            await self._send(entry, "UpdateEgress", sent)
        self.state.remove(egress_id)
        for served in entry.served:
            await served.stop()
        self.egresses.pop(egress_id, None)  # its cores are free again
        log.info("egress %s reported %s", egress_id, pe.EgressStatus.Name(sent.status))

    async def _report_left(self, left: list[Left]) -> None:
        """Report FAILED each egress a killed run of this worker left in the state file."""
        for one in left:
            info = one.failed()
            log.warning("egress %s: %s; reporting it FAILED", info.egress_id, info.error)
            await self._io("UpdateEgress", info)
            self.state.remove(info.egress_id)

    def _for_server(self, info: pe.EgressInfo) -> pe.EgressInfo:
        """``info`` with its request's ``webhooks`` as given: livekit-server sends a request's
        webhooks itself, from the info it is reported or answered to StartEgress (to the URL as
        is, signed with the secret of the API key ``signing_key`` names), which a redacted copy
        would defeat."""
        entry = self.egresses.get(info.egress_id)
        slot = info.WhichOneof("request")
        if entry is None or not entry.webhooks or slot is None:
            return info
        out = pe.EgressInfo()
        out.CopyFrom(info)
        hooks = getattr(out, slot).webhooks
        del hooks[:]
        hooks.extend(entry.webhooks)
        return out

    async def _io(self, method: str, info: pe.EgressInfo) -> None:
        """One IOInfo call, retried with backoff until the server takes it."""
        delay = 0.25
        raw = self._for_server(info).SerializeToString()
        while True:
            try:
                await self.bus.call(IOINFO, method, "", raw, timeout=IO_TIMEOUT)
                return
            except RpcError as e:
                self.io_retries[method] = self.io_retries.get(method, 0) + 1
                log.warning("IOInfo.%s for %s: %s; retry in %.1f s", method, info.egress_id, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, IO_MAX_BACKOFF)

    # --- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        """What the health port answers: capacity and the egresses running here."""
        return {
            "status": "draining" if self.draining else "ok",
            "cpu_capacity": round(self.capacity, 3),
            "cpu_available": round(self.available, 3),
            "active": [
                {
                    "egress_id": i,
                    "cost": e.cost,
                    "status": pe.EgressStatus.Name(e.latest.status) if e.latest else "",
                }
                for i, e in self.egresses.items()
            ],
        }


def _status(info: pe.EgressInfo | None) -> str:
    return pe.EgressStatus.Name(info.status) if info is not None else ""
