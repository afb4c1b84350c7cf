"""Run a throw-away livekit-server on loopback for tests and demos."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from livekit import api

from .ports import free_tcp_port

if TYPE_CHECKING:
    from .relay import BurstRelay

__all__ = ["LiveKitServer", "LiveKitServerError", "find_server_binary"]

#: UDP ports of the server's rtc range: livekit-server binds one per peer connection (each
#: participant's, each egress's) and offers a connection it finds none for only its ICE-TCP
#: candidate; the encoded subscriber (aiortc) cannot use it, so a bench of 200 egresses needs more.
_UDP_RANGE = 400
_FALLBACK_BIN = Path("/root/go/bin/server")


class LiveKitServerError(RuntimeError):
    """The livekit-server binary is missing or the server failed to start."""


def _repo_root() -> Path:
    # src/pyegress/testing/server.py -> repo root is three levels above the package dir.
    return Path(__file__).resolve().parents[3]


def find_server_binary() -> Path:
    """Locate livekit-server: $LIVEKIT_SERVER_BIN, <repo>/.tools/bin, PATH, /root/go/bin/server."""
    env = os.environ.get("LIVEKIT_SERVER_BIN")
    if env:
        p = Path(env)
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise LiveKitServerError(f"LIVEKIT_SERVER_BIN={env!r} is not an executable file")
    candidates: list[Path] = [_repo_root() / ".tools" / "bin" / "livekit-server"]
    on_path = shutil.which("livekit-server")
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(_FALLBACK_BIN)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise LiveKitServerError(
        "livekit-server binary not found; run scripts/install-livekit-server.sh or set LIVEKIT_SERVER_BIN"
    )


#: Starts tried when a port picked as free is taken before the server binds it.
_START_ATTEMPTS = 3


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_udp_range(count: int, avoid: set[int]) -> int:
    """First port of ``count`` consecutive free UDP ports on loopback."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        start = rng.randrange(20000, 60000 - count)
        ports = range(start, start + count)
        if any(p in avoid for p in ports):
            continue
        if all(_udp_free(p) for p in ports):
            return start
    raise LiveKitServerError(f"could not find {count} free consecutive UDP ports")


class LiveKitServer:
    """A livekit-server subprocess bound to 127.0.0.1 with random keys and free ports.

    Use as ``with LiveKitServer() as srv:`` or ``async with LiveKitServer() as srv:``,
    or call :meth:`start` / :meth:`stop` yourself.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 20.0,
        log_level: str = "info",
        redis_address: str = "",
        webhook_urls: Sequence[str] = (),
        udp_ports: int = _UDP_RANGE,
        relay: BurstRelay | None = None,
    ) -> None:
        """``redis_address`` (``host:port``) gives the server a ``redis:`` section (what egress
        dispatch to workers needs); ``webhook_urls`` get its webhooks, signed with its key;
        ``udp_ports``: how many UDP ports its rtc range has; ``relay``: a jittery network in
        front of its media (clients reach the server through it only; in a namespace only)."""
        self._binary = Path(binary) if binary is not None else None
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.redis_address = redis_address
        self.webhook_urls = tuple(webhook_urls)
        self.udp_ports = udp_ports
        self.relay = relay
        self.api_key = "APItest" + secrets.token_hex(6)
        self.api_secret = secrets.token_urlsafe(32)
        self.port = 0
        self.rtc_tcp_port = 0
        self.udp_port_start = 0
        self.udp_port_end = 0
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    # -- properties -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """WebSocket URL clients connect to (``ws://127.0.0.1:PORT``)."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """HTTP URL of the server (for the Twirp API)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        if self._log_path is None:
            raise LiveKitServerError("server not started")
        return self._log_path

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------
    def _config_yaml(self) -> str:
        # In a pyegress network namespace the media goes over its veth address: libwebrtc
        # clients never gather loopback candidates, so a loopback-only server is unreachable there.
        from .netns import current  # not at the top: `python -m pyegress.testing.netns` would import it twice

        ns = current()
        node_ip, iface, loopback = (
            (ns.address.ip, ns.interface, "false") if ns else ("127.0.0.1", "lo", "true")
        )
        if self.relay is not None:  # its candidates name the relay, and it checks no others
            node_ip = self.relay.address
        return (
            f"port: {self.port}\n"
            'bind_addresses: ["127.0.0.1"]\n'
            "rtc:\n"
            f"  tcp_port: {self.rtc_tcp_port}\n"
            f"  port_range_start: {self.udp_port_start}\n"
            f"  port_range_end: {self.udp_port_end}\n"
            "  use_external_ip: false\n"
            f"  node_ip: {node_ip}\n"
            f"  enable_loopback_candidate: {loopback}\n"
            + ("  use_ice_lite: true\n" if self.relay is not None else "")
            + "  interfaces:\n"
            f"    includes: [{iface}]\n"
            "keys:\n"
            f'  "{self.api_key}": "{self.api_secret}"\n'
            "room:\n"
            "  empty_timeout: 30\n"
            "logging:\n"
            f"  level: {self.log_level}\n"
            + (f"redis:\n  address: {self.redis_address}\n" if self.redis_address else "")
            + (
                f"webhook:\n  api_key: {self.api_key}\n  urls: {json.dumps(list(self.webhook_urls))}\n"
                if self.webhook_urls
                else ""
            )
        )

    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` lines of the server log (empty if none)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _fail(self, reason: str) -> LiveKitServerError:
        tail = self.log_tail()
        self.stop()
        msg = f"livekit-server failed to start: {reason}"
        if tail:
            msg += f"\n--- server log tail ---\n{tail}"
        return LiveKitServerError(msg)

    def _http_ok(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + "/", timeout=1.0) as resp:
                return int(resp.status) < 500
        except urllib.error.HTTPError as e:
            return e.code < 500
        except (OSError, ValueError):
            return False

    def start(self) -> LiveKitServer:
        """Start the server and block until its HTTP port answers (bounded by start_timeout)."""
        if self.running:
            return self
        if self.relay is not None:
            from .netns import current  # as in _config_yaml

            if current() is None:
                raise LiveKitServerError("a relay runs inside a pyegress network namespace only")
        binary = self._binary or find_server_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise LiveKitServerError(f"livekit-server binary {binary} is not executable")
        for attempt in range(_START_ATTEMPTS):
            self._launch(binary)
            why = self._wait_up()
            if not why:
                self._start_relay()
                return self
            # a port found free was taken before the server bound it: new ports, again
            exited = self._proc is not None and self._proc.poll() is not None
            if exited and "address already in use" in self.log_tail() and attempt + 1 < _START_ATTEMPTS:
                self.stop()
                continue
            raise self._fail(why)
        raise self._fail("no free ports")  # not reached: the last attempt raises above

    def _start_relay(self) -> None:
        if self.relay is None:
            return
        from .netns import current  # as in _config_yaml

        ns = current()
        assert ns is not None  # start() refused a relay outside one
        try:
            self.relay.start(str(ns.address.ip), range(self.udp_port_start, self.udp_port_end + 1))
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            raise self._fail(f"relay: {e}") from e

    def _wait_up(self) -> str:
        """'' once the HTTP port answers, else why it did not (bounded by start_timeout)."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return f"process exited with code {self._proc.returncode}"
            if self._http_ok():
                return ""
            time.sleep(0.1)
        return f"HTTP port {self.port} did not answer within {self.start_timeout}s"

    def kill(self) -> None:
        """SIGKILL the server as a crash would (no goodbye to clients); keeps its ports, keys
        and config for :meth:`restart`."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def restart(self) -> LiveKitServer:
        """Start again, after :meth:`kill`, on the same ports with the same keys (a new, empty
        server: rooms and sessions are gone, as after a real crash). Blocks until it answers."""
        if self.running:
            return self
        if self._tmpdir is None:
            raise LiveKitServerError("restart: the server was never started (or was stopped)")
        self._spawn(self._binary or find_server_binary(), Path(self._tmpdir.name))
        why = self._wait_up()
        if why:
            raise self._fail(f"restart: {why}")
        return self

    def _launch(self, binary: Path) -> None:
        """Pick free ports, write the config and spawn the server (not waited for)."""
        self._tmpdir = tempfile.TemporaryDirectory(prefix="pyegress-lk-")
        tmp = Path(self._tmpdir.name)
        self.port = free_tcp_port()
        self.rtc_tcp_port = free_tcp_port()
        while self.rtc_tcp_port == self.port:
            self.rtc_tcp_port = free_tcp_port()
        self.udp_port_start = _free_udp_range(self.udp_ports, {self.port, self.rtc_tcp_port})
        self.udp_port_end = self.udp_port_start + self.udp_ports - 1
        (tmp / "livekit.yaml").write_text(self._config_yaml())
        # Keep the log outside the temp dir so it survives stop() for post-mortems.
        fd, log_name = tempfile.mkstemp(prefix="livekit-server-", suffix=".log")
        os.close(fd)
        self._log_path = Path(log_name)
        self._spawn(binary, tmp)

    def _spawn(self, binary: Path, tmp: Path) -> None:
        """Run the server on the config in ``tmp``, appending to the log."""
        assert self._log_path is not None
        with open(self._log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    [str(binary), "--config", str(tmp / "livekit.yaml")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp,
                    start_new_session=True,
                )
            except OSError as e:
                raise self._fail(f"cannot execute {binary}: {e}") from e

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (kill after ``timeout``) and its relay; the process is always reaped."""
        if self.relay is not None:
            self.relay.stop()
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
        if self._tmpdir is not None:
            with contextlib.suppress(OSError):
                self._tmpdir.cleanup()
            self._tmpdir = None

    # -- tokens ------------------------------------------------------------------------
    def token(
        self,
        identity: str,
        room: str,
        *,
        hidden: bool = False,
        can_publish: bool = True,
        can_subscribe: bool = True,
        name: str | None = None,
    ) -> str:
        """Mint a room-join JWT for this server's key pair."""
        tok = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=room,
                    hidden=hidden,
                    can_publish=can_publish,
                    can_subscribe=can_subscribe,
                )
            )
        )
        if name is not None:
            tok = tok.with_name(name)
        return tok.to_jwt()

    def api_client(self) -> api.LiveKitAPI:
        """A new :class:`livekit.api.LiveKitAPI` client for this server (close it after use)."""
        return api.LiveKitAPI(self.http_url, self.api_key, self.api_secret)

    # -- context managers -----------------------------------------------------------
    def __enter__(self) -> LiveKitServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LiveKitServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LiveKitServer {self.url} {state}>"
