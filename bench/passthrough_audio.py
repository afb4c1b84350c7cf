"""How many audio passthrough track egresses one core holds in real time, and the peak RSS each
adds (issue 15: at least 100 per core).

Run ``python -m pyegress.testing.netns -- python -m bench.passthrough_audio [--counts 25 50 100
150 200] [--seconds 10] [--write]``. It starts a livekit-server and ``--publishers`` audio-only
synthetic publishers (processes of their own, niced, not counted), then for each count ``n`` a
child process pinned to one CPU (``sched_setaffinity``) runs ``n`` track egresses on
``EgressService`` (each an Ogg file of one publisher's Opus track, as sent; each its own
subscriber connection), waits until all are ACTIVE, and measures over ``--seconds``:

* its CPU (user + sys, every thread) per second of wall time;
* the Opus packets each egress wrote in the window against the 50 a second the publisher sends
  (the smallest share of all ``n``), and the event loop's lateness (a 10 ms timer's p99);

``n`` is held in real time when the CPU stays under 0.95 s/s, every egress wrote at least 97 %
of the packets sent, and the loop's p99 lateness is under 100 ms. Peak RSS per egress is the
child's peak RSS (``wait4``) less that of a child that started no egress, divided by ``n``.
``--write`` puts the table into docs/performance.md (``<!-- bench:passthrough-audio -->``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from bench.common import (
    ChildRun,
    check_child,
    child_env,
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
    write_result,
)

SECTION = "passthrough-audio"
#: Opus packets a second a publisher sends (20 ms each).
PACKETS_PER_S = 50
MAX_CPU, MIN_SHARE, MAX_LAG = 0.95, 0.97, 0.100


async def _loop_lag(stop: asyncio.Event, lags: list[float], period: float = 0.010) -> None:
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(period)
        lags.append(time.monotonic() - t - period)


async def child(n: int, tracks: list[str], room: str, seconds: float, cpu: int) -> dict[str, Any]:
    """``n`` audio track egresses in this process, pinned to CPU ``cpu``."""
    from livekit.protocol import egress as pe

    import pyegress

    os.sched_setaffinity(0, {cpu})
    if n == 0:
        return {"n": 0}
    with tempfile.TemporaryDirectory() as out:
        svc = pyegress.EgressService(output_dir=out, wait_timeout=60.0)
        ids = []
        for i in range(n):
            req = pe.TrackEgressRequest(room_name=room, track_id=tracks[i % len(tracks)],
                                        file=pe.DirectFileOutput(filepath=f"a{i:03d}"))  # fmt: skip
            ids.append((await svc.start_track_egress(req)).egress_id)
        recs = [svc.recorder(i) for i in ids]
        deadline = time.monotonic() + 120.0
        while any(r.info.status != pe.EGRESS_ACTIVE for r in recs) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        active = sum(r.info.status == pe.EGRESS_ACTIVE for r in recs)
        await asyncio.sleep(3.0)  # the last ones' first packets

        def frames() -> list[int]:
            return [sum(getattr(o, "frames", 0) for o in r.outputs) for r in recs]

        stop, lags = asyncio.Event(), list[float]()
        lag = asyncio.get_running_loop().create_task(_loop_lag(stop, lags))
        f0, c0, t0 = frames(), self_cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        f1, c1, t1 = frames(), self_cpu(), time.monotonic()
        stop.set()
        await lag
        shares = [(b - a) / (PACKETS_PER_S * (t1 - t0)) for a, b in zip(f0, f1, strict=True)]
        infos = await asyncio.gather(*(svc.stop_egress(pe.StopEgressRequest(egress_id=i)) for i in ids))
        complete = sum(info.status == pe.EGRESS_COMPLETE for info in infos)
        await svc.aclose()
    lags.sort()
    return {
        "n": n,
        "active": active,
        "complete": complete,
        "cpu_per_s": (c1 - c0) / (t1 - t0),
        "min_share": min(shares),
        "median_share": statistics.median(shares),
        "lag_p99": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
    }


async def _wait_audio(server: Any, room: str, count: int, timeout: float = 60.0) -> list[str]:
    from livekit import api
    from livekit.protocol import models as pm

    deadline = time.monotonic() + timeout
    async with server.api_client() as lk:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                sids = [t.sid for p in res.participants for t in p.tracks if t.type == pm.TrackType.AUDIO]
                if len(sids) >= count:
                    return sids
            await asyncio.sleep(0.25)
    raise SystemExit(f"fewer than {count} audio tracks in {room} within {timeout:g} s")


def _holds(r: dict[str, Any]) -> bool:
    return bool(
        r["active"] == r["n"] == r["complete"]
        and r["cpu_per_s"] < MAX_CPU
        and r["min_share"] >= MIN_SHARE
        and r["lag_p99"] < MAX_LAG
    )


def parent(args: argparse.Namespace) -> None:
    from pyegress.testing import LiveKitServer

    room = "bench-audio"
    with LiveKitServer() as srv:
        env = child_env(srv)
        pubs = start_publishers(room, args.publishers, env, 3600.0, extra=["--no-video"])
        try:
            tracks = asyncio.run(_wait_audio(srv, room, args.publishers))
            runs: list[ChildRun] = []
            for n in [0, *args.counts]:
                argv = ["-m", "bench.passthrough_audio", "--child", str(n), "--tracks", ",".join(tracks),
                        "--room", room, "--seconds", str(args.seconds), "--cpu", str(args.cpu)]  # fmt: skip
                run = check_child(run_child(f"n={n}", argv, timeout=300.0 + n, env=env))
                runs.append(run)
                if n:
                    r = run.result
                    print(f"n={n}: cpu {r['cpu_per_s']:.3f} s/s, packets min {r['min_share']:.1%}, "
                          f"loop p99 {r['lag_p99'] * 1000:.0f} ms, rss {run.max_rss_mib:.0f} MiB, "
                          f"holds: {_holds(r)}", flush=True)  # fmt: skip
        finally:
            stop_processes(pubs)
    base = runs[0].max_rss_mib
    rows = []
    for run in runs[1:]:
        r = run.result
        rows.append([
            r["n"], f"{r['cpu_per_s']:.3f}", f"{r['cpu_per_s'] / r['n'] * 1000:.1f}",
            f"{r['min_share']:.1%}", f"{r['lag_p99'] * 1000:.0f}", f"{run.max_rss_mib:.0f}",
            f"{(run.max_rss_mib - base) / r['n']:.2f}", "yes" if _holds(r) else "no",
        ])  # fmt: skip
    held = max((run.result["n"] for run in runs[1:] if _holds(run.result)), default=0)
    table = markdown_table(
        ["egresses", "CPU s/s", "CPU ms/s each", "packets (least)", "loop p99 ms", "peak RSS MiB",
         "RSS MiB each", "real time"], rows)  # fmt: skip
    body = f"""## Audio passthrough track egresses on one core (`bench/passthrough_audio.py`)

    python -m pyegress.testing.netns -- {command_line(["-m", "bench.passthrough_audio", *sys.argv[1:]])}

{now_utc()}; {machine_line()}; {server_line()}. Each egress records one of {args.publishers}
audio-only publishers' Opus tracks (their own niced processes) as sent into an Ogg file, all in
one process pinned to one CPU; {args.seconds:g} s measured once all are ACTIVE. Real time: CPU
under {MAX_CPU} s/s, every egress wrote at least {MIN_SHARE:.0%} of the {PACKETS_PER_S} packets a
second sent, the event loop's p99 lateness under {MAX_LAG * 1000:.0f} ms. RSS each: the peak
RSS less that of a child with no egress ({base:.0f} MiB), divided by the count.

{table}

One core held **{held}** concurrent audio passthrough track egresses in real time.
"""
    print(body)
    if args.write:
        update_section(SECTION, body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--counts", type=int, nargs="+", default=[25, 50, 100, 150, 200])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--cpu", type=int, default=0, help="the CPU the measured child is pinned to")
    p.add_argument("--write", action="store_true")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tracks", default="", help=argparse.SUPPRESS)
    p.add_argument("--room", default="", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        result = asyncio.run(child(args.child, args.tracks.split(","), args.room, args.seconds, args.cpu))
        write_result(args.result, result)
        return
    parent(args)


if __name__ == "__main__":
    main()
