"""A throw-away Redis for tests: Debian's ``redis-server`` on 127.0.0.1 and a free port.

No persistence and no config file: everything is given on the command line, the working folder
is a temporary one. :meth:`RedisServer.restart` stops and starts it on the same port, for tests
of what survives a Redis restart. :class:`RedisCluster` is three of them made a Redis Cluster
with ``redis-cli --cluster create`` (no replicas). Install it with
``scripts/install-redis-server.sh`` or point ``PYEGRESS_REDIS_SERVER`` at a binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .ports import free_tcp_port

__all__ = ["RedisCluster", "RedisServer", "RedisServerError"]


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

    def __init__(self, *, start_timeout: float = 10.0, extra_args: Sequence[str] = ()) -> None:
        """``extra_args`` join redis-server's command line (``--cluster-enabled yes`` ...)."""
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
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
            *self.extra_args,
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


class RedisCluster:
    """A Redis Cluster of three ``redis-server`` masters on 127.0.0.1 (no replicas), made with
    ``redis-cli --cluster create``; ``addresses`` as livekit.yaml's ``redis.cluster_addresses``
    takes them. :meth:`stop_node` stops one, for tests of what survives a node going away."""

    def __init__(self, *, nodes: int = 3, start_timeout: float = 20.0) -> None:
        self.start_timeout = start_timeout
        # the cluster config file lives in each node's own --dir; the cluster bus gets a free port
        # of its own (by default it is the port + 10000, which may be taken or above 65535)
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "2000"]
        self.nodes = [
            RedisServer(extra_args=[*args, "--cluster-port", str(free_tcp_port())]) for _ in range(nodes)
        ]

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def _cli(self, *args: str) -> str:
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        if not os.access(cli, os.X_OK):
            raise RedisServerError("redis-cli is not installed (scripts/install-redis-server.sh)")
        done = subprocess.run([cli, *args], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RedisServerError(f"redis-cli {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def start(self) -> RedisCluster:
        """Start the nodes, join them and wait until every node says ``cluster_state:ok``."""
        try:
            for node in self.nodes:
                node.start()
            self._cli("--cluster", "create", *self.addresses, "--cluster-replicas", "0", "--cluster-yes")
            deadline = time.monotonic() + self.start_timeout
            for node in self.nodes:
                while "cluster_state:ok" not in self._cli("-p", str(node.port), "cluster", "info"):
                    if time.monotonic() > deadline:
                        raise RedisServerError(f"{node.address} never reached cluster_state:ok")
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_node(self, index: int) -> None:
        """Stop one node (its folder kept); the others go on."""
        self.nodes[index].stop(cleanup=False)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisCluster {' '.join(self.addresses)}>"
