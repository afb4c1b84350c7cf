"""The watchdog process: when the recorder process ends, however it ends, its Xvfb and Chromium go too.

Run by :class:`pyegress.sources.processes.Watchdog` as a script (it imports nothing of
pyegress): ``python watchdog.py <profile prefix>``. Its stdin is a pipe whose only write end
is held by the recorder process, which tells it ``watch <pid>`` / ``forget <pid>``. The pipe
reaches EOF when that process is gone (SIGKILL included); the watchdog then stops every
process still watched, every Chromium whose profile starts with the prefix (and their
children), deletes those profiles, and exits.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import sys
import time

import psutil


def victims(watched: dict[int, psutil.Process], profiles: str) -> list[psutil.Process]:
    """The watched processes still running, the Chromium processes of ``profiles``, their children."""
    found = {p for p in watched.values() if p.is_running()}
    marker = f"--user-data-dir={profiles}"
    for proc in psutil.process_iter(["cmdline"]):
        if any(arg.startswith(marker) for arg in proc.info["cmdline"] or ()):
            found.add(proc)
    for proc in list(found):
        with contextlib.suppress(psutil.Error):
            found.update(proc.children(recursive=True))
    return list(found)


def running(procs: list[psutil.Process], timeout: float = 0.0) -> list[psutil.Process]:
    """Those of ``procs`` still running after up to ``timeout`` seconds (a zombie has ended)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def stop(procs: list[psutil.Process], grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL whatever is left after ``grace`` seconds."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    for proc in running(procs, grace):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def main(profiles: str) -> None:
    watched: dict[int, psutil.Process] = {}
    for line in sys.stdin:
        verb, _, pid = line.partition(" ")
        with contextlib.suppress(ValueError, psutil.Error):
            if verb == "watch":
                watched[int(pid)] = psutil.Process(int(pid))
            elif verb == "forget":
                watched.pop(int(pid), None)
    stop(victims(watched, profiles))
    for path in glob.glob(f"{glob.escape(profiles)}*"):
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
