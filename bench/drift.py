"""Drift over a long recording: A/V offset and marker position against wall time, start to end.

Run ``python -m pyegress.testing.netns -- python -m bench.drift [--minutes 30] [--write]`` (in a
network namespace of its own: see docs/performance.md). It starts a livekit-server and one
synthetic publisher (640x360 30 fps H.264 + Opus, its own process) whose picture flashes white
and whose sound beeps at ``t0 + n`` seconds of its monotonic clock, and records it for
``--minutes`` with a participant egress and, at the same time, a room composite (grid), both
640x360 30 fps H.264 + AAC to MP4, in this process.

For each file, from ``pyegress.testing.av_offset`` (flash and beep onsets, decoded as they come):

* **against wall time**: marker ``n`` (counted from the first flash in the file) was sent ``n``
  seconds after the first one, so its flash should land ``n`` seconds after the first flash; the
  difference (its *position*) at the start and the end, and the drift per hour: the slope of a
  line fitted through every marker's position (each one is quantised to the 33 ms frame grid; the
  fit over all of them is not);
* **A/V**: beep onset minus flash onset at the start and the end, and its drift per hour, fitted
  the same way.

"Start" and "end" are the medians over the first and the last minute of markers. The goal is
less than 100 ms per hour for both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    child_env,
    command_line,
    machine_line,
    markdown_table,
    now_utc,
    server_line,
    start_publishers,
    stop_processes,
    update_section,
    wait_published,
)

SECTION = "drift"
WIDTH, HEIGHT, FPS = 640, 360, 30
GOAL_MS_PER_H = 100.0
#: Markers at each end of the recording whose median is its start or end figure.
EDGE_MARKERS = 60
#: Markers per row of the series table (a steady drift is a slope through it, a step under load
#: a jump between two rows).
BLOCK_MARKERS = 300


def _options() -> Any:
    from livekit.protocol import egress as pe
    from livekit.protocol import models as pm

    return pe.EncodingOptions(
        width=WIDTH, height=HEIGHT, framerate=FPS, video_codec=pm.H264_MAIN, video_bitrate=1000,
        audio_codec=pm.AAC, audio_bitrate=64, key_frame_interval=4.0,
    )  # fmt: skip


async def _record(
    server: Any, room: str, out: Path, seconds: float, composite: bool
) -> dict[str, dict[str, Any]]:
    """Record ``room`` for ``seconds``: {label: {"path", "recorded_s"}}."""
    from livekit.protocol import egress as pe

    import pyegress

    files: dict[str, dict[str, Any]] = {}
    async with pyegress.EgressService(
        url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        output_dir=str(out),
        wait_timeout=15.0,
    ) as svc:
        infos = {
            "participant": await svc.start_participant_egress(pe.ParticipantEgressRequest(
                room_name=room, identity="p00", advanced=_options(),
                file_outputs=[pe.EncodedFileOutput(filepath="participant.mp4")],
            )),
        }  # fmt: skip
        if composite:
            infos["room composite"] = await svc.start_room_composite_egress(pe.RoomCompositeEgressRequest(
                room_name=room, layout="grid", advanced=_options(),
                file_outputs=[pe.EncodedFileOutput(filepath="room-composite.mp4")],
            ))  # fmt: skip
        started = time.monotonic()
        deadline = started + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(60.0, left))
            print(f"  {(time.monotonic() - started) / 60:.1f} min recorded", file=sys.stderr, flush=True)
        for label, info in infos.items():
            final = await svc.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
            if final.status != pe.EGRESS_COMPLETE:
                raise SystemExit(f"{label} egress ended {pe.EgressStatus.Name(final.status)}: {final.error}")
            result = final.file_results[0]
            files[label] = {"path": result.filename, "recorded_s": result.duration / 1e9}
    return files


def _fit_ms_per_h(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Slope of the least-squares line through (xs s, ys s), in ms per hour."""
    return statistics.linear_regression(xs, ys).slope * 3600 * 1000


def analyse(path: str) -> dict[str, Any]:
    """The drift figures of one recording of the marker pattern (see the module's docstring)."""
    from pyegress.testing import av_offset

    started = time.monotonic()
    res = av_offset(path)
    flashes = res.flash_times
    first = flashes[0]
    index = [round(f - first) for f in flashes]
    position = [f - first - n for f, n in zip(flashes, index, strict=True)]
    last = index[-1]
    head = [p for p, n in zip(position, index, strict=True) if n < EDGE_MARKERS]
    tail = [p for p, n in zip(position, index, strict=True) if n > last - EDGE_MARKERS]
    times, offsets = res.paired_flashes, res.offsets
    av_head = [o for t, o in zip(times, offsets, strict=True) if t < first + EDGE_MARKERS]
    av_tail = [o for t, o in zip(times, offsets, strict=True) if t > first + last - EDGE_MARKERS]
    blocks: dict[int, tuple[float, float, float]] = {}
    for lo in range(0, last + 1, BLOCK_MARKERS):
        pos = [p for p, n in zip(position, index, strict=True) if lo <= n < lo + BLOCK_MARKERS]
        av = [o for t, o in zip(times, offsets, strict=True) if lo <= t - first < lo + BLOCK_MARKERS]
        if pos and av:
            blocks[lo] = (statistics.median(pos) * 1000, max(pos) * 1000, statistics.median(av) * 1000)
    return {
        "markers": len(flashes),
        "span_s": last,
        "missing": last + 1 - len(set(index)),
        "wall_start_ms": statistics.median(head) * 1000,
        "wall_end_ms": statistics.median(tail) * 1000,
        "wall_range_ms": (min(position) * 1000, max(position) * 1000),
        "wall_drift_ms_per_h": _fit_ms_per_h(index, position),
        "av_pairs": len(offsets),
        "av_start_ms": statistics.median(av_head) * 1000,
        "av_end_ms": statistics.median(av_tail) * 1000,
        "av_range_ms": (min(offsets) * 1000, max(offsets) * 1000),
        "av_drift_ms_per_h": _fit_ms_per_h(times, offsets),
        "blocks": blocks,
        "analysis_s": time.monotonic() - started,
    }


def _verdict(ms_per_h: float) -> str:
    return "meets" if abs(ms_per_h) < GOAL_MS_PER_H else "misses"


def _block_cells(results: dict[str, dict[str, Any]], lo: int) -> list[str]:
    """The series row of markers ``lo ..``: each recording's positions, then each one's A/V."""
    blocks = [r["blocks"].get(lo) for r in results.values()]
    return [f"{b[0]:+.0f} ({b[1]:+.0f})" if b else "" for b in blocks] + [
        f"{b[2]:+.0f}" if b else "" for b in blocks
    ]


def _report(results: dict[str, dict[str, Any]], minutes: float, argv: Sequence[str]) -> str:
    rows = []
    for label, r in results.items():
        rows.append([
            label, f"{r['recorded_s'] / 60:.1f}", f"{r['markers']} ({r['missing']} missing)",
            f"{r['wall_start_ms']:+.0f}", f"{r['wall_end_ms']:+.0f}", f"{r['wall_drift_ms_per_h']:+.1f}",
            f"{r['av_start_ms']:+.0f}", f"{r['av_end_ms']:+.0f}", f"{r['av_drift_ms_per_h']:+.1f}",
            "{:+.0f} .. {:+.0f}".format(*r["av_range_ms"]),
        ])  # fmt: skip
    table = markdown_table(
        [
            "recording", "minutes", "markers", "position at start ms", "position at end ms",
            "wall drift ms/h", "A/V at start ms", "A/V at end ms", "A/V drift ms/h", "A/V range ms",
        ],
        rows,
    )  # fmt: skip
    starts = sorted({lo for r in results.values() for lo in r["blocks"]})
    series = markdown_table(
        ["markers (s from the first)", *(f"{label}: position ms, median (most)" for label in results),
         *(f"{label}: A/V ms" for label in results)],
        [[f"{lo} .. {lo + BLOCK_MARKERS - 1}", *_block_cells(results, lo)] for lo in starts],
    )  # fmt: skip
    worst_wall = max(abs(r["wall_drift_ms_per_h"]) for r in results.values())
    worst_av = max(abs(r["av_drift_ms_per_h"]) for r in results.values())
    return f"""## Drift over {minutes:g} minutes (`bench/drift.py`)

**Drift against wall time: at most {worst_wall:.1f} ms per hour ({_verdict(worst_wall)} the goal of
< {GOAL_MS_PER_H:.0f} ms/h); A/V drift: at most {worst_av:.1f} ms per hour ({_verdict(worst_av)} it).**

Command: `{command_line(argv)}` · {now_utc()} · {machine_line()}

One synthetic publisher ({WIDTH}x{HEIGHT} {FPS} fps H.264 + Opus, its own process; a white flash and a
1 kHz beep at every second of its clock) through {server_line()}, recorded at the same time by a
participant egress and a room composite (grid), each {WIDTH}x{HEIGHT} {FPS} fps H.264 1000 kbps + AAC
to MP4. "Position" is where marker n's flash lands in the file against n s after the first
flash (each one on the 33 ms frame grid); "A/V" is its beep's onset minus its flash's (positive:
sound later). Start and end are the medians over the first and last {EDGE_MARKERS} markers; the
drifts are the slopes of least-squares lines through all markers, per hour of recording.

{table}

By {BLOCK_MARKERS} markers (a steady drift is a slope through the rows; a load episode that
delayed delivery, a step or a peak):

{series}
"""


async def _main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pyegress.testing import LiveKitServer

    seconds = args.minutes * 60
    with (
        (
            contextlib.nullcontext(tempfile.mkdtemp(prefix="pyegress-drift-", dir=args.out_dir))
            if args.keep
            else tempfile.TemporaryDirectory(prefix="pyegress-drift-", dir=args.out_dir)
        ) as out,
        LiveKitServer(log_level="warn") as server,
    ):
        room = "bench-drift"
        pubs = start_publishers(
            room, 1, child_env(server), seconds + 300, size=(WIDTH, HEIGHT), fps=FPS, niced=False
        )
        try:
            await wait_published(server, room, 1)
            await asyncio.sleep(2.0)  # the publisher's encoder ramps up to full size and rate
            print(f"recording {args.minutes:g} min ...", file=sys.stderr, flush=True)
            files = await _record(server, room, Path(out), seconds, not args.no_composite)
        finally:
            stop_processes(pubs)
        results = {}
        for label, f in files.items():
            print(f"analysing {label} ({f['path']}) ...", file=sys.stderr, flush=True)
            results[label] = {**f, **analyse(f["path"])}
            print(f"  {results[label]}", file=sys.stderr, flush=True)
    report = _report(results, args.minutes, argv)
    print(report)
    if args.write:
        update_section(SECTION, report)
        print(f"updated docs/performance.md section {SECTION!r}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__.split("\n", 1)[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to record (default 30)")
    p.add_argument("--no-composite", action="store_true", help="record the participant egress only")
    p.add_argument("--out-dir", default=None, help="where the recordings go while analysed (default: TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the recordings (their paths are printed)")
    p.add_argument("--write", action="store_true", help="update docs/performance.md")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return asyncio.run(_main(_parser().parse_args(argv), ["-m", "bench.drift", *argv]))


if __name__ == "__main__":
    sys.exit(main())
