"""CPU and memory of the web path (Chromium): the two capture paths, and a template against the native layout.

Run ``python -m bench.web [--seconds 15] [--write]``. Each run is a child process of its own
(one after the other); Chromium, the Playwright driver and Xvfb are its descendants, so every
figure is the whole process tree, sampled from /proc inside the child over the recording window
(CPU) and every 0.25 s (PSS, summed over the tree):

* ``web-capture`` section: a web egress (``start_web_egress``) of a full-window animated canvas
  with a WebAudio tone at 1280x720 30 fps (preset H264_720P_30, MP4), once with each capture
  path: ``x11`` (Chromium headful on its own Xvfb, read with PyAV's x11grab) and ``screencast``
  (headless Chromium, DevTools ``Page.startScreencast`` JPEG frames). Figures: CPU per recorded
  second, frames captured per second, distinct pictures per second in the file.
* ``web`` section: the same 4-participant room (4 synthetic publishers, 640x360 30 fps + tone,
  each its own process, not counted) recorded at 720p30 (H264_720P_30) by the native ``grid``
  layout and by the sample template (examples/templates, ``custom_base_url``). The ratio is
  template / native.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    ChildRun,
    check_child,
    child_env,
    command_line,
    machine_line,
    markdown_table,
    now_utc,
    run_child,
    start_publishers,
    stop_processes,
    update_section,
    write_result,
)

PARTICIPANTS = 4
TEMPLATES = REPO / "examples" / "templates" / "dist"

_PAGE = """<!doctype html><html><body style="margin:0;background:#000;overflow:hidden">
<canvas id=c width=1280 height=720 style="width:100vw;height:100vh;display:block"></canvas>
<script>
const g = document.getElementById('c').getContext('2d');
function draw(t) {
  g.fillStyle = '#204080'; g.fillRect(0, 0, 1280, 720);
  g.fillStyle = '#e0c030'; g.fillRect((t / 3) % 1280, 200, 200, 300);
  g.fillStyle = '#fff'; g.font = '60px sans-serif'; g.fillText(String(Math.floor(t)), 50, 100);
  requestAnimationFrame(draw);
}
requestAnimationFrame(draw);
const ctx = new AudioContext(), osc = ctx.createOscillator(), gain = ctx.createGain();
osc.frequency.value = 440; gain.gain.value = 0.3; osc.connect(gain).connect(ctx.destination); osc.start();
console.log('START_RECORDING');
</script></body></html>"""


# --- the process tree, from /proc ------------------------------------------------------------


def _tree() -> list[int]:
    """This process and all its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found = {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def tree_cpu() -> float:
    """User + system CPU seconds of the live process tree (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _tree():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def tree_pss_mib() -> float:
    """Proportional set size of the live process tree, MiB: shared pages (Chromium's processes
    share most of theirs) are split between the processes that map them, so the sum is honest."""
    total = 0
    for pid in _tree():
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _distinct_fps(path: Path) -> float:
    """Distinct pictures per second in the file's video (repeated frames not counted)."""
    import av
    import numpy as np

    with av.open(str(path)) as c:
        prev = None
        distinct = frames = 0
        for frame in c.decode(video=0):
            y = frame.to_ndarray(format="gray")[::4, ::4]
            if prev is None or np.count_nonzero(np.abs(y.astype(np.int16) - prev) > 4) > 0.001 * y.size:
                distinct += 1
            prev = y.astype(np.int16)
            frames += 1
        return distinct / max(frames / 30.0, 1e-9)


# --- child ---------------------------------------------------------------------------------------


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    from livekit.protocol import egress as pe

    import pyegress

    out = Path(args.out_dir)
    svc = pyegress.EgressService(output_dir=out, wait_timeout=20.0)
    file = pe.EncodedFileOutput(filepath=f"{args.label}.mp4")
    if args.kind == "page":
        page = out / "page.html"
        page.write_text(_PAGE)
        os.environ["PYEGRESS_WEB_CAPTURE"] = args.capture
        info = await svc.start_web_egress(
            pe.WebEgressRequest(url=page.as_uri(), preset=pe.H264_720P_30, file_outputs=[file])
        )
    else:
        req = pe.RoomCompositeEgressRequest(
            room_name=args.room, layout="grid", preset=pe.H264_720P_30, file_outputs=[file]
        )
        if args.kind == "template":
            req.custom_base_url = args.template_url
        info = await svc.start_room_composite_egress(req)
    while info.status == pe.EGRESS_STARTING:
        await asyncio.sleep(0.05)
        info = (await svc.list_egress(pe.ListEgressRequest(egress_id=info.egress_id))).items[0]
    if info.status != pe.EGRESS_ACTIVE:
        raise SystemExit(f"egress did not start: {pe.EgressStatus.Name(info.status)} {info.error}")
    await asyncio.sleep(1.0)  # past the start-up
    recorder = svc.recorder(info.egress_id)
    page_src = getattr(recorder, "page", None)
    grabbed0 = page_src.frames_grabbed if page_src is not None else 0
    cpu0, t0, peak = tree_cpu(), time.monotonic(), 0.0
    while time.monotonic() - t0 < args.seconds:
        peak = max(peak, tree_pss_mib())
        await asyncio.sleep(0.25)
    cpu, wall = tree_cpu() - cpu0, time.monotonic() - t0
    grabbed = (page_src.frames_grabbed - grabbed0) if page_src is not None else 0
    final = await svc.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    if final.status != pe.EGRESS_COMPLETE:
        raise SystemExit(f"egress ended {pe.EgressStatus.Name(final.status)}: {final.error}")
    path = Path(final.file_results[0].filename)
    return {
        "cpu_per_s": cpu / wall,
        "window_s": wall,
        "peak_tree_pss_mib": peak,
        "captured_fps": grabbed / wall,
        "distinct_fps": _distinct_fps(path),
        "recorded_s": final.file_results[0].duration / 1e9,
    }


# --- parent --------------------------------------------------------------------------------------


def _run(label: str, args: list[str], seconds: float, env: dict[str, str]) -> ChildRun:
    print(f"running {label} ({seconds:g} s) ...", file=sys.stderr)
    run = check_child(
        run_child(label, ["-m", "bench.web", "--label", label, *args], timeout=seconds * 3 + 90, env=env)
    )
    print(f"  {json.dumps(run.result)}", file=sys.stderr)
    return run


def _capture_report(runs: dict[str, ChildRun], argv: Sequence[str]) -> str:
    x11, cast = runs["x11"].result, runs["screencast"].result
    rows = [
        [
            name,
            f"{r.result['cpu_per_s']:.2f}",
            f"{r.result['captured_fps']:.1f}",
            f"{r.result['distinct_fps']:.1f}",
            f"{r.result['peak_tree_pss_mib']:.0f}",
        ]
        for name, r in (
            ("x11: Chromium headful on Xvfb, PyAV x11grab", runs["x11"]),
            ("screencast: headless Chromium, CDP Page.startScreencast (JPEG)", runs["screencast"]),
        )
    ]
    table = markdown_table(
        ["capture path", "CPU s / s", "frames captured / s", "distinct pictures / s in file", "peak PSS MiB"],
        rows,
    )
    return f"""## Web capture: Xvfb + x11grab against the DevTools screencast (`bench/web.py`)

**x11 / screencast CPU = {x11["cpu_per_s"] / cast["cpu_per_s"]:.2f}**: pyegress captures with `x11` by default
(when Xvfb is installed; `PYEGRESS_WEB_CAPTURE=screencast` or `capture=` picks the other).

Command: `{command_line(argv)}` · {now_utc()} · {machine_line()}

A web egress of a full-window animated canvas (requestAnimationFrame) with a WebAudio tone,
1280x720 30 fps, preset H264_720P_30 to MP4. CPU is the whole process tree (pyegress, the
Playwright driver, every Chromium process, Xvfb) over the recording window, per second.

{table}

x11grab reads the screen at exactly the output rate (paced by FFmpeg), so every output frame is a
fresh picture; the screencast delivers a JPEG per compositor frame at whatever rate Chromium
paints (more than 30/s for a 60 Hz animation, fewer when the page is still), each encoded by
Chromium and decoded again by pyegress, and costs more. Audio is the same in both: an init
script taps every AudioContext and media element (there is no sound device to record).
"""


def _web_report(runs: dict[str, ChildRun], argv: Sequence[str]) -> str:
    native, tpl = runs["native"].result, runs["template"].result
    rows = [
        [name, f"{r['cpu_per_s']:.2f}", f"{r['peak_tree_pss_mib']:.0f}", f"{r['distinct_fps']:.1f}"]
        for name, r in (("native grid (RoomCompositeRecorder)", native), ("template in Chromium", tpl))
    ]
    table = markdown_table(
        ["room composite, 4 participants, 720p30", "CPU s / s", "peak PSS MiB", "pictures / s"], rows
    )
    return f"""## Web templates against the native layout (`bench/web.py`)

**template / native: CPU = {tpl["cpu_per_s"] / native["cpu_per_s"]:.2f} x, memory (peak PSS) = \
{tpl["peak_tree_pss_mib"] / native["peak_tree_pss_mib"]:.2f} x.**

Command: `{command_line(argv)}` · {now_utc()} · {machine_line()}

The same room of {PARTICIPANTS} synthetic publishers (640x360 30 fps H.264 + tone, own processes, not
counted) recorded at 1280x720 30 fps (H264_720P_30, MP4): by the native `grid` layout, and by
the sample template (examples/templates/grid, served on loopback) through `custom_base_url`,
captured with x11grab. Whole process tree over the recording window; memory is the peak PSS
summed over the tree (the template's Chromium is five or more processes sharing pages).

{table}

The template pays for a browser: its own WebRTC stack decoding every participant, Blink layout
and compositing, the page's audio through the capture tap; the native path decodes in the
LiveKit SDK and composites with numpy/swscale. Use templates for layouts you cannot express
natively.
"""


def _parent(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pyegress.testing import LiveKitServer

    if not (TEMPLATES / "grid" / "index.html").is_file():
        subprocess.run(["bash", str(REPO / "scripts" / "build-templates.sh")], check=True)
    seconds = args.seconds
    captures: dict[str, ChildRun] = {}
    rooms: dict[str, ChildRun] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pyegress-bench-") as out,
        LiveKitServer(log_level="warn") as server,
    ):
        env = child_env(server)
        common = ["--seconds", str(seconds), "--out-dir", out]
        for capture in ("x11", "screencast"):
            captures[capture] = _run(capture, ["--kind", "page", "--capture", capture, *common], seconds, env)
        room = "bench-web"
        http = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0", "-d", str(TEMPLATES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        pubs: list[subprocess.Popen[bytes]] = []
        try:
            line = http.stdout.readline() if http.stdout else ""  # "Serving HTTP on 127.0.0.1 port N ..."
            port = line.split(" port ")[1].split()[0]
            pubs = start_publishers(
                room, PARTICIPANTS, env, 4 * seconds + 120, niced=False, extra=["--marker-interval", "3600"]
            )
            time.sleep(4.0)
            room_args = [
                "--room",
                room,
                "--template-url",
                f"http://127.0.0.1:{port}/grid/index.html",
                *common,
            ]
            rooms["native"] = _run("native", ["--kind", "native", *room_args], seconds, env)
            rooms["template"] = _run("template", ["--kind", "template", *room_args], seconds, env)
        finally:
            stop_processes([*pubs, http])
    capture_report, web_report = _capture_report(captures, argv), _web_report(rooms, argv)
    print(capture_report)
    print(web_report)
    if args.write:
        update_section("web-capture", capture_report)
        update_section("web", web_report)
        print("updated docs/performance.md sections 'web-capture' and 'web'", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.web", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=15.0, help="seconds recorded per run (default 15)")
    p.add_argument("--write", action="store_true", help="update docs/performance.md")
    p.add_argument("--kind", choices=["page", "native", "template"], help=argparse.SUPPRESS)
    for name in ("--capture", "--room", "--template-url", "--out-dir", "--result", "--label"):
        p.add_argument(name, default="", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.kind:
        write_result(args.result, asyncio.run(_child(args)))
        return 0
    return _parent(args, ["-m", "bench.web", *argv])


if __name__ == "__main__":
    sys.exit(main())
