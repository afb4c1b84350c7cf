"""The worker's Prometheus metrics (prometheus-client), served on ``prometheus_port``.

Served like LiveKit Egress serves them (``:<prometheus_port>``, every interface, the text
format at any path). Everything comes from what the worker already follows, never from
recorders: the service's listener gives each egress's ``EgressInfo`` (start, end, final status,
stream results), the worker gives its reserved and available CPU and its IOInfo retries.

* ``pyegress_worker_active_egresses{type}``: egresses running here by request type;
* ``pyegress_worker_egresses_started_total{type}`` / ``..._ended_total{type,status}``;
* ``pyegress_worker_cpu_available`` / ``..._cpu_capacity``: cores left for new egresses (the
  admission figure the worker claims with) and its whole budget;
* ``pyegress_worker_ioinfo_retries_total{method}``: IOInfo calls retried (server unreachable);
* ``pyegress_worker_stream_reconnects_total{type}``: the ``retries`` of stream results;
* ``pyegress_worker_egress_cpu_seconds{egress_id,type}`` / ``..._egress_peak_rss_bytes`` while an
  egress runs, then ``..._egress_cpu_seconds_summary{type}`` / ``..._egress_peak_rss_bytes_summary``
  once it ended (count and sum per type);
* ``pyegress_worker_egress_tick_backlog{egress_id,type}``: ticks queued for the egress's encoder
  (see :func:`tick_backlog`; growing means the worker no longer keeps up in real time);
* ``pyegress_worker_egress_frames_dropped_total{egress_id,type,stage}`` while an egress runs, and
  ``pyegress_worker_frames_dropped_total{type,stage}`` over every egress (ended ones too), from
  the recorder's ``progress()``: ``stage="output"`` counts video and audio frames a stream or
  WebSocket output could not send (receiver too slow, or away while reconnecting);
  ``stage="input"`` received video frames never shown (they came late, or faster than the output
  frame rate: what GStreamer's ``videorate`` counts as dropped). Read every ``interval`` s, at
  each scrape, and once more when the egress ends;
* the ``process_*`` metrics of prometheus-client's process collector (the whole worker).

Per-egress CPU and memory: every egress of a worker runs in the one process (its encoders on
threads that recorders own), so the figures are the process's, sampled with psutil every
``interval`` s and shared among the egresses running at each sample **in proportion to their
reserved cost** (``cpu_cost``): an egress alone gets the whole process, two equal egresses half
each. Peak RSS is the largest such share seen while it ran. That is an attribution, not a
measurement per thread: knowing which threads belong to which egress would mean reaching into
recorders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil
from aiohttp import web
from livekit.protocol import egress as pe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    ProcessCollector,
    Summary,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import EgressError
from ..info import is_terminal

if TYPE_CHECKING:
    from .egress import EgressWorker

log = logging.getLogger("pyegress.worker")

PREFIX = "pyegress_worker"
#: Where frames are dropped: ``output`` (not sent by a live output), ``input`` (never shown).
STAGES = ("output", "input")


@dataclass
class _Followed:
    kind: str
    cost: float
    cpu_s: float = 0.0
    peak_rss: float = 0.0
    reconnects: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))


def frames_dropped(worker: EgressWorker, egress_id: str) -> dict[str, int] | None:
    """Frames the egress dropped so far, by stage (None once its recorder is gone)."""
    try:
        progress = worker.service.recorder(egress_id).progress()
    except EgressError:
        return None
    return {"output": progress.frames_dropped, "input": progress.frames_skipped}


def tick_backlog(worker: EgressWorker, egress_id: str) -> int | None:
    """Ticks the egress has queued for its encoder thread (None once it is over), from the
    recorder's public ``progress()``: no ``EgressInfo`` field says whether encoding keeps up."""
    try:
        return worker.service.recorder(egress_id).progress().backlog
    except EgressError:
        return None


def request_type(info: pe.EgressInfo) -> str:
    """The request type of an egress as LiveKit names it (``room_composite``, ``web``, ...)."""
    return info.WhichOneof("request") or "unknown"


class _Live(Collector):
    """Figures read from the worker at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        m, w = self.metrics, self.metrics.worker
        active = GaugeMetricFamily(f"{PREFIX}_active_egresses", "Egresses running here", labels=["type"])
        counts: dict[str, int] = {}
        for f in m.running.values():
            counts[f.kind] = counts.get(f.kind, 0) + 1
        for kind, n in sorted(counts.items()):
            active.add_metric([kind], n)
        yield active
        yield GaugeMetricFamily(
            f"{PREFIX}_cpu_available", "CPU cores left for new egresses", value=w.available
        )
        yield GaugeMetricFamily(f"{PREFIX}_cpu_capacity", "CPU cores for egresses", value=w.capacity)
        retries = CounterMetricFamily(f"{PREFIX}_ioinfo_retries", "IOInfo calls retried", labels=["method"])
        for method, n in sorted(w.io_retries.items()):
            retries.add_metric([method], n)
        yield retries
        cpu = GaugeMetricFamily(
            f"{PREFIX}_egress_cpu_seconds", "CPU seconds of a running egress (cost share)",
            labels=["egress_id", "type"],
        )  # fmt: skip
        rss = GaugeMetricFamily(
            f"{PREFIX}_egress_peak_rss_bytes", "Peak RSS of a running egress (cost share)",
            labels=["egress_id", "type"],
        )  # fmt: skip
        for egress_id, f in sorted(m.running.items()):
            cpu.add_metric([egress_id, f.kind], f.cpu_s)
            rss.add_metric([egress_id, f.kind], f.peak_rss)
        backlog = GaugeMetricFamily(
            f"{PREFIX}_egress_tick_backlog", "Ticks queued for a running egress's encoder",
            labels=["egress_id", "type"],
        )  # fmt: skip
        for egress_id, f in sorted(m.running.items()):
            ticks = tick_backlog(w, egress_id)
            if ticks is not None:
                backlog.add_metric([egress_id, f.kind], ticks)
        dropped = CounterMetricFamily(
            f"{PREFIX}_egress_frames_dropped", "Frames a running egress dropped, by stage",
            labels=["egress_id", "type", "stage"],
        )  # fmt: skip
        for egress_id, f in sorted(m.running.items()):
            for stage, n in f.dropped.items():
                dropped.add_metric([egress_id, f.kind, stage], n)
        yield cpu
        yield rss
        yield backlog
        yield dropped


class WorkerMetrics:
    """Follows ``worker``'s egresses into a registry of its own (see the module docstring)."""

    def __init__(self, worker: EgressWorker, *, interval: float = 1.0) -> None:
        self.worker = worker
        self.interval = interval
        self.registry = CollectorRegistry()
        self.running: dict[str, _Followed] = {}
        self._seen: set[str] = set()
        self.started = Counter(
            f"{PREFIX}_egresses_started", "Egresses started here", ["type"], registry=self.registry
        )
        self.ended = Counter(
            f"{PREFIX}_egresses_ended", "Egresses ended here, by final status", ["type", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.reconnects = Counter(
            f"{PREFIX}_stream_reconnects", "Stream output reconnects (stream results' retries)", ["type"],
            registry=self.registry,
        )  # fmt: skip
        self.frames_dropped = Counter(
            f"{PREFIX}_frames_dropped", "Frames dropped by every egress, by stage", ["type", "stage"],
            registry=self.registry,
        )  # fmt: skip
        self.cpu_summary = Summary(
            f"{PREFIX}_egress_cpu_seconds_summary", "CPU seconds of ended egresses (cost share)", ["type"],
            registry=self.registry,
        )  # fmt: skip
        self.rss_summary = Summary(
            f"{PREFIX}_egress_peak_rss_bytes_summary", "Peak RSS of ended egresses (cost share)", ["type"],
            registry=self.registry,
        )  # fmt: skip
        self.registry.register(_Live(self))
        ProcessCollector(registry=self.registry)
        self._process = psutil.Process()
        self._last_cpu = self._cpu_now()
        self._stop_listening = worker.service.listen(self._on_info)
        self._sampler: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling the process's CPU and memory (on the running event loop)."""
        self._last_cpu = self._cpu_now()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def close(self) -> None:
        self._stop_listening()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    def scrape(self) -> bytes:
        """The text exposition of every metric."""
        self.sample()
        return generate_latest(self.registry)

    # --- following egresses -----------------------------------------------------------------

    def _on_info(self, info: pe.EgressInfo) -> None:
        egress_id = info.egress_id
        kind = request_type(info)
        followed = self.running.get(egress_id)
        if followed is None and egress_id not in self._seen:
            self._seen.add(egress_id)
            self.sample()  # what ran so far belongs to the others
            entry = self.worker.egresses.get(egress_id)
            followed = _Followed(kind, entry.cost if entry is not None else 1.0)
            self.running[egress_id] = followed
            self.started.labels(kind).inc()
        if followed is None:
            return
        retries = sum(s.retries for s in info.stream_results)
        if retries > followed.reconnects:
            self.reconnects.labels(kind).inc(retries - followed.reconnects)
            followed.reconnects = retries
        if is_terminal(info.status):
            self.sample()
            self._count_drops(egress_id, followed)  # the last figures, while the recorder is still here
            del self.running[egress_id]
            self.ended.labels(kind, pe.EgressStatus.Name(info.status)).inc()
            self.cpu_summary.labels(kind).observe(followed.cpu_s)
            self.rss_summary.labels(kind).observe(followed.peak_rss)

    # --- sampling ---------------------------------------------------------------------------

    def _cpu_now(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def sample(self) -> None:
        """Share the CPU used since the last sample and the current RSS among running egresses."""
        now = self._cpu_now()
        used, self._last_cpu = now - self._last_cpu, now
        if not self.running:
            return
        rss = float(self._process.memory_info().rss)
        total = sum(f.cost for f in self.running.values()) or 1.0
        for egress_id, f in list(self.running.items()):
            share = f.cost / total
            f.cpu_s += used * share
            f.peak_rss = max(f.peak_rss, rss * share)
            self._count_drops(egress_id, f)

    def _count_drops(self, egress_id: str, followed: _Followed) -> None:
        """Bring the egress's dropped-frame figures and the worker's totals up to date."""
        now = frames_dropped(self.worker, egress_id)
        for stage, n in (now or {}).items():
            total = self.frames_dropped.labels(followed.kind, stage)  # shown from 0 on
            if n > followed.dropped[stage]:
                total.inc(n - followed.dropped[stage])
                followed.dropped[stage] = n

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sample()


async def serve_metrics(metrics: WorkerMetrics, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Serve ``metrics`` on ``host:port`` (every interface, as LiveKit Egress does)."""

    async def scrape(_: web.Request) -> web.Response:
        body = metrics.scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/{tail:.*}", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
