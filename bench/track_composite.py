"""CPU and memory of a 720p30 track composite egress, against the bare PyAV encode of the same frames.

Run ``python -m pyegress.testing.netns -- python -m bench.track_composite [--seconds 20]
[--write]`` (in a network namespace of its own: see docs/performance.md). It starts a
livekit-server and a synthetic 1280x720 30 fps publisher (its own process, not counted), then
measures, each in a child process of its own, one after the other:

* ``egress``: ``EgressService.start_track_composite_egress`` with preset H264_720P_30 to an MP4
  for ``--seconds`` through its default receive path (encoded, decoded by PyAV); the whole
  process is counted, so the receive and decode are in the figure (``--sdk-path``: the same
  egress through the rtc SDK's receive path beside each pair);
* ``sdk``: a process that only joins, subscribes and pulls the same I420 and PCM frames through
  the SDK (the SDK path's receive share of the above);
  While it runs, a hook records every frame it hands to the H.264 encoder, tick by tick
  (``bench.common.EncodeCapture``); the hook's own CPU is measured and taken out of the figures;
* ``bare``: PyAV alone encoding exactly those frames (read into memory first) + a tone, with the
  encoder settings pyegress uses, muxed to an MP4, paced at 30 fps wall clock: the baseline;
* ``synthetic`` / ``unpaced``: the same encoding 1280x720 frames of a synthetic moving pattern
  (no LiveKit, no decoder) instead, paced at 30 fps and once unpaced, for comparison.

CPU figures are per recorded second; the headline is pyegress / bare paced encode of the
captured frames (target <= 1.5). ``--write`` puts the table into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    ChildRun,
    EncodeCapture,
    EncodeSettings,
    bare_encode,
    command_line,
    discount_capture,
    load_capture,
    machine_line,
    markdown_table,
    now_utc,
    pyegress_x264_options,
    run_child,
    scratch_dir,
    self_cpu,
    server_line,
    start_publishers,
    stop_processes,
    thread_cpu,
    thread_groups,
    update_section,
    wait_published,
    write_result,
    x264_build,
)
from bench.common import check_child as _check
from bench.common import child_env as _child_env
from bench.common import versions as _versions

SECTION = "track_composite"
WIDTH, HEIGHT, FPS = 1280, 720, 30
# What pyegress's VideoEncoder / AudioEncoder use for preset H264_720P_30 (media/encoder.py).
# The bench checks that both runs end up with the same x264 settings string (see _check_settings).
VIDEO_KBPS, GOP_SECONDS, PROFILE = 3000, 4.0, "Main"
AUDIO_RATE, AUDIO_KBPS, MIX_RATE = 44100, 128, 48000
TARGET = 1.5


# --- child: the pyegress egress -------------------------------------------------------------------


async def _egress_child(args: argparse.Namespace) -> dict[str, Any]:
    from livekit.protocol import egress as pe

    import pyegress

    capture = EncodeCapture(Path(args.capture)) if args.capture else None
    if capture is not None:
        capture.install()
    svc = pyegress.EgressService(output_dir=args.out_dir, wait_timeout=15.0, receive_path=args.receive_path)
    req = pe.TrackCompositeEgressRequest(
        room_name=args.room,
        audio_track_id=args.audio_track,
        video_track_id=args.video_track,
        preset=pe.H264_720P_30,
        file_outputs=[pe.EncodedFileOutput(filepath="egress.mp4")],
    )
    threads0 = thread_cpu()
    cpu0, t0 = self_cpu(), time.monotonic()
    info = await svc.start_track_composite_egress(req)
    while info.status in (pe.EGRESS_STARTING,):
        await asyncio.sleep(0.05)
        info = (await svc.list_egress(pe.ListEgressRequest(egress_id=info.egress_id))).items[0]
    if info.status != pe.EGRESS_ACTIVE:
        raise SystemExit(f"egress did not start: {pe.EgressStatus.Name(info.status)} {info.error}")
    if capture is not None:
        capture.start()
    active_cpu, active_t = self_cpu(), time.monotonic()
    recorder = svc.recorder(info.egress_id)
    sizes: dict[str, int] = {}
    deadline = active_t + args.seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        frame = recorder.video_input.at(time.monotonic()) if recorder.video_input else None
        if frame is not None:
            key = f"{frame.width}x{frame.height}"  # type: ignore[union-attr]
            sizes[key] = sizes.get(key, 0) + 1
    steady_cpu, steady_t = self_cpu() - active_cpu, time.monotonic() - active_t
    threads1 = thread_cpu()
    stats = recorder.pipeline.stats if recorder.pipeline else None
    frames_in = recorder.video_input.frames_in if recorder.video_input else 0
    captured = capture.stop() if capture is not None else {}
    final = await svc.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    cpu1, t1 = self_cpu(), time.monotonic()
    if final.status != pe.EGRESS_COMPLETE:
        raise SystemExit(f"egress ended {pe.EgressStatus.Name(final.status)}: {final.error}")
    path = Path(final.file_results[0].filename)
    result = {
        "window_cpu_s": cpu1 - cpu0,
        "window_wall_s": t1 - t0,
        "steady_cpu_s": steady_cpu,
        "steady_wall_s": steady_t,
        "recorded_s": final.file_results[0].duration / 1e9,
        "file_bytes": final.file_results[0].size,
        "frames_in": frames_in,
        "ticks": stats.ticks if stats else 0,
        "received_sizes": sizes,
        "threads": thread_groups(threads0, threads1),
        "x264": x264_build(path.read_bytes()[:1_000_000]),
        **captured,
    }
    return discount_capture(result)


# --- child: the SDK alone ---------------------------------------------------------------------------


async def _sdk_child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from livekit import rtc

    counts = {"video": 0, "audio": 0}
    sizes: dict[str, int] = {}
    first_video = asyncio.Event()
    room = rtc.Room()
    tasks: list[asyncio.Task[None]] = []

    from pyegress.sources.room import audio_stream, recorder_token, video_stream

    async def pull_video(track: rtc.Track) -> None:
        async for ev in video_stream(track):  # opened as pyegress opens it
            np.frombuffer(ev.frame.data, np.uint8)
            key = f"{ev.frame.width}x{ev.frame.height}"
            sizes[key] = sizes.get(key, 0) + 1
            counts["video"] += 1
            first_video.set()

    async def pull_audio(track: rtc.Track) -> None:
        async for ev in audio_stream(track, MIX_RATE, 2):
            np.frombuffer(ev.frame.data, np.int16)
            counts["audio"] += 1

    def subscribed(track: rtc.Track, *_: object) -> None:
        pull = pull_video if track.kind == rtc.TrackKind.KIND_VIDEO else pull_audio
        tasks.append(asyncio.get_running_loop().create_task(pull(track)))

    room.on("track_subscribed", subscribed)
    token = recorder_token(
        os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"], "bench-sdk-only", args.room
    )
    threads0 = thread_cpu()
    cpu0, t0 = self_cpu(), time.monotonic()
    await room.connect(os.environ["LIVEKIT_URL"], token, rtc.RoomOptions(auto_subscribe=False))
    wanted = {args.video_track, args.audio_track}
    for p in room.remote_participants.values():
        for pub in p.track_publications.values():
            if pub.sid in wanted:
                pub.set_subscribed(True)
    await asyncio.wait_for(first_video.wait(), 15.0)
    active_cpu, active_t = self_cpu(), time.monotonic()
    await asyncio.sleep(args.seconds)
    steady_cpu, steady_t = self_cpu() - active_cpu, time.monotonic() - active_t
    threads1 = thread_cpu()
    for task in tasks:
        task.cancel()
    await room.disconnect()
    cpu1, t1 = self_cpu(), time.monotonic()
    return {
        "window_cpu_s": cpu1 - cpu0,
        "window_wall_s": t1 - t0,
        "steady_cpu_s": steady_cpu,
        "steady_wall_s": steady_t,
        "recorded_s": steady_t,
        "frames_in": counts["video"],
        "audio_frames_in": counts["audio"],
        "received_sizes": sizes,
        "threads": thread_groups(threads0, threads1),
    }


# --- child: PyAV alone ------------------------------------------------------------------------------


def _bare_child(args: argparse.Namespace) -> dict[str, Any]:
    """PyAV alone: the captured frames (``--frames``) or a synthetic pattern, paced or not."""
    settings = EncodeSettings(WIDTH, HEIGHT, FPS, VIDEO_KBPS, GOP_SECONDS, PROFILE, AUDIO_RATE, AUDIO_KBPS)
    picture = None
    loaded: dict[str, Any] = {}
    if args.frames:
        picture, loaded = load_capture(args.frames, WIDTH, HEIGHT)
    name = f"bare-{'captured' if args.frames else 'pattern'}-{'paced' if args.paced else 'unpaced'}.mp4"
    path = Path(args.out_dir) / name
    return {**bare_encode(settings, args.seconds, path, paced=args.paced, picture=picture), **loaded}


# --- parent ---------------------------------------------------------------------------------------


def _check_settings() -> str:
    """x264's settings string of pyegress's own encoder for the preset; exit if the bare run would differ.

    pyegress's ``VideoEncoder`` and the bare run's settings are compared through the options
    string libx264 writes into its first SEI, and the audio settings field by field, so a change
    of encoder settings in ``media/encoder.py`` cannot silently skew the baseline.
    """
    from livekit.protocol import egress as pe

    from pyegress.media.encoding import from_request

    video, audio = from_request(pe.H264_720P_30, None, has_preset=True, has_advanced=False)
    expected = (WIDTH, HEIGHT, FPS, VIDEO_KBPS, round(GOP_SECONDS * FPS), PROFILE.lower())
    got = (video.width, video.height, video.fps, video.bitrate_kbps, video.gop, video.profile)
    if got != expected or (audio.codec, audio.sample_rate, audio.bitrate_kbps) != (
        "aac",
        AUDIO_RATE,
        AUDIO_KBPS,
    ):
        raise SystemExit(f"preset H264_720P_30 is now {video} / {audio}: update bench/track_composite.py")
    return pyegress_x264_options(pe.H264_720P_30)


def _per_s(run: ChildRun, key: str = "window_cpu_s") -> float:
    return float(run.result[key]) / float(run.result["recorded_s"])


def _whole_per_s(run: ChildRun) -> float:
    return run.cpu_s / float(run.result["recorded_s"])


def _report(
    runs: dict[str, ChildRun], ratios: list[float], argv: Sequence[str], versions: dict[str, str]
) -> str:
    egress, sdk, bare = runs["egress"], runs["sdk"], runs["bare"]
    synth, fast = runs["synthetic"], runs["unpaced"]
    base = _per_s(bare)
    ratio = _per_s(egress) / base
    rows = [
        (
            "pyegress track composite (whole process: encoded receive, PyAV decode, pipeline, encode)",
            egress,
        ),
        ("SDK only: join, subscribe, pull the same I420 + PCM frames (as pyegress pulls them)", sdk),
        ("bare PyAV encode of the frames pyegress encoded (captured), paced at 30 fps", bare),
        ("bare PyAV encode of a synthetic pattern, paced at 30 fps", synth),
        ("bare PyAV encode of a synthetic pattern, unpaced (as fast as it goes)", fast),
    ]
    table = markdown_table(
        ["run", "CPU s / recorded s", "÷ bare captured", "whole process CPU s / s", "peak RSS MiB", "wall s"],
        [
            (
                label,
                f"{_per_s(run):.3f}",
                f"{_per_s(run) / base:.2f}",
                f"{_whole_per_s(run):.3f}",
                f"{run.max_rss_mib:.0f}",
                f"{run.result['window_wall_s']:.1f}",
            )
            for label, run in rows
        ],
    )
    recorded = egress.result["recorded_s"]
    threads = sorted(egress.result["threads"].items(), key=lambda kv: -kv[1])
    steady = egress.result["steady_wall_s"]
    breakdown = markdown_table(
        ["thread group (pyegress child, steady recording)", "CPU s / s", "share"],
        [
            (name, f"{cpu / steady:.3f}", f"{100 * cpu / max(egress.result['steady_cpu_s'], 1e-9):.0f} %")
            for name, cpu in threads
            if cpu / steady >= 0.001
        ],
    )
    groups = {k: v / steady for k, v in egress.result["threads"].items()}
    encode = sum(v for k, v in groups.items() if "libx264" in k or "pyegress-encode" in k)
    sdk_native = sum(v for k, v in groups.items() if k.startswith("native: "))
    loop = sum(v for k, v in groups.items() if k.startswith("python: main"))
    summary = (
        f"Where it goes, steady recording: encode + mux (`pyegress-encode` thread and libx264 workers) "
        f"{encode:.3f} CPU s / s against the bare run's {_per_s(bare):.3f}; named native threads (the "
        f"SDK's WebRTC receive, decode, audio and FFI on its path; PyAV's decode slice threads are "
        f"unnamed) {sdk_native:.3f}; the asyncio loop (aiortc's RTP, SRTP and depacketizing plus the "
        f"decode calls, and pyegress's timeline and ticks) {loop:.3f}. pyegress minus the SDK path's "
        f"receive alone (the SDK-only run) is {(_per_s(egress) - _per_s(sdk)) / base:.2f} x the bare "
        "encode of the captured frames."
    )
    verdict = "meets" if ratio <= TARGET else "misses"
    x264 = egress.result.get("x264") or bare.result.get("x264") or "unknown build"
    preloaded = bare.result["captured_bytes"] / 2**20
    lines = [
        "## Track composite, 720p30 (`bench/track_composite.py`)",
        "",
        f"**pyegress / bare encode of the same frames = {ratio:.2f}**, the median of {len(ratios)} "
        f"pairs ({verdict} the target of <= {TARGET}; against a synthetic pattern it would be "
        f"{_per_s(egress) / _per_s(synth):.2f}).",
        "",
        "Each pair is one pyegress run and the bare encode of the very pictures that run encoded; the "
        "received content, and with it x264's cost, differs from run to run, so the bench runs "
        f"several pairs: ratios in run order {', '.join(f'{r:.2f}' for r in ratios)}. The tables "
        "show the median pair (the SDK-only and synthetic rows are run once).",
        "",
        "Command: `" + command_line(argv) + "`",
        "",
        f"- Date: {now_utc()}",
        f"- Machine: {machine_line()}",
        f"- Versions: PyAV {versions['PyAV']} (libavcodec {versions['libavcodec']}), "
        f"livekit {versions['livekit']}, {x264}",
        f"- Input: synthetic publisher ({WIDTH}x{HEIGHT} {FPS} fps moving pattern + tone, H.264, own "
        f"process, not counted) through {server_line()}; the recorder received "
        f"{egress.result['frames_in'] / egress.result['steady_wall_s']:.1f} frames/s at "
        f"{', '.join(sorted(egress.result['received_sizes']))}.",
        f"- Output: preset H264_720P_30 (libx264 veryfast/zerolatency, Main, {VIDEO_KBPS} kbps, "
        f"GOP {GOP_SECONDS:g} s, 2 threads; AAC {AUDIO_KBPS} kbps {AUDIO_RATE} Hz) to MP4; "
        f"{recorded:.2f} s recorded, {egress.result['file_bytes'] / 1e6:.1f} MB. The bare runs' x264 "
        "settings strings are checked to equal that of pyegress's encoder.",
        f"- Baseline: PyAV alone encoding the frames pyegress itself encoded "
        f"({bare.result['captured_pictures']} pictures over {bare.result['captured_ticks']} ticks). "
        "The MP4s' video + audio bytes show how hard the content was for x264: pyegress "
        f"{egress.result['file_bytes'] / 1e6:.2f} MB, the bare run of the captured frames "
        f"{bare.result['file_bytes'] / 1e6:.2f} MB, the synthetic one "
        f"{synth.result['file_bytes'] / 1e6:.2f} MB.",
        "",
        table,
        "",
        'The baseline ("bare ... captured", the ratio\'s denominator) is PyAV alone encoding exactly '
        "the pictures pyegress hands to its H.264 encoder, with the same settings, paced at 30 fps, "
        "plus a tone through AAC. The pictures are those of the measured run itself: a hook on "
        "`VideoEncoder.encode` writes each new frame to /dev/shm and notes which frame each tick "
        "encoded; its own CPU (thread time, "
        f"{egress.result.get('capture_cpu_s', 0.0) / recorded:.3f} CPU s / s) is subtracted from "
        "pyegress's figures. The bare run reads the frames into memory before its timed window and "
        "replays that sequence tick by tick. That is what the issue asks for (the bare cost of "
        "encoding the same frames with PyAV alone): how much x264 spends depends on the pictures, "
        "and received frames (through the publisher's H.264 encoder and the SDK's decoder) are not "
        "the synthetic pattern. The synthetic rows (the publisher's moving pattern drawn directly, no "
        f"LiveKit, no decoder) are kept for comparison: in this run {_per_s(synth):.3f} CPU s / s "
        f"against {base:.3f} for the captured frames.",
        "",
        '"CPU s / recorded s" is user + system CPU of every thread of the child between the start '
        "call and the finished file (pyegress: `start_track_composite_egress` to `stop_egress`; bare: "
        "container open to close), over the seconds recorded. It includes the receive and "
        "decode (by default aiortc and PyAV; the SDK-only row shows the SDK path's receive alone); "
        'nothing is subtracted but the capture hook\'s own CPU. "Whole process" also counts '
        "interpreter start-up and imports "
        "(kernel `wait4` accounting; for the captured run also reading its pictures in); peak RSS is "
        f"the whole child's (the captured run's holds its {preloaded:.0f} MiB of preloaded pictures). "
        "The synthetic runs build each frame with `PatternGenerator` "
        f"({synth.result['pattern_cpu_s'] / synth.result['recorded_s']:.3f} CPU s / s of it); every "
        "bare run encodes PCM of `ToneGenerator` like the pipeline does.",
        "",
        breakdown,
        "",
        summary,
        "",
    ]
    return "\n".join(lines)


def _parent(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pyegress.testing import LiveKitServer

    settings = _check_settings()
    seconds = args.seconds
    child_timeout = seconds * 3 + 60
    runs: dict[str, ChildRun] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pyegress-bench-") as out,
        scratch_dir() as scratch,
        LiveKitServer(log_level="warn") as server,
    ):
        env = _child_env(server)
        room = "bench-track-composite"
        frames = str(Path(scratch) / "frames.yuv")
        publish_for = (2 * args.repeat + 3) * (seconds + 15) + 150
        publisher = start_publishers(room, 1, env, publish_for, size=(WIDTH, HEIGHT), fps=FPS, niced=False)
        try:
            tracks = asyncio.run(wait_published(server, room, 1))["p00"]
            time.sleep(2.0)  # let the publisher's encoder ramp up to full size and rate
            common = ["--room", room, "--video-track", tracks["video"], "--audio-track", tracks["audio"]]
            common += ["--seconds", str(seconds), "--out-dir", out]
            me = ["-m", "bench.track_composite"]
            plan: list[tuple[str, list[str]]] = []
            for i in range(args.repeat):  # pairs: an egress, then the bare encode of its pictures
                plan.append((f"egress#{i}", [*me, "--child-egress", *common, "--capture", frames]))
                plan.append((f"bare#{i}", [*me, "--child-bare", "--paced", *common, "--frames", frames]))
                if args.sdk_path:  # the same egress through the SDK's receive path, beside it
                    plan.append((f"sdkpath#{i}", [*me, "--child-egress", *common, "--receive-path", "sdk"]))
                if i == 0:
                    plan.append(("sdk", [*me, "--child-sdk", *common]))
            plan.append(("synthetic", [*me, "--child-bare", "--paced", *common]))
            plan.append(("unpaced", [*me, "--child-bare", *common]))
            for label, child_args in plan:
                print(f"running {label} ({seconds:g} s) ...", file=sys.stderr)
                runs[label] = _check(run_child(label, child_args, timeout=child_timeout, env=env))
                print(f"  cpu/s {_per_s(runs[label]):.3f} {json.dumps(runs[label].result)}", file=sys.stderr)
                if label.startswith("bare#"):  # up to ~1 GB of frames, in RAM
                    Path(frames).unlink(missing_ok=True)
                    Path(f"{frames}.json").unlink(missing_ok=True)
        finally:
            stop_processes(publisher)
    for label in [k for k in runs if k.startswith("bare#")] + ["synthetic", "unpaced"]:
        if runs[label].result.get("x264_options") != settings:
            raise SystemExit(
                f"the bare encode {label!r} has other x264 settings than pyegress's; update "
                "bench/common.py X264_OPTIONS:\n"
                f"  pyegress: {settings}\n  bare:     {runs[label].result.get('x264_options')}"
            )
    ratios = _pair_ratios(runs)
    median = sorted(ratios)[len(ratios) // 2]
    i = ratios.index(median)  # the pair shown in the tables
    runs["egress"], runs["bare"] = runs[f"egress#{i}"], runs[f"bare#{i}"]
    report = _report(runs, ratios, argv, _versions())
    if args.sdk_path:
        report += _paths_table(runs)
    print(report)
    if args.write:
        update_section(SECTION, report)
        print(f"updated docs/performance.md section {SECTION!r}", file=sys.stderr)
    return 0 if median <= TARGET or not args.strict else 1


def _paths_table(runs: dict[str, ChildRun]) -> str:
    """The egress through its default, encoded receive path against the same egress through
    the SDK's, run after run (``--sdk-path``)."""
    rows = []
    for key in sorted(k for k in runs if k.startswith("sdkpath#")):
        i = key.removeprefix("sdkpath#")
        sdk, enc = _per_s(runs[key]), _per_s(runs[f"egress#{i}"])
        rss = f"{runs[key].max_rss_mib:.0f} / {runs[f'egress#{i}'].max_rss_mib:.0f}"
        rows.append([f"pair {i}", f"{sdk:.3f}", f"{enc:.3f}", f"{enc / sdk:.2f}", rss])
    head = ["run", "SDK path CPU s / s", "encoded path CPU s / s", "encoded / SDK", "RSS MiB (SDK / enc.)"]
    return '\n\nThe same egress with `receive_path="sdk"`, run beside each pair:\n\n' + (
        markdown_table(head, rows)
    )


def _pair_ratios(runs: dict[str, ChildRun]) -> list[float]:
    """pyegress / bare encode of its own pictures, for each repeated pair, in run order."""
    pairs = sorted(k.removeprefix("egress#") for k in runs if k.startswith("egress#"))
    return [_per_s(runs[f"egress#{i}"]) / _per_s(runs[f"bare#{i}"]) for i in pairs]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.track_composite", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="seconds recorded per run (default 20)")
    p.add_argument("--write", action="store_true", help="update docs/performance.md")
    p.add_argument("--strict", action="store_true", help=f"exit 1 when the median ratio is above {TARGET}")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="pyegress + bare pairs to run (default 3): the received content, and so x264's cost, "
        "varies from run to run; the headline is the median pair",
    )
    p.add_argument("--sdk-path", action="store_true",
                   help="also run the egress through the SDK's receive path beside each pair")  # fmt: skip
    p.add_argument("--receive-path", default="auto", help=argparse.SUPPRESS)
    child = p.add_mutually_exclusive_group()
    child.add_argument("--child-egress", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--child-sdk", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--child-bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--paced", action="store_true", help=argparse.SUPPRESS)
    # --capture PATH: the egress child records the frames it encodes; --frames PATH: the bare
    # child encodes them (bench.common.EncodeCapture / load_capture)
    names = ("--room", "--video-track", "--audio-track", "--out-dir", "--result", "--capture", "--frames")
    for name in names:
        p.add_argument(name, default="", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the parent benchmark, or one of its measured children."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child_egress:
        write_result(args.result, asyncio.run(_egress_child(args)))
    elif args.child_sdk:
        write_result(args.result, asyncio.run(_sdk_child(args)))
    elif args.child_bare:
        write_result(args.result, _bare_child(args))
    else:
        return _parent(args, ["-m", "bench.track_composite", *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
