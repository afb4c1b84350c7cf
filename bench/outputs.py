"""CPU of one egress with file + HLS + 2 RTMP outputs, against the same egress with the file alone.

Run ``python -m bench.outputs [--seconds 20] [--write]``. It starts nginx-rtmp on loopback
(``pyegress.testing.RtmpServer``), then runs, each in a child process of its own and one after
the other, the real pyegress ``Pipeline`` (wall-clock ticks, shared encoders on the encode
thread, the output classes) fed with a pre-rendered 1280x720 30 fps moving pattern and a
48 kHz tone for ``--seconds``:

* ``file``: one MP4 ``FileOutput`` (H264_720P_30 settings, AAC);
* ``all``: the same MP4, plus HLS (2 s segments, live playlist) and the same stream sent to
  two RTMP URLs (each on its own connection and thread).

The LiveKit room is left out on purpose (it costs the same in both and would only dilute the
ratio): what differs between the runs is exactly the outputs. The headline is CPU(all) /
CPU(file), target <= 1.2 (one encode, shared). ``--write`` puts the table into
docs/performance.md (section ``outputs``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bench.common import (
    ChildRun,
    command_line,
    machine_line,
    markdown_table,
    now_utc,
    run_child,
    self_cpu,
    update_section,
    write_result,
)

SECTION = "outputs"
WIDTH, HEIGHT, FPS = 1280, 720, 30
TARGET = 1.2
_LABELS = {"file": "MP4", "all": "MP4 + HLS (2 s) + 2 x RTMP", "hls": "MP4 + HLS", "rtmp": "MP4 + 2 x RTMP"}


async def _drive(kind: str, seconds: float, rtmp_port: int, out_dir: Path) -> dict[str, object]:
    from pyegress.config import SegmentSuffix, StreamURL
    from pyegress.media.encoding import AudioEncoding, VideoEncoding
    from pyegress.media.timeline import AudioInput, VideoInput
    from pyegress.outputs import FileOutput, Output, SegmentOutput, StreamOutput
    from pyegress.outputs.segments import SegmentPaths
    from pyegress.pipeline import MIX_CHANNELS, MIX_RATE, Pipeline
    from pyegress.testing.signals import PatternGenerator, ToneGenerator

    video = VideoEncoding(width=WIDTH, height=HEIGHT, fps=FPS, bitrate_kbps=3000, keyframe_interval=2.0)
    audio = AudioEncoding()
    outputs: list[Output] = [FileOutput("file", out_dir / "f.mp4", video=video, audio=audio)]
    if kind in ("all", "hls"):
        paths = SegmentPaths(out_dir / "p.m3u8", out_dir / "live.m3u8", out_dir / "seg")
        outputs.append(
            SegmentOutput(
                "hls", paths, segment_duration=2, suffix=SegmentSuffix.INDEX, video=video, audio=audio
            )
        )
    if kind in ("all", "rtmp"):
        urls = [StreamURL(f"rtmp://127.0.0.1:{rtmp_port}/live/bench{i}_{time.time_ns()}") for i in (1, 2)]
        outputs.append(StreamOutput("rtmp", urls, video=video, audio=audio))

    # 2 s of pre-rendered frames, replayed: the source costs the same (almost nothing) in both runs
    pattern = PatternGenerator(WIDTH, HEIGHT, FPS)
    frames = [av.VideoFrame.from_ndarray(pattern.frame(k), format="yuv420p") for k in range(2 * FPS)]
    tone = ToneGenerator(MIX_RATE)

    started = time.monotonic()
    vin: VideoInput[av.VideoFrame] = VideoInput()
    ain = AudioInput(MIX_RATE, MIX_CHANNELS, started)
    pipe = Pipeline(outputs=outputs, video_input=vin, audio_inputs=[ain], fps=FPS)
    await asyncio.to_thread(pipe.open)
    stop = asyncio.Event()

    async def feed() -> None:
        k, n = 0, 0
        while not stop.is_set():
            now = time.monotonic()
            vin.push(frames[k % len(frames)], now)
            mono = tone.samples(n, 1600)
            ain.push(np.stack([mono, mono], axis=1), now)
            k, n = k + 1, n + 1600
            await asyncio.sleep(max(0.0, started + k / FPS - time.monotonic()))

    cpu0 = self_cpu()
    feeder = asyncio.create_task(feed())
    runner = asyncio.create_task(pipe.run(started, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await runner
    feeder.cancel()
    cpu = self_cpu() - cpu0
    failed = [f"{o.name}: {o.error}" for o in outputs if o.failed]
    streams = [s for o in outputs if isinstance(o, StreamOutput) for s in o.sinks]
    return {
        "kind": kind,
        "seconds": seconds,
        "cpu_s": cpu,
        "encoders": pipe.encoder_count,
        "frames": pipe.stats.video_frames,
        "failed": failed,
        "rtmp_sent_s": [round(s.duration, 2) for s in streams],
        "hls_segments": sum(len(o.segments) for o in outputs if isinstance(o, SegmentOutput)),
    }


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pyegress-bench-outputs-") as tmp:
        result = asyncio.run(_drive(args.child, args.seconds, args.rtmp_port, Path(tmp)))
    write_result(args.result, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    parser.add_argument("--child", choices=["file", "all", "hls", "rtmp"], help=argparse.SUPPRESS)
    parser.add_argument("--rtmp-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument(
        "--extra", nargs="*", default=[], choices=["hls", "rtmp"], help="also measure file+HLS / file+RTMP"
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from pyegress.testing.rtmp_server import RtmpServer

    runs: dict[str, ChildRun] = {}
    with RtmpServer(tls=False) as rtmp:
        for kind in ("file", "all", *args.extra):
            argv_child = [
                "-m",
                "bench.outputs",
                "--child",
                kind,
                "--seconds",
                str(args.seconds),
                "--rtmp-port",
                str(rtmp.port),
            ]
            run = run_child(kind, argv_child, timeout=args.seconds + 60)
            if run.returncode != 0 or not run.result:
                print(f"{kind} failed ({run.returncode}):\n{run.stderr_tail}", file=sys.stderr)
                return 1
            if run.result.get("failed"):
                print(f"{kind}: outputs failed: {run.result['failed']}", file=sys.stderr)
                return 1
            runs[kind] = run
    file_cpu, all_cpu = runs["file"].cpu_s, runs["all"].cpu_s
    ratio = all_cpu / file_cpu
    rows = [
        [
            kind,
            _LABELS[kind],
            run.result["encoders"],
            f"{run.cpu_s / args.seconds:.3f}",
            f"{run.result['cpu_s'] / args.seconds:.3f}",
            f"{run.max_rss_mib:.0f}",
        ]
        for kind, run in runs.items()
    ]
    table = markdown_table(
        ["run", "outputs", "encoders", "CPU s / s (process)", "CPU s / s (pipeline window)", "peak RSS MiB"],
        rows,
    )
    body = f"""## Outputs: one encode shared by file, HLS and two RTMP streams

{now_utc()} · {machine_line()} · `{command_line(["-m", "bench.outputs", *(argv or sys.argv[1:])])}`

The real `Pipeline` at 1280x720 30 fps (H.264 3000 kbps, 2 s GOP, AAC 128 kbps) for
{args.seconds:g} s, each run in its own process, fed pre-rendered frames (no LiveKit room: it
costs the same in both runs). RTMP goes to nginx-rtmp on loopback (not counted).

{table}

**CPU(file + HLS + 2 RTMP) / CPU(file) = {ratio:.2f}** (target <= {TARGET}; whole-process CPU).
RTMP sent {runs["all"].result["rtmp_sent_s"]} s per URL, {runs["all"].result["hls_segments"]} HLS segments.
"""
    print(body)
    if args.write:
        update_section(SECTION, body)
    return 0 if ratio <= TARGET else 2


if __name__ == "__main__":
    raise SystemExit(main())
