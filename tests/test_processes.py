"""The watchdog that keeps a recorder's processes from outliving it (no browser needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

#: Watches two processes, forgets one, forks (a child that lives on), says the pids.
RECORDER = """
import os, subprocess, time
from pyegress.sources.processes import WATCHDOG

watched = subprocess.Popen(["sleep", "60"], start_new_session=True)
forgotten = subprocess.Popen(["sleep", "60"], start_new_session=True)
WATCHDOG.watch(watched.pid)
WATCHDOG.watch(forgotten.pid)
WATCHDOG.forget(forgotten.pid)
fork = os.fork()
if fork == 0:
    time.sleep(60)
    os._exit(0)
print(watched.pid, forgotten.pid, fork, flush=True)
time.sleep(60)
"""


def running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_the_watchdog_stops_what_is_watched_when_the_recorder_is_killed() -> None:
    child = subprocess.Popen([sys.executable, "-c", RECORDER], stdout=subprocess.PIPE, text=True)
    survivors: list[psutil.Process] = []
    try:
        assert child.stdout is not None
        watched, forgotten, fork = (psutil.Process(int(pid)) for pid in child.stdout.readline().split())
        survivors = [forgotten, fork]
        dogs = [p for p in psutil.Process(child.pid).children() if "watchdog.py" in " ".join(p.cmdline())]
        assert len(dogs) == 1, "one watchdog per recorder process"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 3
        while (running(watched) or running(dogs[0])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(watched), "the watched process ends with the recorder"
        assert not running(dogs[0]), "the watchdog ends when its work is done"
        assert running(forgotten), "a forgotten process is left alone"
        assert running(fork), "the recorder's fork lives on (the watchdog followed the recorder, not it)"
    finally:
        if child.poll() is None:
            child.kill()
        for proc in survivors:
            if running(proc):
                proc.kill()
