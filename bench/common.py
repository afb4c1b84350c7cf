"""Shared helpers for the benchmarks: measured child processes, machine facts, the results doc.

Each benchmark runs the thing it measures in a child process and reads that child's CPU time
and peak RSS from the kernel (``wait4``), so nothing else in the run (server, publisher, the
parent itself) is counted. Figures land in ``docs/performance.md``, one section per benchmark
between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PERFORMANCE_DOC = REPO / "docs" / "performance.md"

_DOC_HEADER = """# Performance

Figures measured by the benchmarks in `bench/`. Each section is rewritten by its benchmark's
`--write` flag; everything outside the `<!-- bench:... -->` markers is kept as it is.

Every figure is a ratio against a baseline measured side by side in the same run on the same
machine, never an absolute timing that a test asserts on.
"""


@dataclass
class ChildRun:
    """What one measured child process cost, from the kernel's accounting of it."""

    label: str
    argv: list[str]
    returncode: int
    user_s: float
    sys_s: float
    max_rss_kib: int
    wall_s: float
    result: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds of the whole process (every thread)."""
        return self.user_s + self.sys_s

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kib / 1024.0


def run_child(
    label: str, args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None
) -> ChildRun:
    """Run ``python <args> --result FILE`` and measure its CPU and peak RSS with ``wait4``.

    The child writes a JSON object to ``FILE`` (its own figures, e.g. CPU inside the measured
    window); it is returned as ``ChildRun.result``. A child still running after ``timeout``
    seconds is killed and reported with its return code.
    """
    fd, result_path = tempfile.mkstemp(prefix="pyegress-bench-", suffix=".json")
    os.close(fd)
    argv = [sys.executable, *args, "--result", result_path]
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stderr=err, env=env)
        status, usage = _wait4(proc, started + timeout)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-4000:]
    try:
        text = Path(result_path).read_text()
        result = json.loads(text) if text.strip() else {}
    finally:
        Path(result_path).unlink(missing_ok=True)
    return ChildRun(
        label=label,
        argv=argv,
        returncode=proc.returncode,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_rss_kib=usage.ru_maxrss,  # KiB on Linux
        wall_s=wall,
        result=result,
        stderr_tail=tail,
    )


def _wait4(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, resource.struct_rusage]:
    """Reap ``proc`` ourselves (``Popen.wait`` would discard its rusage); kill it past ``deadline``."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            return status, usage
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            return status, usage
        time.sleep(0.05)


def self_cpu() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def write_result(path: str | None, data: dict[str, Any]) -> None:
    """Write a child's JSON result where the parent asked for it (no-op without ``--result``)."""
    if path:
        Path(path).write_text(json.dumps(data, indent=2))


# --- machine and version facts -------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """One line describing the machine the figures come from."""
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({cpu_model()}), {system}, Python {platform.python_version()}"


def x264_build(data: bytes) -> str | None:
    """The ``x264 - core N rNNNN`` tag libx264 writes into its first SEI, if ``data`` holds one."""
    m = re.search(rb"x264 - core (\d+)(?: (r\d+ [0-9a-f]+))?", data)
    if m is None:
        return None
    return "x264 core " + m.group(1).decode() + (f" {m.group(2).decode()}" if m.group(2) else "")


def x264_options(data: bytes) -> str | None:
    """The ``options: ...`` settings string libx264 writes into its first SEI, if ``data`` holds one."""
    m = re.search(rb"x264 - core .*? - options: ([ -~]+)", data)
    return m.group(1).decode() if m else None


def now_utc() -> str:
    """The current UTC time, to the minute."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as a copy-pasteable shell command, with the interpreter shown as ``python``."""
    return shlex.join(["python", *argv])


# --- tables and the results document ---------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "| " + " | ".join([":" + "-" * (widths[0] - 1)] + ["-" * (w - 1) + ":" for w in widths[1:]]) + " |"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def update_section(name: str, body: str, doc: Path = PERFORMANCE_DOC) -> None:
    """Replace (or append) the ``<!-- bench:name -->`` section of ``doc`` with ``body``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else _DOC_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text if text.endswith("\n") else text + "\n")


# --- per-thread CPU (Linux /proc) -------------------------------------------------------------


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + sys) of every live thread of this process, by tid, with a readable label.

    Python threads are labelled by their Python name (the kernel only knows them as "python"),
    native threads by their kernel name; unnamed native threads ("python") are those a library
    started from Python code, here libx264's slice workers.
    """
    tick = os.sysconf("SC_CLK_TCK")
    py_names = {
        t.native_id: t.name
        for t in threading.enumerate()
        if t.native_id is not None and not isinstance(t, threading._DummyThread)  # type: ignore[attr-defined]
    }
    out: dict[int, tuple[str, float]] = {}
    for tid_text in os.listdir("/proc/self/task"):
        tid = int(tid_text)
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")].strip()
        fields = stat[stat.rindex(")") + 2 :].split()
        if tid == os.getpid():
            label = "python: main thread (asyncio loop)"
        elif tid in py_names:
            label = "python: " + py_names[tid].split("_")[0]
        elif name.startswith("python"):
            label = "native, unnamed (libx264 slice workers)"
        else:
            label = f"native: {name}"
        out[tid] = (label, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_groups(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU spent between two :func:`thread_cpu` snapshots, summed by label."""
    groups: dict[str, float] = {}
    for tid, (label, cpu) in after.items():
        groups[label] = groups.get(label, 0.0) + cpu - before.get(tid, (label, 0.0))[1]
    return groups


# --- the bare PyAV baseline -------------------------------------------------------------------

#: The x264 options of pyegress's ``VideoEncoder`` (media/encoder.py); :func:`pyegress_x264_options`
#: lets a bench check that the baseline really ends up with the same settings string.
X264_OPTIONS = {"preset": "veryfast", "tune": "zerolatency", "threads": "2", "sc_threshold": "0"}
#: The timeline's PCM rate (48 kHz stereo int16); the AAC encoder resamples it.
MIX_RATE = 48000


@dataclass(frozen=True)
class EncodeSettings:
    """What pyegress encodes for one preset, replayed by the bare PyAV baseline."""

    width: int
    height: int
    fps: int
    video_kbps: int
    gop_seconds: float
    profile: str = "Main"
    audio_rate: int = 44100
    audio_kbps: int = 128


def preset_settings(preset: int) -> EncodeSettings:
    """The settings pyegress derives from an ``EncodingOptionsPreset`` (AAC audio)."""
    from pyegress.media.encoding import from_request

    video, audio = from_request(preset, None, has_preset=True, has_advanced=False)
    profile = {"baseline": "Constrained Baseline", "main": "Main", "high": "High"}[video.profile]
    return EncodeSettings(
        video.width,
        video.height,
        video.fps,
        video.bitrate_kbps,
        video.keyframe_interval,
        profile,
        audio.sample_rate,
        audio.bitrate_kbps,
    )


def pyegress_x264_options(preset: int) -> str:
    """x264's settings string (first SEI) of pyegress's own encoder for ``preset``."""
    import av

    from pyegress.media.encoder import VideoEncoder
    from pyegress.media.encoding import from_request
    from pyegress.testing.signals import PatternGenerator

    video, _ = from_request(preset, None, has_preset=True, has_advanced=False)
    encoder = VideoEncoder(video)
    pattern = PatternGenerator(video.width, video.height, video.fps)
    data = bytes(encoder.stream.codec_context.extradata or b"")
    for k in range(2):
        frame = av.VideoFrame.from_ndarray(pattern.frame(k), format="yuv420p")
        data += b"".join(bytes(p) for p in encoder.encode(frame, k))
    data += b"".join(bytes(p) for p in encoder.encode(None))
    options = x264_options(data)
    if options is None:
        raise SystemExit("pyegress's H.264 encoder wrote no x264 settings SEI; cannot check the baseline")
    return options


def bare_encode(
    s: EncodeSettings,
    seconds: float,
    path: Path,
    *,
    paced: bool,
    picture: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """PyAV alone: encode ``seconds`` of pictures + tone with pyegress's settings to an MP4.

    ``picture(k)`` makes frame ``k`` as a ``yuv420p`` ndarray (default: one canvas-sized
    ``PatternGenerator``; :func:`load_capture` replays the pictures pyegress encoded); its CPU is
    reported as ``pattern_cpu_s`` (and is part of the window).
    ``paced`` feeds frames at ``fps`` wall clock, as a live recording does. Returns CPU and wall
    time of the container's open..close (``window_*``), the pattern's own CPU, per-thread CPU
    and the x264 settings string, in the shape the benches' children report.
    """
    import av
    import numpy as np

    from pyegress.testing.signals import PatternGenerator, ToneGenerator

    fps = s.fps
    frames = round(seconds * fps)
    make = picture or PatternGenerator(s.width, s.height, fps).frame
    mono = ToneGenerator(MIX_RATE).samples(0, round((frames + 1) / fps * MIX_RATE))
    pcm = np.repeat(mono[:, None], 2, axis=1)  # the timeline's 48 kHz stereo int16
    gen_cpu = 0.0

    threads0 = thread_cpu()
    cpu0, t0 = self_cpu(), time.monotonic()
    container = av.open(str(path), "w", format="mp4")
    video = container.add_stream("libx264", rate=fps, options=dict(X264_OPTIONS))
    video.profile = s.profile
    video.width, video.height, video.pix_fmt = s.width, s.height, "yuv420p"
    video.bit_rate = s.video_kbps * 1000
    vctx = video.codec_context
    vctx.time_base = Fraction(1, fps)
    vctx.framerate = Fraction(fps, 1)
    vctx.gop_size = round(s.gop_seconds * fps)
    vctx.flags |= av.codec.context.Flags.global_header
    audio = container.add_stream("aac", rate=s.audio_rate)
    audio.layout = "stereo"
    audio.bit_rate = s.audio_kbps * 1000
    actx = audio.codec_context
    actx.time_base = Fraction(1, s.audio_rate)
    actx.flags |= av.codec.context.Flags.global_header
    vctx.open()
    actx.open()
    container.start_encoding()
    resampler = av.AudioResampler(
        format=actx.format.name, layout="stereo", rate=s.audio_rate, frame_size=actx.frame_size or None
    )
    audio_pts = 0
    start = time.monotonic()
    for k in range(frames):
        if paced:
            delay = start + k / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        g0 = time.thread_time()
        image = make(k)
        gen_cpu += time.thread_time() - g0
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts, frame.time_base = k, vctx.time_base
        container.mux(video.encode(frame))
        a, b = round(k / fps * MIX_RATE), round((k + 1) / fps * MIX_RATE)
        chunk = av.AudioFrame.from_ndarray(pcm[a:b].reshape(1, -1), format="s16", layout="stereo")
        chunk.sample_rate, chunk.pts = MIX_RATE, a
        for f in resampler.resample(chunk):
            f.pts, f.time_base = audio_pts, actx.time_base
            audio_pts += f.samples
            container.mux(audio.encode(f))
    for f in resampler.resample(None):
        f.pts, f.time_base = audio_pts, actx.time_base
        audio_pts += f.samples
        container.mux(audio.encode(f))
    container.mux(video.encode(None))
    container.mux(audio.encode(None))
    container.close()
    threads1 = thread_cpu()
    cpu1, t1 = self_cpu(), time.monotonic()
    head = path.read_bytes()[:1_000_000]
    return {
        "window_cpu_s": cpu1 - cpu0,
        "window_wall_s": t1 - t0,
        "recorded_s": frames / fps,
        "frames": frames,
        "file_bytes": path.stat().st_size,
        "pattern_cpu_s": gen_cpu,
        "threads": thread_groups(threads0, threads1),
        "x264": x264_build(head),
        "x264_options": x264_options(head),
    }


# --- replaying the pictures pyegress encoded -------------------------------------------------------


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for captured pictures: in ``/dev/shm`` (RAM) when there is one."""
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="pyegress-bench-frames-", dir=where)


class EncodeCapture:
    """Records, inside the measured egress child, which picture pyegress's ``VideoEncoder`` encodes.

    :meth:`install` patches ``pyegress.media.encoder.VideoEncoder.encode``; between :meth:`start`
    and :meth:`stop`, every call with a frame appends a tick to the sequence, and every frame
    object that differs from the previous call's (the pipeline hands the same object again for a
    tick without a new picture) appends its ``yuv420p`` bytes to ``path``. :meth:`stop` writes
    ``path.json`` (width, height, count, per-tick picture indices) for :func:`load_capture`. Only
    the first encoder seen is recorded (one encoding per egress here). The hook's own CPU (copying
    and writing pictures, on the encode thread) is counted in ``cpu_s`` so the child can take it
    out of its figures (:func:`discount_capture`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: Any = None
        self._encoder: object = None
        self._last: object = None
        self._ticks: list[int] = []
        self._count = 0
        self._size: tuple[int, int] | None = None
        self.cpu_s = 0.0

    def install(self) -> None:
        from pyegress.media.encoder import VideoEncoder

        original = VideoEncoder.encode
        capture = self

        def encode(self: VideoEncoder, frame: Any = None, pts: int = 0, **kw: Any) -> Any:
            if frame is not None:
                capture._record(self, frame)
            return original(self, frame, pts, **kw)  # key=: a key frame asked for (pause, resume)

        VideoEncoder.encode = encode  # type: ignore[method-assign,assignment]

    def start(self) -> None:
        with self._lock:
            self._file = self.path.open("wb")

    def _record(self, encoder: object, frame: Any) -> None:
        started = time.thread_time()
        try:
            self._record_frame(encoder, frame)
        finally:
            self.cpu_s += time.thread_time() - started

    def _record_frame(self, encoder: object, frame: Any) -> None:
        with self._lock:
            if self._file is None:
                return
            if self._encoder is None:
                self._encoder = encoder
            elif encoder is not self._encoder:
                return
            if frame is not self._last:
                self._last = frame
                image = frame.to_ndarray()  # yuv420p: (h * 3 / 2, w) uint8, planes one after the other
                self._size = (frame.width, frame.height)
                image.tofile(self._file)
                self._count += 1
            self._ticks.append(self._count - 1)

    def stop(self) -> dict[str, Any]:
        """Stop recording and write ``path.json``; returns the capture's summary."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            width, height = self._size or (0, 0)
            ticks, count = list(self._ticks), self._count
        meta = {"width": width, "height": height, "count": count, "ticks": ticks}
        Path(f"{self.path}.json").write_text(json.dumps(meta))
        return {"captured_ticks": len(ticks), "captured_pictures": count, "capture_cpu_s": self.cpu_s}


#: The thread group of pyegress's encode thread in :func:`thread_groups`.
ENCODE_THREAD = "python: pyegress-encode"


def discount_capture(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` of an egress child with the :class:`EncodeCapture` hook's CPU taken out.

    The hook runs on the encode thread between ``start`` and ``stop``, inside both the whole and
    the steady window: its CPU comes off both, and off the encode thread's group.
    """
    hook = float(result.get("capture_cpu_s", 0.0))
    out = dict(result)
    for key in ("window_cpu_s", "steady_cpu_s"):
        if key in out:
            out[key] = out[key] - hook
    for key in ("threads", "steady_threads"):
        if ENCODE_THREAD in out.get(key, {}):
            out[key] = {**out[key], ENCODE_THREAD: out[key][ENCODE_THREAD] - hook}
    return out


def load_capture(path: Path | str, width: int, height: int) -> tuple[Callable[[int], Any], dict[str, Any]]:
    """``picture(k)`` replaying what :class:`EncodeCapture` recorded at ``path``, and its summary.

    Every picture is read into memory here, before any timed window; tick ``k`` past the end of
    the captured sequence wraps around to its start.
    """
    import numpy as np

    meta = json.loads(Path(f"{path}.json").read_text())
    if (meta["width"], meta["height"]) != (width, height) or not meta["ticks"]:
        raise SystemExit(
            f"{path}: captured {meta['count']} pictures at {meta['width']}x{meta['height']}, "
            f"{len(meta['ticks'])} ticks; wanted {width}x{height}"
        )
    frames = np.fromfile(str(path), dtype=np.uint8).reshape(meta["count"], height * 3 // 2, width)
    ticks = meta["ticks"]

    def picture(k: int) -> Any:
        return frames[ticks[k % len(ticks)]]

    summary = {
        "captured_ticks": len(ticks),
        "captured_pictures": int(meta["count"]),
        "captured_bytes": int(frames.nbytes),
    }
    return picture, summary


# --- children and the loopback server ----------------------------------------------------------


def server_line() -> str:
    """Where the bench's livekit-server and WebRTC media ran, for its report."""
    from pyegress.testing.netns import current

    ns = current()
    if ns is None:
        return "a livekit-server on this machine (media over its own interface address)"
    return f"a livekit-server in a network namespace of its own ({ns.address.ip}, pyegress.testing.netns)"


def child_env(server: Any) -> dict[str, str]:
    """This environment plus ``LIVEKIT_URL`` / ``_API_KEY`` / ``_API_SECRET`` of ``server``."""
    env = dict(os.environ)
    env.update(LIVEKIT_URL=server.url, LIVEKIT_API_KEY=server.api_key, LIVEKIT_API_SECRET=server.api_secret)
    return env


def check_child(run: ChildRun) -> ChildRun:
    """``run``, or exit with its stderr when it failed or reported nothing."""
    if run.returncode != 0 or not run.result:
        raise SystemExit(f"{run.label} child failed (exit {run.returncode}):\n{run.stderr_tail}")
    return run


def versions() -> dict[str, str]:
    """PyAV, libavcodec, livekit and libx264 versions, for the report."""
    import importlib.metadata as md

    import av

    libav = av.library_versions.get("libavcodec", (0, 0, 0))
    return {
        "PyAV": av.__version__,
        "libavcodec": ".".join(str(v) for v in libav),
        "livekit": md.version("livekit"),
        "libx264": av.codec.Codec("libx264", "w").long_name,
    }


# --- publishers -------------------------------------------------------------------------------


def start_publishers(
    room: str,
    count: int,
    env: dict[str, str],
    seconds: float,
    *,
    size: tuple[int, int] = (640, 360),
    fps: float = 30,
    codec: str = "h264",
    named: bool = False,
    niced: bool = True,
    extra: Sequence[str] = (),
) -> list[subprocess.Popen[bytes]]:
    """``count`` synthetic publishers ``p00``, ``p01``, ... in ``room``, each a process of its own.

    ``named`` gives them display names ("Participant 1", ...); ``niced`` runs them at nice 19 so
    that on a small machine they do not starve the measured child of CPU. ``extra`` goes to
    ``pyegress.testing.publish`` as it is.
    """
    procs = []
    for i in range(count):
        argv = [sys.executable, "-m", "pyegress.testing.publish", "--room", room, "--identity", f"p{i:02d}"]
        argv += ["--name", f"Participant {i + 1}"] if named else []
        argv += ["--width", str(size[0]), "--height", str(size[1]), "--fps", f"{fps:g}", "--codec", codec]
        argv += ["--duration", str(seconds), *extra]
        procs.append(
            subprocess.Popen(
                ["nice", "-n", "19", *argv] if niced else argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def stop_processes(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """Terminate ``procs`` (all at once), killing any still there after 10 s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def wait_published(
    server: Any, room: str, count: int, timeout: float = 60.0
) -> dict[str, dict[str, str]]:
    """Wait until ``count`` participants of ``room`` publish video and audio: identity -> track sids.

    Each value is ``{"video": sid, "audio": sid}`` (the first track of each kind).
    """
    from livekit import api
    from livekit.protocol import models as pm

    deadline = time.monotonic() + timeout
    ready: dict[str, dict[str, str]] = {}
    async with server.api_client() as lk:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the room is only there once someone joined
                res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                ready = {}
                for p in res.participants:
                    video = [t.sid for t in p.tracks if t.type == pm.TrackType.VIDEO]
                    sound = [t.sid for t in p.tracks if t.type == pm.TrackType.AUDIO]
                    if video and sound:
                        ready[p.identity] = {"video": video[0], "audio": sound[0]}
                if len(ready) >= count:
                    return ready
            await asyncio.sleep(0.25)
    raise SystemExit(f"only {len(ready)} of {count} publishers in {room} published within {timeout:g} s")
