"""The worker's health port and Prometheus metrics, read over HTTP from a ``pyegress worker``
process serving a real cluster (redis-server, livekit-server, ``LiveKitAPI().egress``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from livekit import api
from prometheus_client.parser import text_string_to_metric_families

from pyegress.testing import LiveKitServer, netns, probe
from pyegress.testing.ports import free_tcp_port
from pyegress.testing.redis_server import RedisServer
from pyegress.worker.config import DEFAULT_CPU_COST

from .helpers import publisher, status

pytestmark = pytest.mark.integration

T = TypeVar("T")


@dataclass
class Node:
    server: LiveKitServer
    health: str
    metrics: str
    out: Path
    log: Path

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.server.url, self.server.api_key, self.server.api_secret)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as redis:
        yield redis


@pytest.fixture(scope="module")
async def node(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    if netns.current() is None:
        pytest.fail("WebRTC tests run inside a network namespace (scripts/test.sh does)", pytrace=False)
    root = tmp_path_factory.mktemp("metrics")
    server = LiveKitServer(redis_address=redis_server.address)
    server.start()
    health_port, prometheus_port = free_tcp_port(), free_tcp_port()
    body = "\n".join(
        [
            f"api_key: {server.api_key}",
            f"api_secret: {server.api_secret}",
            f"ws_url: {server.url}",
            "redis:",
            f"  address: {redis_server.address}",
            f"output_dir: {root / 'out'}",
            f"health_port: {health_port}",
            f"prometheus_port: {prometheus_port}",
        ]
    )
    log = root / "worker.log"
    cmd = [sys.executable, "-m", "pyegress.cli", "worker", "--config-body", body, "--drain-timeout", "5"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=dict(os.environ))
    node = Node(
        server, f"http://127.0.0.1:{health_port}/", f"http://127.0.0.1:{prometheus_port}/metrics", root, log
    )
    try:
        await _eventually(lambda: _get_json(node.health), lambda h: h["status"] == "ok", 15)
        yield node
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -9
        server.stop()
        assert code == 0, f"worker exited {code}: {log.read_text()[-2000:]}"


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as res:
        return await res.json()


async def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the text exposition, by name and sorted labels."""
    async with aiohttp.ClientSession() as http, http.get(url) as res:
        assert res.status == 200 and res.content_type == "text/plain"
        text = await res.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _eventually(get: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float) -> T:
    """Poll ``get`` until ``ok`` holds (a refused connection counts as not yet), or time out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await get()
            if ok(value) or time.monotonic() > deadline:
                return value
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


_PER_EGRESS = "pyegress_worker_egress_cpu_seconds"


def _egress(egress_id: str) -> tuple[tuple[str, str], ...]:
    return (("egress_id", egress_id), ("type", "track_composite"))


def _tc(n: str) -> tuple[tuple[str, str], ...]:
    return (("type", "track_composite"),) if n == "" else (("status", n), ("type", "track_composite"))


async def test_health_and_metrics_follow_one_recording(node: Node, room_name: str) -> None:
    idle = await _get_json(node.health)
    assert idle["active"] == [] and idle["cpu_available"] == idle["cpu_capacity"] > 0
    async with publisher(node.server, room_name, video=False) as pub, node.api() as lk:
        started = await lk.egress.start_track_composite_egress(
            api.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                file_outputs=[api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath="m/a")],
            )
        )
        egress_id = started.egress_id

        def running(h: Any) -> bool:
            return [a.get("status") for a in h["active"]] == ["EGRESS_ACTIVE"]

        busy = await _eventually(lambda: _get_json(node.health), running, 15)
        assert [a["egress_id"] for a in busy["active"]] == [egress_id], busy
        assert 0 <= busy["active"][0]["backlog"] <= 2, busy  # one audio egress keeps up
        # a track composite reserves its cost until it has been reported over
        cost = DEFAULT_CPU_COST["track_composite_cpu_cost"]
        assert busy["cpu_available"] == pytest.approx(busy["cpu_capacity"] - cost, abs=1e-3), busy
        live = await _eventually(
            lambda: _metrics(node.metrics),
            lambda m: m.get((_PER_EGRESS, _egress(egress_id)), 0) > 0,
            10,
        )
        assert live[("pyegress_worker_active_egresses", _tc(""))] == 1
        assert live[("pyegress_worker_cpu_available", ())] == pytest.approx(busy["cpu_available"], abs=1e-3)
        assert live[("pyegress_worker_egresses_started_total", _tc(""))] == 1
        await asyncio.sleep(2.0)  # some recording
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
        done = await _eventually(lambda: _get_json(node.health), lambda h: h["active"] == [], 20)
        assert done["cpu_available"] == done["cpu_capacity"], done
        final = (await lk.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))).items[0]
    assert status(final) == "EGRESS_COMPLETE", final.error
    media = probe(final.file_results[0].filename)
    assert media.audio is not None and media.audio.codec == "opus" and media.duration > 1.5
    after = await _metrics(node.metrics)
    assert after[("pyegress_worker_egresses_ended_total", _tc("EGRESS_COMPLETE"))] == 1
    assert after.get(("pyegress_worker_active_egresses", _tc(""))) is None  # nothing running
    assert after[("pyegress_worker_egress_cpu_seconds_summary_count", _tc(""))] == 1
    assert (
        0
        < after[("pyegress_worker_egress_cpu_seconds_summary_sum", _tc(""))]
        <= after[("process_cpu_seconds_total", ())]
    )
    peak = after[("pyegress_worker_egress_peak_rss_bytes_summary_sum", _tc(""))]
    assert 50e6 < peak < 4e9, peak
    assert (_PER_EGRESS, _egress(egress_id)) not in after  # per-egress gauges go with the egress


async def test_frames_dropped_are_counted_per_egress_and_in_total(node: Node, room_name: str) -> None:
    """A 30 fps camera recorded at 15 fps: about every other received frame is never shown, which
    the worker exports as dropped at the input stage (per egress while it runs, then in the
    total); a file output sends everything (output stage 0)."""
    before = await _metrics(node.metrics)
    total = "pyegress_worker_frames_dropped_total"
    per_egress = "pyegress_worker_egress_frames_dropped_total"

    def stage(name: str) -> tuple[tuple[str, str], ...]:
        return (("stage", name), ("type", "track_composite"))

    async with publisher(node.server, room_name, fps=30) as pub, node.api() as lk:
        started = await lk.egress.start_track_composite_egress(
            api.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                video_track_id=pub.video_track_sid,
                advanced=api.EncodingOptions(width=320, height=240, framerate=15, video_bitrate=400),
                file_outputs=[api.EncodedFileOutput(filepath="drops/v.mp4")],
            )
        )
        egress_id = started.egress_id

        def key(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
            return per_egress, (("egress_id", egress_id), *stage(name))

        live = await _eventually(lambda: _metrics(node.metrics), lambda m: m.get(key("input"), 0) >= 30, 20)
        assert live[key("input")] >= 30 and live[key("output")] == 0, live.get(key("input"))
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
        await _eventually(lambda: _get_json(node.health), lambda h: h["active"] == [], 20)
        final = (await lk.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))).items[0]
    assert status(final) == "EGRESS_COMPLETE", final.error
    media = probe(final.file_results[0].filename)
    assert media.video is not None and media.video.measured_fps is not None
    assert abs(media.video.measured_fps - 15) < 1  # the frames not shown are the ones dropped
    after = await _metrics(node.metrics)
    skipped = after[(total, stage("input"))] - before.get((total, stage("input")), 0)
    # about half of the camera's frames over the recording (no frame is counted twice)
    assert live[key("input")] <= skipped <= 30 * (media.duration + 1), (skipped, media.duration)
    assert after[(total, stage("output"))] - before.get((total, stage("output")), 0) == 0
    assert key("input") not in after  # per-egress series go with the egress
