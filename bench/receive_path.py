"""The composites' receive path: the rtc SDK against the encoded subscriber + PyAV decoding.

Run ``python -m pyegress.testing.netns -- python -m bench.receive_path [--seconds 15]
[--repeat 2] [--write]``. It starts a livekit-server and, per case, N synthetic publishers
(H.264 + Opus, each its own process at nice 19, not counted), then measures, each in a child
process of its own and alternating:

* ``sdk``: the receive path of room and track composite today (``bench.room_composite``'s SDK-only
  child): join hidden, subscribe to every track, pull I420 pictures and 48 kHz stereo PCM;
* ``encoded``: the encoded subscriber (``pyegress.sources.encoded``: LiveKit signaling + aiortc)
  handing on frames with their RTP timestamps, decoded by PyAV: H.264 with libavcodec's threads
  (``thread_type`` AUTO), each picture straight to a yuv420p ndarray as the compositor takes it;
  Opus decoded and resampled to 48 kHz stereo s16, the mixer's format.

Each reports CPU s per recorded s of the whole child (connect to leave, kernel ``wait4``), peak
RSS, decoded pictures / s, the spread of the frame intervals each path hands on (the SDK's
``timestamp_us``; the RTP timestamps and the arrival times of the encoded path) and, for the
encoded path, whether every track has a sender-report clock (the common clock A/V alignment
needs). ``--write`` puts the result into docs/performance.md (section ``receive_path``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
    thread_cpu,
    thread_groups,
    update_section,
    versions,
    wait_published,
    write_result,
)
from bench.room_composite import _sdk_child as sdk_child

SECTION = "receive_path"
#: The encoded path becomes worth making the default at this saving or more (issue 15, item 7).
GOAL = 0.15


@dataclass(frozen=True)
class Case:
    """N publishers of one size: what room composite (4) and track composite (1) receive."""

    name: str
    participants: int
    width: int
    height: int
    fps: int = 30


CASES = [
    Case("room composite: 4 x 640x360", 4, 640, 360),
    Case("track composite: 1 x 1280x720", 1, 1280, 720),
]


# --- child: the encoded subscriber + PyAV -----------------------------------------------------


class _Track:
    """One subscribed track's decoder and what the bench notes of each frame."""

    def __init__(self, kind: str) -> None:
        import av

        self.kind = kind
        self.ctx: Any = None  # made for the first frame's codec (the track may announce audio/red)
        self.resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
        self.rtp: list[int] = []
        self.rate = 90000
        self.arrival: list[float] = []
        self.offsets: list[float] = []  # arrival - sender time (SR clock), seconds
        self.decoded = 0

    def frame(self, f: Any) -> None:
        import av

        now = time.time()
        self.rtp.append(f.rtp)
        self.rate = f.clock_rate
        self.arrival.append(time.monotonic())
        if f.sender_time is not None:
            self.offsets.append(now - f.sender_time)
        if self.ctx is None:
            self.ctx = av.CodecContext.create(f.codec, "r")
            if self.kind == "video":
                self.ctx.thread_type = "AUTO"  # frame + slice threads, as a compositor's decoder would
        for out in self.ctx.decode(av.Packet(f.data)):
            if self.kind == "video":
                out.to_ndarray(format="yuv420p")  # the compositor's picture
                self.decoded += 1
            else:
                for pcm in self.resampler.resample(out):
                    pcm.to_ndarray()  # the mixer's 48 kHz stereo s16
                    self.decoded += 1


async def _encoded_child(args: argparse.Namespace) -> dict[str, Any]:
    import os

    from pyegress.sources.encoded import EncodedSubscriber
    from pyegress.sources.room import recorder_token

    token = recorder_token(
        os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"], "bench-encoded", args.room
    )
    lost: list[str] = []
    sub = EncodedSubscriber(os.environ["LIVEKIT_URL"], token, lambda _normal, why: lost.append(why))
    tracks: dict[str, tuple[str, _Track]] = {}  # sid -> (identity, track)

    def everyone() -> list[Any] | None:
        found = sub.tracks()
        return found if len(found) >= 2 * args.participants else None

    threads0 = thread_cpu()
    cpu0, t0 = self_cpu(), time.monotonic()
    await sub.connect()
    found = await sub.wait_for(everyone, 20.0)
    if not found:
        raise SystemExit(f"not every track of {args.room} was published: {sub.tracks()}")
    for t in found:  # all at once, as a composite asks for them
        track = _Track(t.kind)
        tracks[t.sid] = (t.participant, track)
        sub.subscribe(t, track.frame)

    def videos_flowing() -> bool | None:
        return all(tr.decoded for _, tr in tracks.values() if tr.kind == "video") or None

    if not await sub.wait_for(videos_flowing, 20.0):  # measured anyway: the report shows what flowed
        print(f"not every video track decoded within 20 s {lost}", file=sys.stderr)
    active_cpu, active_t = self_cpu(), time.monotonic()
    steady0 = thread_cpu()
    video0 = sum(tr.decoded for _, tr in tracks.values() if tr.kind == "video")
    marks = {sid: len(tr.rtp) for sid, (_, tr) in tracks.items()}
    await asyncio.sleep(args.seconds)
    steady_cpu, steady_t = self_cpu() - active_cpu, time.monotonic() - active_t
    steady1 = thread_cpu()
    steady_video = sum(tr.decoded for _, tr in tracks.values() if tr.kind == "video") - video0
    stats = {sid: sub.stats(sid) for sid in tracks}
    await sub.close()
    cpu1, t1 = self_cpu(), time.monotonic()
    threads1 = thread_cpu()
    per_track = {
        f"{who} {tr.kind}": {
            "rtp_ms": [1000 * (r - tr.rtp[0]) / tr.rate for r in tr.rtp[marks[sid] :]],
            "arrival_ms": [1000 * a for a in tr.arrival[marks[sid] :]],
            "sr_frames": len(tr.offsets),
            "frames": len(tr.rtp),
            "decoded": tr.decoded,
            "handed_skipped": stats[sid],
            "offset_ms": 1000 * statistics.median(tr.offsets) if tr.offsets else None,
        }
        for sid, (who, tr) in tracks.items()
    }
    return {
        "window_cpu_s": cpu1 - cpu0,
        "window_wall_s": t1 - t0,
        "steady_cpu_s": steady_cpu,
        "steady_wall_s": steady_t,
        "recorded_s": steady_t,
        "steady_video_frames": steady_video,
        "videos_flowing": sum(1 for _, tr in tracks.values() if tr.kind == "video" and tr.decoded),
        "tracks": per_track,
        "lost": lost,
        "threads": thread_groups(threads0, threads1),
        "steady_threads": thread_groups(steady0, steady1),
    }


# --- figures ------------------------------------------------------------------------------------


def _per_s(run: ChildRun) -> float:
    return float(run.result["window_cpu_s"]) / float(run.result["recorded_s"])


def _spread(times_ms: Sequence[float], nominal_ms: float) -> tuple[float, float]:
    """(p95 of |interval - nominal| in ms, share of intervals over 1.5 x nominal: frames missing)."""
    gaps = [b - a for a, b in itertools.pairwise(times_ms)]
    if not gaps:
        return float("nan"), float("nan")
    dev = sorted(abs(g - nominal_ms) for g in gaps)
    return dev[int(0.95 * (len(dev) - 1))], sum(g > 1.5 * nominal_ms for g in gaps) / len(gaps)


def _sdk_cadence(run: ChildRun, nominal_ms: float) -> tuple[float, float]:
    """The worst participant's spread of the SDK's ``timestamp_us`` (last 2/3 of its frames)."""
    figures = []
    for stamps in run.result["video_timestamps_us"].values():
        tail = [s / 1000 for s in stamps[len(stamps) // 3 :]]
        figures.append(_spread(tail, nominal_ms))
    return max(figures)


def _encoded_cadence(run: ChildRun, nominal_ms: float, key: str) -> tuple[float, float]:
    """The worst video track's spread of its RTP times (``rtp_ms``) or arrival times (``arrival_ms``)."""
    tracks = run.result["tracks"]
    spreads = [_spread(t[key], nominal_ms) for name, t in tracks.items() if name.endswith("video") and t[key]]
    return max(spreads, default=(float("nan"), float("nan")))


def _av_offsets(run: ChildRun) -> str:
    """Per participant: video - audio of (arrival - sender time): the skew the SR clock reveals."""
    tracks = run.result["tracks"]
    parts = []
    for name, t in sorted(tracks.items()):
        if not name.endswith("video"):
            continue
        who = name.rsplit(" ", 1)[0]
        audio = tracks.get(f"{who} audio")
        if t["offset_ms"] is None or audio is None or audio["offset_ms"] is None:
            parts.append(f"{who}: no SR")
        else:
            parts.append(f"{who} {t['offset_ms'] - audio['offset_ms']:+.0f}")
    return ", ".join(parts)


def _sr_share(run: ChildRun) -> float:
    tracks = run.result["tracks"].values()
    return sum(t["sr_frames"] for t in tracks) / max(1, sum(t["frames"] for t in tracks))


def _report(runs: dict[str, list[ChildRun]], argv: Sequence[str], vers: dict[str, str]) -> str:
    rows = []
    verdicts = []
    for case in CASES:
        nominal = 1000 / case.fps
        sdk, enc = runs[f"{case.name} sdk"], runs[f"{case.name} encoded"]
        s_cpu = statistics.median(_per_s(r) for r in sdk)
        e_cpu = statistics.median(_per_s(r) for r in enc)
        saving = 1 - e_cpu / s_cpu
        verdicts.append((case, s_cpu, e_cpu, saving))
        for label, group in (("SDK (rtc.VideoStream / AudioStream)", sdk), ("encoded + PyAV", enc)):
            last = group[-1]
            fps = statistics.median(
                r.result["steady_video_frames"] / r.result["steady_wall_s"] for r in group
            )
            flowing = (
                f" ({last.result['videos_flowing']} of {case.participants} tracks)" if group is enc else ""
            )
            if group is sdk:
                p95, miss = _sdk_cadence(last, nominal)
                cadence = f"{p95:.1f} ms, {miss:.1%} (timestamp_us)"
                av = "SDK playout: its timestamps are local receive times per track"
            else:
                p95, miss = _encoded_cadence(last, nominal, "rtp_ms")
                a95, amiss = _encoded_cadence(last, nominal, "arrival_ms")
                cadence = f"{p95:.1f} ms, {miss:.1%} (RTP); arrival {a95:.1f} ms, {amiss:.1%}"
                av = f"SR clock on {_sr_share(last):.0%} of frames; video - audio ms: {_av_offsets(last)}"
            rows.append(
                (
                    f"{case.name}: {label}",
                    " / ".join(f"{_per_s(r):.3f}" for r in group),
                    f"{statistics.median(r.max_rss_mib for r in group):.0f}",
                    f"{fps:.1f}{flowing}",
                    cadence,
                    av,
                )
            )
    table = markdown_table(
        [
            "case: receive path",
            "CPU s / s (each run)",
            "peak RSS MiB",
            "pictures decoded / s",
            "frame intervals: p95 |interval - 33.3 ms|, share > 50 ms",
            "A/V clock",
        ],
        rows,
    )
    head = [
        f"- {case.name}: SDK {s:.3f}, encoded + PyAV {e:.3f} CPU s / s (medians): "
        f"saving **{saving:+.0%}** ({'meets' if saving >= GOAL else 'misses'} the {GOAL:.0%} bar)"
        for case, s, e, saving in verdicts
    ]
    sdk4 = runs[f"{CASES[0].name} sdk"][-1]
    enc4 = runs[f"{CASES[0].name} encoded"][-1]
    threads = markdown_table(
        [f"thread group ({CASES[0].name}, steady)", "SDK CPU s / s", "encoded + PyAV CPU s / s"],
        _thread_rows(sdk4, enc4),
    )
    winners = [case.name for case, _, _, saving in verdicts if saving >= GOAL]
    loop = enc4.result["steady_threads"].get("python: main thread (asyncio loop)", 0.0)
    why = (
        f"Where the encoded path's CPU goes ({CASES[0].name}): the asyncio loop, i.e. aiortc's RTP, "
        f"SRTP and depacketizing in Python plus the decode calls, {loop / enc4.result['steady_wall_s']:.3f} "
        "CPU s / s; libavcodec's own decode threads little. Its cost grows with packets, the SDK's with "
        "pixels."
    )
    why += " The bench asks for every track at once (8 tracks of 4 participants), as a composite does."
    if winners:
        verdict = [
            why,
            "",
            f"It clears the {GOAL:.0%} bar for: {', '.join(winners)}.",
            "",
            *_DEFAULT_WOULD_TAKE,
        ]
    else:
        verdict = [why, "", *_NOT_CHEAPER]
    return "\n".join(
        [
            "## The composites' receive path: rtc SDK against encoded subscriber + PyAV "
            "(`bench/receive_path.py`)",
            "",
            *head,
            "",
            "Command: `python -m pyegress.testing.netns -- " + command_line(argv) + "`",
            "",
            f"- Date: {now_utc()}",
            f"- Machine: {machine_line()}",
            f"- Versions: PyAV {vers['PyAV']} (libavcodec {vers['libavcodec']}), livekit {vers['livekit']}",
            f"- Input: synthetic publishers (moving pattern + tone, H.264 + Opus, 30 fps, one process "
            f"each at nice 19, not counted) through {server_line()}.",
            "",
            table,
            "",
            '"CPU s / s" is user + system CPU of every thread of the child from connect to leave over the '
            "seconds of steady receiving (runs alternate SDK, encoded, ...). The SDK child pulls I420 "
            "pictures and 48 kHz stereo PCM as pyegress does; the encoded child decodes H.264 with "
            "libavcodec's frame + slice threads, each picture to a yuv420p ndarray, and Opus to 48 kHz "
            "stereo s16, on its event loop (a recorder would move decoding to a thread; the CPU is the "
            "same). Frame intervals are of the last run of each; the RTP times are the sender's capture "
            "clock, so a compositor that schedules by them gets the sender's cadence whatever the network "
            'does, at the price of a playout delay of about the arrival spread. "A/V clock": the share '
            "of frames the RTCP sender reports map to the sender's wall clock, and per participant the "
            "median (arrival - sender time) of video minus that of audio: the skew between the two "
            "tracks' delays that lining up by sender time would remove (not checked against the marker "
            "publisher's flashes and beeps here).",
            "",
            threads,
            "",
            *verdict,
            "",
        ]
    )


#: What the report says when the encoded path clears the bar: what making it the default takes.
_DEFAULT_WOULD_TAKE = [
    'Participant, track composite and room composite egress take it by default (`receive_path="auto"`: '
    "`pyegress.recorders.decoded` for the first two, `pyegress.sources.encoded.room.EncodedRoomSource` "
    "under the room composite; PyAV decoding on slice threads into the same `VideoInput` / "
    "`AudioInput`, each frame placed by its RTP time on the line of the frames that came "
    "soonest, a lost connection ridden out by joining again), except from an application's own "
    "`rtc.Room`, with transcript or chat sidecars, and on Python 3.10.",
]
_NOT_CHEAPER = [
    "The encoded path does not clear the bar in every case, so the composites keep the SDK's "
    "receive path; the encoded subscriber stays the passthrough path.",
]


def _thread_rows(sdk: ChildRun, enc: ChildRun) -> list[tuple[str, str, str]]:
    a, b = sdk.result["steady_threads"], enc.result["steady_threads"]
    ws, we = sdk.result["steady_wall_s"], enc.result["steady_wall_s"]
    names = sorted(set(a) | set(b), key=lambda n: -(a.get(n, 0.0) / ws + b.get(n, 0.0) / we))
    return [
        (n, f"{a.get(n, 0.0) / ws:.3f}", f"{b.get(n, 0.0) / we:.3f}")
        for n in names
        if max(a.get(n, 0.0) / ws, b.get(n, 0.0) / we) >= 0.002
    ]


# --- parent ------------------------------------------------------------------------------------


def _parent(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pyegress.testing import LiveKitServer

    seconds = args.seconds
    runs: dict[str, list[ChildRun]] = {}
    with tempfile.TemporaryDirectory(prefix="pyegress-bench-"), LiveKitServer(log_level="warn") as server:
        env = child_env(server)
        me = ["-m", "bench.receive_path", "--seconds", str(seconds)]
        for n, case in enumerate(CASES):
            room = f"bench-receive-{n}"
            plan = [k for _ in range(args.repeat) for k in ("sdk", "encoded")]
            pubs = start_publishers(
                room, case.participants, env, len(plan) * (seconds + 30) + 60,
                size=(case.width, case.height), fps=case.fps,
            )  # fmt: skip
            try:
                asyncio.run(wait_published(server, room, case.participants))
                time.sleep(3.0)  # the publishers' encoders ramp up to full size and rate
                for kind in plan:
                    label = f"{case.name} {kind}"
                    print(f"running {label} ({seconds:g} s) ...", file=sys.stderr)
                    flags = [f"--child-{kind}", "--participants", str(case.participants), "--room", room]
                    run = run_child(label, [*me, *flags], timeout=seconds * 3 + 90, env=env)
                    if not (kind == "sdk" and run.result):  # the SDK may abort while leaving: kept
                        check_child(run)
                    runs.setdefault(label, []).append(run)
                    flow = {
                        k: (t["frames"], t["decoded"], t["handed_skipped"])
                        for k, t in run.result.get("tracks", {}).items()
                    }
                    print(f"  cpu/s {_per_s(run):.3f} rss {run.max_rss_mib:.0f} MiB {flow}", file=sys.stderr)
                    if kind == "encoded":
                        print(run.stderr_tail[-800:], file=sys.stderr)
            finally:
                stop_processes(pubs)
    raw = {label: [dataclasses.asdict(r) for r in group] for label, group in runs.items()}
    Path(args.dump).write_text(json.dumps(raw))
    print(f"raw figures in {args.dump} (--report-from rebuilds the report)", file=sys.stderr)
    return _finish(runs, args, argv)


def _finish(runs: dict[str, list[ChildRun]], args: argparse.Namespace, argv: Sequence[str]) -> int:
    report = _report(runs, argv, versions())
    print(report)
    if args.write:
        update_section(SECTION, report)
        print(f"updated docs/performance.md section {SECTION!r}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.receive_path", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=15.0, help="seconds received per run (default 15)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each path per case (default 2)")
    p.add_argument("--write", action="store_true", help="update docs/performance.md")
    p.add_argument("--dump", default="/tmp/pyegress-receive-path.json", help="where the raw figures go")
    p.add_argument("--report-from", default="", help="write the report from a --dump file, run nothing")
    child = p.add_mutually_exclusive_group()
    child.add_argument("--child-sdk", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--child-encoded", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--participants", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--room", default="", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the parent benchmark, or one of its measured children."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child_sdk:
        write_result(args.result, asyncio.run(sdk_child(args)))
    elif args.child_encoded:
        write_result(args.result, asyncio.run(_encoded_child(args)))
    elif args.report_from:
        raw = json.loads(Path(args.report_from).read_text())
        runs = {label: [ChildRun(**r) for r in group] for label, group in raw.items()}
        return _finish(runs, args, ["-m", "bench.receive_path", *argv])
    else:
        return _parent(args, ["-m", "bench.receive_path", *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
