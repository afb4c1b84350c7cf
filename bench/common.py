"""Shared helpers for the benchmarks: measured child processes, machine facts, the results doc.

Each benchmark runs the thing it measures in a child process and reads that child's CPU time
and peak RSS from the kernel (``wait4``), so nothing else in the run (server, publisher, the
parent itself) is counted. Figures land in ``docs/performance.md``, one section per benchmark
between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers.
"""

from __future__ import annotations

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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
