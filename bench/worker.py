"""``pyegress worker``: the cost of each request type through the server, beside the same request
in-process, the StartEgress answer time, and how many 720p30 track composites one worker holds.

Run ``python -m pyegress.testing.netns -- python -m bench.worker [--seconds 15] [--write]``. It
starts Debian's redis-server, a livekit-server with a ``redis:`` section and synthetic publishers
(their own processes, niced, not counted), then:

* **cost per request type** (track composite 720p30, room composite of 4 @ 720p, participant,
  track): a fresh ``pyegress worker`` process (health and metrics ports on) takes the request
  from livekit-server (``LiveKitAPI().egress``), records ``--seconds`` and is stopped through
  the server; its CPU is read from the kernel (``psutil``) from the moment its health JSON
  shows the egress ACTIVE until the egress has left it (files finished, final update sent), its
  peak RSS from ``VmHWM``. The same request runs in a child process of its own on
  ``EgressService`` (measured from ACTIVE until ``stop_egress`` returns, peak RSS from
  ``wait4``). ``--repeat`` pairs per type, in alternating order (one 15 s run varies by several
  per cent); the worker's overhead is the ratio of the two medians of CPU s/s minus 1 (target:
  within 5 %);
* **StartEgress answer time**: 20 audio-only track composites started (and stopped) one after
  the other through the server: the time ``start_track_composite_egress`` takes to answer;
* **capacity**: 720p30 track composites started one at a time on one worker (admission costs set
  near 0 so the worker never refuses): after each, ``--step`` seconds while its health JSON is
  read every 0.25 s; the worker holds ``n`` when no egress had more than ``LATE_TICKS`` ticks
  waiting for its encoder (the health JSON's ``backlog``), that figure did not keep growing
  through the step, and the log has no "ticks behind real time" warning with ``n`` running.
  The worker's CPU s/s at each step is reported beside it;
* **rooms** (``--only rooms``): the same with room composites of 4 participants (grid, 720p30)
  of one room of 4 publishers (640x360, so that their encoders leave the worker the CPUs),
  ``--room-step`` (default 30) seconds a step, each measured from 5 s after the new egress went
  ACTIVE.

``--write`` puts the tables into docs/performance.md (``<!-- bench:worker -->``, and
``<!-- bench:worker-rooms -->`` for the rooms part), each only when its parts ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    ChildRun,
    command_line,
    machine_line,
    markdown_table,
    now_utc,
    run_child,
    self_cpu,
    server_line,
    start_publishers,
    stop_processes,
    update_section,
    wait_published,
    write_result,
)
from bench.common import check_child as _check
from bench.common import child_env as _child_env

SECTION = "worker"
ROOMS_SECTION = "worker-rooms"
#: Seconds a new room composite runs before its step is measured: its four decoders start and
#: the first key frames arrive then.
ROOM_WARMUP = 5.0
#: The senders of the rooms part: 640x360, as bench/room_composite.py's 4 @ 720p, so that four
#: publishers' encoders (on the same 2 CPUs) leave the worker the machine.
ROOM_SENDERS = (640, 360)
#: The senders of the other parts: 1280x720 30 fps, what the 720p30 presets record.
SENDERS = (1280, 720)
TARGET = 0.05
#: A capacity step is late when an egress has more ticks than this waiting for its encoder
#: (half a second at 30 fps; a worker that keeps up has 0 or 1).
LATE_TICKS = 15
#: ... or when the most ticks waiting grew by more than this from the step's first half to its
#: second (a backlog that keeps growing falls behind, however slowly).
GROWING_TICKS = 4
KINDS = ("track_composite", "room_composite", "participant", "track")
LABELS = {
    "track_composite": "track composite 720p30",
    "room_composite": "room composite 4 @ 720p",
    "participant": "participant 720p30",
    "track": "track (H.264 re-encoded to MP4)",
}


# --- requests ---------------------------------------------------------------------------------


def _request(kind: str, room: str, tracks: dict[str, str], name: str) -> Any:
    """The request of ``kind`` (livekit.protocol's message, as ``LiveKitAPI`` takes it)."""
    from livekit.protocol import egress as pe

    mp4 = [pe.EncodedFileOutput(file_type=pe.EncodedFileType.MP4, filepath=f"{name}.mp4")]
    preset = pe.EncodingOptionsPreset.H264_720P_30
    if kind == "track_composite":
        return pe.TrackCompositeEgressRequest(
            room_name=room, audio_track_id=tracks["audio"], video_track_id=tracks["video"],
            preset=preset, file_outputs=mp4,
        )  # fmt: skip
    if kind == "room_composite":
        return pe.RoomCompositeEgressRequest(room_name=room, layout="grid", preset=preset, file_outputs=mp4)
    if kind == "participant":
        return pe.ParticipantEgressRequest(room_name=room, identity="p00", preset=preset, file_outputs=mp4)
    return pe.TrackEgressRequest(
        room_name=room, track_id=tracks["video"], file=pe.DirectFileOutput(filepath=f"{name}.mp4")
    )


# --- child: the same request in-process -------------------------------------------------------


async def _inproc_child(args: argparse.Namespace) -> dict[str, Any]:
    from google.protobuf.json_format import Parse
    from livekit.protocol import egress as pe

    from pyegress import EgressService
    from pyegress.config import REQUEST_TYPES

    entry = next(t for t in REQUEST_TYPES if t.slot == args.kind)
    request = Parse(args.request, entry.message())
    async with EgressService(output_dir=args.out_dir) as svc:
        info = started = await getattr(svc, entry.method)(request)
        async for info in svc.updates(started.egress_id):
            if info.status != pe.EGRESS_STARTING:
                break
        if info.status != pe.EGRESS_ACTIVE:
            raise SystemExit(f"egress not active: {pe.EgressStatus.Name(info.status)} {info.error}")
        cpu0, t0 = self_cpu(), time.monotonic()
        await asyncio.sleep(args.seconds)
        final = await svc.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
        cpu1, t1 = self_cpu(), time.monotonic()
    if final.status != pe.EGRESS_COMPLETE:
        raise SystemExit(f"egress ended {pe.EgressStatus.Name(final.status)}: {final.error}")
    return {"window_cpu_s": cpu1 - cpu0, "window_s": t1 - t0}


# --- the worker process -----------------------------------------------------------------------


@dataclass
class Worker:
    """A ``pyegress worker`` process, watched through its health port and log."""

    proc: subprocess.Popen[bytes]
    health: str
    log: Path

    async def state(self) -> dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.get(self.health) as res:
            data: dict[str, Any] = await res.json()
            return data

    async def until(self, ok: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                state = await self.state()
                if ok(state):
                    return state
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(
                    f"worker: no such state in {timeout:g} s; log:\n{self.log.read_text()[-3000:]}"
                )
            await asyncio.sleep(0.05)

    def cpu(self) -> float:
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def _worker(server: Any, redis: Any, out: Path, log: Path, costs: dict[str, float]) -> Worker:
    from pyegress.testing.ports import free_tcp_port

    port = free_tcp_port()
    body: dict[str, Any] = {
        "api_key": server.api_key,
        "api_secret": server.api_secret,
        "ws_url": server.url,
        "redis": {"address": redis.address},
        "output_dir": str(out),
        "health_port": port,
        "prometheus_port": free_tcp_port(),  # its metrics' sampling is in the figures
    }
    if costs:
        body["cpu_cost"] = costs
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pyegress.cli", "worker", "--config-body", json.dumps(body)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker = Worker(proc, f"http://127.0.0.1:{port}/", log)
    await worker.until(lambda s: s["status"] == "ok", 30)
    await asyncio.sleep(1.0)  # its psrpc subscriptions are in place a moment after the port
    return worker


def _active(state: dict[str, Any]) -> list[str]:
    return [a["status"] for a in state["active"]]


async def _through_worker(
    server: Any, redis: Any, out: Path, kind: str, request: Any, seconds: float
) -> dict[str, Any]:
    from livekit.protocol import egress as pe

    worker = await _worker(server, redis, out, out / f"{kind}.log", {})
    try:
        async with server.api_client() as lk:
            info = await getattr(lk.egress, f"start_{kind}_egress")(request)
            await worker.until(lambda s: _active(s) == ["EGRESS_ACTIVE"], 30)
            cpu0, t0 = worker.cpu(), time.monotonic()
            await asyncio.sleep(seconds)
            await lk.egress.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
            await worker.until(lambda s: s["active"] == [], 60)
            cpu1, t1 = worker.cpu(), time.monotonic()
            final = (await lk.egress.list_egress(pe.ListEgressRequest(egress_id=info.egress_id))).items[0]
        rss = worker.peak_rss_mib()
    finally:
        code = worker.stop()
    if final.status != pe.EGRESS_COMPLETE or code != 0:
        raise SystemExit(
            f"{kind} through the worker: {pe.EgressStatus.Name(final.status)} {final.error}, exit {code}"
        )
    return {"cpu_s": cpu1 - cpu0, "window_s": t1 - t0, "rss_mib": rss}


async def _answer_times(server: Any, redis: Any, out: Path, room: str, audio: str, count: int) -> list[float]:
    from livekit.protocol import egress as pe

    worker = await _worker(server, redis, out, out / "answers.log", {})
    times = []
    try:
        async with server.api_client() as lk:
            for i in range(count):
                ogg = pe.EncodedFileOutput(file_type=pe.EncodedFileType.OGG, filepath=f"answers/{i}")
                t0 = time.monotonic()
                info = await lk.egress.start_track_composite_egress(
                    pe.TrackCompositeEgressRequest(room_name=room, audio_track_id=audio, file_outputs=[ogg])
                )
                times.append(time.monotonic() - t0)
                await worker.until(lambda s: _active(s) == ["EGRESS_ACTIVE"], 30)
                await lk.egress.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
                await worker.until(lambda s: s["active"] == [], 30)
    finally:
        worker.stop()
    return times


async def _capacity(
    server: Any,
    redis: Any,
    out: Path,
    room: str,
    tracks: dict[str, str],
    step: float,
    most: int,
    kind: str = "track_composite",
    warmup: float = 0.0,
) -> list[dict[str, Any]]:
    """Steps of (running, worker CPU s/s, most ticks waiting, backlog warnings, late) until late:
    requests of ``kind`` on ``room`` started one at a time on one worker, each step measured
    ``warmup`` s after the new egress went ACTIVE (its decoders start and its first frames
    arrive then)."""
    from livekit.protocol import egress as pe

    costs = {
        f"{k}_cpu_cost": 0.01 for k in ("room_composite", "web", "participant", "track_composite", "track")
    }
    log = out / f"capacity-{kind}.log"
    worker = await _worker(server, redis, out, log, costs)
    steps: list[dict[str, Any]] = []
    ids: list[str] = []
    try:
        async with server.api_client() as lk:
            for n in range(1, most + 1):
                info = await getattr(lk.egress, f"start_{kind}_egress")(
                    _request(kind, room, tracks, f"cap-{kind}/{n}")
                )
                ids.append(info.egress_id)
                await worker.until(lambda s, n=n: _active(s).count("EGRESS_ACTIVE") == n, 30)
                await asyncio.sleep(warmup)
                seen = log.read_text().count("ticks behind real time")
                cpu0, t0 = worker.cpu(), time.monotonic()
                samples: list[int] = []
                while time.monotonic() - t0 < step:
                    state = await worker.state()
                    samples.append(max([0, *(a.get("backlog") or 0 for a in state["active"])]))
                    await asyncio.sleep(0.25)
                backlog, half = max(samples), len(samples) // 2
                growing = max(samples[half:]) - max(samples[:half]) > GROWING_TICKS
                warnings = log.read_text().count("ticks behind real time") - seen
                late = backlog > LATE_TICKS or growing or warnings > 0
                cpu_per_s = (worker.cpu() - cpu0) / (time.monotonic() - t0)
                steps.append(
                    {
                        "running": n,
                        "cpu_per_s": cpu_per_s,
                        "backlog": backlog,
                        "warnings": warnings,
                        "late": late,
                        "samples": samples[::4],  # the most ticks waiting, about once a second
                    }
                )
                print(f"  capacity ({kind}): {steps[-1]}", file=sys.stderr)
                if late:
                    break
            for egress_id in ids:
                await lk.egress.stop_egress(pe.StopEgressRequest(egress_id=egress_id))
            await worker.until(lambda s: s["active"] == [], 120)
    finally:
        worker.stop()
    return steps


# --- parent -----------------------------------------------------------------------------------


def _inproc(kind: str, request: Any, out: Path, seconds: float, env: dict[str, str]) -> ChildRun:
    from google.protobuf.json_format import MessageToJson

    child = ["-m", "bench.worker", "--child-inproc", "--kind", kind, "--request", MessageToJson(request)]
    out.mkdir(parents=True, exist_ok=True)
    child += ["--seconds", str(seconds), "--out-dir", str(out)]
    return _check(run_child(f"{kind} in-process", child, timeout=seconds * 3 + 60, env=env))


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from pyegress.testing import LiveKitServer
    from pyegress.testing.redis_server import RedisServer

    seconds = args.seconds
    parts = set(args.only.split(",")) if args.only else set()
    kinds = [k for k in KINDS if not parts or k in parts]
    results: dict[str, Any] = {"cost": {}, "answers": [], "capacity": [], "rooms": []}
    with (
        tempfile.TemporaryDirectory(prefix="pyegress-bench-") as tmp,
        RedisServer() as redis,
        LiveKitServer(redis_address=redis.address, log_level="warn") as server,
    ):
        out, env = Path(tmp), _child_env(server)
        one = start_publishers("bench-worker-1", 1, env, 3600, size=SENDERS)
        try:
            tracks = (await wait_published(server, "bench-worker-1", 1))["p00"]
            await asyncio.sleep(3.0)  # the publisher's encoder ramps up
            for kind in kinds:
                four = (
                    start_publishers("bench-worker-4", 4, env, 3600, size=SENDERS)
                    if kind == "room_composite"
                    else []
                )
                try:
                    room = "bench-worker-4" if four else "bench-worker-1"
                    if four:
                        await wait_published(server, room, 4)
                        await asyncio.sleep(3.0)
                    pairs = []
                    for i in range(args.repeat):
                        pair: dict[str, Any] = {}
                        for side in ("worker", "inproc") if i % 2 == 0 else ("inproc", "worker"):
                            name = f"{kind}-{side}-{i}"
                            print(f"running {name} ({seconds:g} s) ...", file=sys.stderr)
                            request = _request(kind, room, tracks, name)
                            if side == "worker":
                                w = await _through_worker(server, redis, out / "w", kind, request, seconds)
                                pair[side] = w
                            else:
                                run = await asyncio.to_thread(_inproc, kind, request, out / "p", seconds, env)
                                pair[side] = {**run.result, "rss_mib": run.max_rss_mib}
                            print(f"  {pair[side]}", file=sys.stderr)
                        pairs.append(pair)
                    results["cost"][kind] = pairs
                finally:
                    stop_processes(four)
            if not parts or "answers" in parts:
                print("running StartEgress answer times ...", file=sys.stderr)
                results["answers"] = await _answer_times(
                    server, redis, out / "a", "bench-worker-1", tracks["audio"], 20
                )
            if not parts or "capacity" in parts:
                print("running capacity ...", file=sys.stderr)
                results["capacity"] = await _capacity(
                    server, redis, out / "c", "bench-worker-1", tracks, args.step, args.most
                )
            if not parts or "rooms" in parts:
                print("running room composite capacity ...", file=sys.stderr)
                four = start_publishers("bench-worker-rooms", 4, env, 3600, size=ROOM_SENDERS)
                try:
                    await wait_published(server, "bench-worker-rooms", 4)
                    await asyncio.sleep(3.0)
                    results["rooms"] = await _capacity(
                        server, redis, out / "r", "bench-worker-rooms", tracks,
                        args.room_step, args.room_most, kind="room_composite", warmup=ROOM_WARMUP,
                    )  # fmt: skip
                finally:
                    stop_processes(four)
        finally:
            stop_processes(one)
    return results


def _per_s(cpu: float, wall: float) -> float:
    return cpu / wall if wall > 0 else 0.0


def _repeats(results: dict[str, Any]) -> int:
    return max((len(pairs) for pairs in results["cost"].values()), default=0)


def _report(results: dict[str, Any], argv: Sequence[str], steps_s: float) -> str:
    rows = []
    for kind, pairs in results["cost"].items():
        wss = [_per_s(p["worker"]["cpu_s"], p["worker"]["window_s"]) for p in pairs]
        pss = [_per_s(p["inproc"]["window_cpu_s"], p["inproc"]["window_s"]) for p in pairs]
        ws, ps = statistics.median(wss), statistics.median(pss)
        over = ws / ps - 1 if ps else 0.0
        each = " ".join(f"{w / p - 1:+.0%}" for w, p in zip(wss, pss, strict=True))
        rows.append(
            [
                LABELS[kind],
                f"{ws:.3f}",
                f"{ps:.3f}",
                f"{over:+.1%}",
                each,
                f"{max(p['worker']['rss_mib'] for p in pairs):.0f}",
                f"{max(p['inproc']['rss_mib'] for p in pairs):.0f}",
            ]
        )
    lines = [
        "## Worker: cost per request type, StartEgress answer time, capacity (`bench/worker.py`)",
        "",
        f"Measured {now_utc()} on {machine_line()}, {server_line()}; redis-server and livekit-server",
        "with a `redis:` section on loopback; synthetic 1280x720 30 fps H.264 + Opus publishers at nice 19.",
        f"Command: `{command_line(argv)}`.",
        "",
        "Median CPU s/s of one egress through a fresh `pyegress worker` process, metrics port on (from",
        "ACTIVE in its health JSON until it left it), beside the same request in a child process on",
        "`EgressService` (from ACTIVE until `stop_egress` returned); overhead = worker / in-process",
        f"- 1 (target: within {TARGET:.0%}); {_repeats(results)} pairs per type in alternating order.",
        "The defaults of the worker's `cpu_cost` (`DEFAULT_CPU_COST` in `worker/config.py`) are these",
        "worker figures, rounded up: 0.4 track composite, 0.8 room composite, 0.4 participant, 0.3 track",
        "(web, not measured here, stays a guess of 1.5).",
        "",
        markdown_table(
            [
                "request",
                "worker CPU s/s",
                "in-process CPU s/s",
                "overhead (medians)",
                "overhead of each pair",
                "worker peak RSS MiB",
                "in-process peak RSS MiB",
            ],
            rows,
        ),
    ]
    answers = results["answers"]
    if answers:
        lines += [
            "",
            f"StartEgress answer time through the server ({len(answers)} audio-only track composites,",
            "started and stopped one after the other): median "
            f"{statistics.median(answers) * 1000:.0f} ms, worst {max(answers) * 1000:.0f} ms.",
            "About 500 ms of it is livekit-server's wait for a claim of affinity 1 (psrpc's short-circuit",
            "timeout of its StartEgress client) before it takes an idle worker's 0.5, as with LiveKit",
            "Egress.",
        ]
    steps = results["capacity"]
    if steps:
        lines += [
            "",
            f"720p30 track composites on one worker, started one at a time ({steps_s:g} s a step; late:",
            f"an egress had more than {LATE_TICKS} ticks waiting for its encoder, the most waiting grew by",
            f"more than {GROWING_TICKS} from the step's first half to its second, or the log says 'ticks",
            "behind real time'):",
            "",
            _steps_table(steps),
            "",
            _held(steps),
        ]
    return "\n".join(lines)


def _steps_table(steps: list[dict[str, Any]]) -> str:
    return markdown_table(
        ["running", "worker CPU s/s", "most ticks waiting", "backlog warnings", "late"],
        [
            [s["running"], f"{s['cpu_per_s']:.2f}", s["backlog"], s["warnings"], "yes" if s["late"] else ""]
            for s in steps
        ],
    )


def _held(steps: list[dict[str, Any]]) -> str:
    held = max((s["running"] for s in steps if not s["late"]), default=0)
    limit = "" if any(s["late"] for s in steps) else " (no step fell behind: the bench's limit)"
    return f"Held in real time: {held}{limit}."


def _rooms_report(steps: list[dict[str, Any]], argv: Sequence[str], steps_s: float) -> str:
    from pyegress.worker.config import DEFAULT_CPU_COST

    cost, share = DEFAULT_CPU_COST["room_composite_cpu_cost"], DEFAULT_CPU_COST["max_cpu_utilization"]
    cores = os.cpu_count() or 1
    return "\n".join(
        [
            "### Worker capacity: room composites of 4 participants at 720p",
            "",
            f"Measured {now_utc()} on {machine_line()}, {server_line()}.",
            f"Command: `{command_line(argv)}`.",
            "",
            "Room composites (grid, 720p30 preset, MP4) of one room of 4 synthetic"
            f" {ROOM_SENDERS[0]}x{ROOM_SENDERS[1]} 30 fps H.264 + Opus publishers (their own processes",
            "at nice 19, on the same 2 CPUs: they get what the worker leaves; small senders as in the",
            "room composite section) started one at a time on one `pyegress worker` (admission costs",
            f"set near 0 so it never refuses); each step {steps_s:g} s, from {ROOM_WARMUP:g} s after the new",
            "egress went ACTIVE (its four decoders start then), with the health JSON read every 0.25 s.",
            "Late:",
            f"an egress had more than {LATE_TICKS} ticks waiting for its encoder (Progress.backlog), the",
            f"most waiting grew by more than {GROWING_TICKS} from the step's first half to its second, or",
            "the log says 'ticks behind real time'.",
            "",
            _steps_table(steps),
            "",
            _held(steps),
            f"With the default `cpu_cost` (room composite {cost:g}, `max_cpu_utilization` {share:g}) a",
            f"worker of {cores} cores admits {int(cores * share / cost + 1e-9)} of them.",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=15.0, help="seconds recorded per run (default 15)")
    p.add_argument("--repeat", type=int, default=3, help="worker / in-process pairs per type (default 3)")
    p.add_argument("--step", type=float, default=10.0, help="seconds per capacity step (default 10)")
    p.add_argument(
        "--most", type=int, default=8, help="most track composites in the capacity run (default 8)"
    )
    p.add_argument("--write", action="store_true", help="update docs/performance.md")
    p.add_argument("--json", default="", help="also write the raw figures to this file")
    p.add_argument(
        "--room-step", type=float, default=30.0, help="seconds per room composite capacity step (default 30)"
    )
    p.add_argument(
        "--room-most", type=int, default=6, help="most room composites in their capacity run (default 6)"
    )
    p.add_argument(
        "--only", default="", help="comma-separated parts: request kinds, answers, capacity, rooms"
    )
    p.add_argument("--child-inproc", action="store_true", help=argparse.SUPPRESS)
    for name in ("--kind", "--request", "--out-dir", "--result"):
        p.add_argument(name, default="", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the parent benchmark, or its measured in-process child."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child_inproc:
        write_result(args.result, asyncio.run(_inproc_child(args)))
        return 0
    results = asyncio.run(_measure(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    command = ["-m", "bench.worker", *argv]
    sections = []
    if results["cost"] or results["answers"] or results["capacity"]:
        sections.append((SECTION, _report(results, command, args.step)))
    if results["rooms"]:
        sections.append((ROOMS_SECTION, _rooms_report(results["rooms"], command, args.room_step)))
    for name, report in sections:
        print(report)
        if args.write:
            update_section(name, report)
            print(f"updated docs/performance.md section {name!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
