"""A page's processes (Debian's Chromium, a private Xvfb) and the watchdog that stops them outliving us.

Nothing started here may outlive the recorder process, even a SIGKILLed one. Chromium is
launched by Playwright's driver, which kills its browsers when its stdin closes (our process
ended), and every Chromium process of a page is reaped on close. Beyond that, a
:class:`Watchdog` child reads a pipe whose only write end this process holds: EOF means this
process is gone, however it ended, and the watchdog then stops the Xvfb displays registered
with it and any Chromium of ours left, and deletes our profiles (:mod:`.watchdog`). Measured:
one small process per recorder process (20-30 ms of CPU to start, 13 MB RSS of which 7 MB its
own); the Xvfb, Chromium and driver of a SIGKILLed recorder end within 0.2 s (tests/test_web.py).

Not chosen: ``prctl(PR_SET_PDEATHSIG)``, through ``preexec_fn`` (which may deadlock in a
threaded process) or ``setpriv --pdeathsig``: the signal comes when the *thread* that forked
exits, so a display started from a worker thread's event loop died with that thread, and it
cannot reach Chromium, which is not our child. ``start_new_session`` plus killing at close,
``atexit`` or in signal handlers: none of that runs on SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import psutil

from ..errors import SourceError
from . import watchdog

log = logging.getLogger("pyegress.web")

#: Profiles are ``<tmp>/pyegress-chromium-<our pid>-*``: every process of our browsers says so.
PROFILE_PREFIX = "pyegress-chromium-"


def find_chromium() -> str:
    """Debian's Chromium (``PYEGRESS_CHROMIUM`` overrides); never a downloaded browser."""
    for candidate in (os.environ.get("PYEGRESS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SourceError("chromium: not installed (apt-get install chromium, or set PYEGRESS_CHROMIUM)")


def our_profiles() -> str:
    """The prefix of every Chromium profile this process creates."""
    return os.path.join(tempfile.gettempdir(), f"{PROFILE_PREFIX}{os.getpid()}-")


def new_profile() -> str:
    """A fresh profile directory (after deleting those of pyegress processes that are gone)."""
    for path in Path(tempfile.gettempdir()).glob(f"{PROFILE_PREFIX}*-*"):
        pid = path.name[len(PROFILE_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    WATCHDOG.start()  # deletes the profile if we are killed
    return tempfile.mkdtemp(prefix=os.path.basename(our_profiles()))


def browser_processes(profile: str) -> set[psutil.Process]:
    """Chromium processes with a user data dir starting with ``profile``, and their descendants.

    ``browser_processes(our_profiles())`` lists every browser process this process started that
    is still alive.
    """
    return set(watchdog.victims({}, profile)) if profile else set()


def browser_pids(profile: str) -> set[int]:
    """The pids of :func:`browser_processes`."""
    return {p.pid for p in browser_processes(profile)}


def reap(procs: set[psutil.Process]) -> None:
    """SIGKILL whichever of ``procs`` (Chromium processes) outlived a graceful close by 3 s."""
    alive = watchdog.running(list(procs), 3.0)
    if alive:
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        log.warning("killed %d Chromium process(es) left after close", len(alive))


class Watchdog:
    """This process's watchdog (one, started on first use): see the module's docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._watched: set[int] = set()
        self._failed = False

    def start(self) -> None:
        self._tell("", None)

    def watch(self, pid: int) -> None:
        """Stop ``pid`` when this process ends, unless :meth:`forget` is called first."""
        self._tell("watch", pid)

    def forget(self, pid: int) -> None:
        self._tell("forget", pid)

    def _tell(self, verb: str, pid: int | None) -> None:
        with self._lock:
            if pid is not None:
                (self._watched.add if verb == "watch" else self._watched.discard)(pid)
            line = f"{verb} {pid}\n" if pid is not None else ""
            for _ in range(2):
                if self._proc is None or self._proc.poll() is not None:
                    if self._failed:
                        return
                    self._proc = subprocess.Popen(
                        [sys.executable, watchdog.__file__, our_profiles()],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        start_new_session=True,  # a Ctrl-C of the terminal is for the recorder
                    )
                    line = "".join(f"watch {p}\n" for p in self._watched)
                pipe: IO[bytes] | None = self._proc.stdin
                try:
                    assert pipe is not None
                    pipe.write(line.encode())
                    pipe.flush()
                    return
                except (OSError, ValueError):
                    self._proc = None
            self._failed = True
            log.warning("the watchdog does not run: a killed recorder may leave Xvfb behind")

    def after_fork(self) -> None:
        """In a forked child: the watchdog is the parent's (it must see EOF when the parent ends)."""
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._lock = threading.Lock()
        self._proc, self._watched, self._failed = None, set(), False


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG.after_fork)


async def start_xvfb(width: int, height: int) -> tuple[subprocess.Popen[bytes], str]:
    """A private Xvfb display of ``width`` x ``height`` and its name (``:N``), watched.

    The display number is picked at random and claimed through Xvfb's own lock file
    (``-displayfd`` alone lets concurrent servers collide), then awaited until it is ready.
    """
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SourceError("capture: Xvfb is not installed (apt-get install xvfb), or use screencast")
    rng = random.SystemRandom()
    for _ in range(20):
        number = rng.randint(100, 32000)
        if os.path.exists(f"/tmp/.X{number}-lock") or os.path.exists(f"/tmp/.X11-unix/X{number}"):
            continue
        read_fd, write_fd = os.pipe()
        args = [xvfb, f":{number}", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24"]
        try:
            proc = subprocess.Popen(
                [*args, "-nolisten", "tcp", "-noreset"],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the terminal is for the recorder
            )
            WATCHDOG.watch(proc.pid)
            os.close(write_fd)
            write_fd = -1
            said = await asyncio.to_thread(_read_line, read_fd, 10.0)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        if said == str(number) and proc.poll() is None:
            return proc, f":{number}"
        await asyncio.to_thread(stop_process, proc)  # that display was taken after all
    raise SourceError("capture: Xvfb did not start")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc``, SIGKILL it after 5 s, and stop watching it."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    WATCHDOG.forget(proc.pid)


def _read_line(fd: int, timeout: float) -> str:
    """One line from ``fd`` (Xvfb dies if its pipe closes before it wrote the whole line)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 32) if ready else b""
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()
