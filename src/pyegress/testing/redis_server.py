"""A throw-away Redis for tests: Debian's ``redis-server`` on 127.0.0.1 and a free port.

No persistence and no config file: everything is given on the command line, the working folder
is a temporary one. :meth:`RedisServer.restart` stops and starts it on the same port, for tests
of what survives a Redis restart. Install it with ``scripts/install-redis-server.sh`` or point
``PYEGRESS_REDIS_SERVER`` at a binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .ports import free_tcp_port

__all__ = ["RedisServer", "RedisServerError"]


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start."""


def _find_binary() -> str:
    binary = (
        os.environ.get("PYEGRESS_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    )
    if not os.access(binary, os.X_OK):
        raise RedisServerError(
            "redis-server is not installed (run scripts/install-redis-server.sh or set PYEGRESS_REDIS_SERVER)"
        )
    return binary


def _answers(port: int) -> bool:
    """True when something on the port answers a Redis PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1; ``address`` (``127.0.0.1:PORT``) and ``url`` to reach it."""

    def __init__(self, *, start_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port``, as livekit.yaml's ``redis.address`` takes it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``redis://`` URL for ``redis.asyncio.Redis.from_url``."""
        return f"redis://{self.address}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self._tmp is None:
            return ""
        try:
            text = (Path(self._tmp.name) / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> RedisServer:
        """Start Redis (a free port on the first start, the same port on a restart) and wait
        until it answers PING."""
        if self.running:
            return self
        binary = _find_binary()
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pyegress-redis-")
            self.port = free_tcp_port()
        root = Path(self._tmp.name)
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(root / "redis.log"),
        ]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RedisServerError(f"redis-server exited with {code}:\n{self.log_tail()}")
            if _answers(self.port):
                return self
            time.sleep(0.05)
        self.stop(cleanup=False)
        raise RedisServerError(
            f"redis-server did not answer within {self.start_timeout} s:\n{self.log_tail()}"
        )

    def stop(self, *, cleanup: bool = True, timeout: float = 5.0) -> None:
        """Stop Redis (killed after ``timeout``); ``cleanup`` also removes its folder and forgets
        the port."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.wait()
        if cleanup and self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def restart(self) -> RedisServer:
        """Stop and start again on the same port (clients see their connections drop)."""
        self.stop(cleanup=False)
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.address} {'running' if self.running else 'stopped'}>"
