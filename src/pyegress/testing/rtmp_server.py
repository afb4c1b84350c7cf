"""A throw-away RTMP server for tests: nginx with its RTMP module, plus a TLS front for RTMPS.

nginx runs in the foreground as one process (``master_process off``), so it needs no root and
no system config: its prefix, config, logs and recordings live in a temporary folder. Every
stream published to ``rtmp://127.0.0.1:PORT/live/<key>`` is recorded to
``<recordings>/<key>-<unix time>.flv`` (``record all``; one file per connection). RTMPS is
nginx's ``stream`` module terminating TLS (a self-signed certificate made with ``openssl``)
in front of the same RTMP port.

Install nginx with ``scripts/install-rtmp-server.sh`` (Debian: ``nginx libnginx-mod-rtmp
libnginx-mod-stream``) or point ``PYEGRESS_NGINX`` at a binary and ``PYEGRESS_NGINX_MODULES``
at the folder holding ``ngx_rtmp_module.so`` and ``ngx_stream_module.so``.
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

from .ports import free_tcp_port

__all__ = ["RtmpServer", "RtmpServerError"]

_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules")


class RtmpServerError(RuntimeError):
    """nginx (or its RTMP module, or openssl) is missing, or the server did not start."""


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _find_nginx() -> tuple[str, Path]:
    binary = os.environ.get("PYEGRESS_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        raise RtmpServerError("nginx is not installed (run scripts/install-rtmp-server.sh)")
    dirs = [os.environ.get("PYEGRESS_NGINX_MODULES", ""), *_MODULE_DIRS]
    for d in filter(None, dirs):
        if (Path(d) / "ngx_rtmp_module.so").is_file():
            return binary, Path(d)
    raise RtmpServerError("the nginx RTMP module is not installed (Debian: libnginx-mod-rtmp)")


class RtmpServer:
    """nginx-rtmp on free loopback ports; ``url(key)`` / ``rtmps_url(key)`` to publish to it."""

    def __init__(self, *, tls: bool = True, start_timeout: float = 10.0) -> None:
        self.tls = tls
        self.start_timeout = start_timeout
        self.port = 0
        self.tls_port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        if self._tmp is None:
            raise RtmpServerError("server not started")
        return Path(self._tmp.name)

    @property
    def recordings(self) -> Path:
        """Folder of the FLV files nginx recorded."""
        return self.root / "rec"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, key: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{key}"

    def rtmps_url(self, key: str, app: str = "live") -> str:
        if not self.tls:
            raise RtmpServerError("started without TLS")
        return f"rtmps://127.0.0.1:{self.tls_port}/{app}/{key}"

    def recorded(self, key: str) -> list[Path]:
        """The FLV files recorded for stream ``key``, oldest first."""
        if self._tmp is None or not self.recordings.is_dir():
            return []
        return sorted(self.recordings.glob(f"{key}-*.flv"), key=lambda p: (p.stat().st_mtime, p.name))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / "error.log").read_text(errors="replace").splitlines()[-lines:])
        except (OSError, RtmpServerError):
            return ""

    def _config(self, modules: Path) -> str:
        root = self.root
        load = [f"load_module {modules / 'ngx_rtmp_module.so'};"]
        stream = ""
        if self.tls:
            load.append(f"load_module {modules / 'ngx_stream_module.so'};")
            stream = f"""
stream {{
    server {{
        listen 127.0.0.1:{self.tls_port} ssl;
        ssl_certificate {root / "cert.pem"};
        ssl_certificate_key {root / "key.pem"};
        proxy_pass 127.0.0.1:{self.port};
    }}
}}"""
        return (
            "\n".join(load)
            + f"""
daemon off;
master_process off;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{self.port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {self.recordings};
            record_unique on;
            record_suffix .flv;
        }}
    }}
}}{stream}
"""
        )

    def _certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RtmpServerError("openssl is needed to make the RTMPS test certificate")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
                str(self.root / "key.pem"),
                "-out",
                str(self.root / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> RtmpServer:
        """Start nginx (new ports on the first start, the same ports on a restart)."""
        if self.running:
            return self
        binary, modules = _find_nginx()
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pyegress-rtmp-")
            self.port = free_tcp_port()
            self.tls_port = free_tcp_port() if self.tls else 0
            self.recordings.mkdir()
            if self.tls:
                self._certificate()
        conf = self.root / "nginx.conf"
        conf.write_text(self._config(modules))
        log = open(self.root / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
        with log:
            self._proc = subprocess.Popen(
                [binary, "-p", f"{self.root}/", "-c", str(conf), "-e", str(self.root / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RtmpServerError(f"nginx exited with {self._proc.returncode}:\n{self.log_tail()}")
            if _answers(self.port) and (not self.tls or _answers(self.tls_port)):
                return self
            time.sleep(0.05)
        self.stop(cleanup=False)
        raise RtmpServerError(f"nginx did not listen within {self.start_timeout} s:\n{self.log_tail()}")

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop nginx (its recordings are finished on the way); ``cleanup`` removes the folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # nginx's fast shutdown: closes streams, ends recordings
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if cleanup and self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def restart(self, pause: float = 0.0) -> None:
        """Drop every connection: stop nginx, wait ``pause`` seconds, start it on the same ports."""
        self.stop(cleanup=False)
        time.sleep(pause)
        self.start()

    def __enter__(self) -> RtmpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
