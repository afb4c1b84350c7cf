"""A jittery network between the clients and a test livekit-server: a UDP relay that holds the
RTP packets of the payload types it is told and lets them go together, every ``burst`` seconds.

The audio bursts of :class:`~pyegress.testing.SyntheticPublisher` (``audio_burst``) hold the
microphone's chunks before the SDK: that also moves the sender's own audio against its picture
(+17..+20 ms in the file as sent at 200 ms bursts, against -3..-5 ms without; docs/motion.md),
which no network does. Here the sender stays steady and only the packets' way to the server is
bursty, as on a congested radio link.

:class:`~pyegress.testing.LiveKitServer` given a :class:`BurstRelay` advertises the relay's address
as its ICE candidate and runs ICE-lite, so it never checks a client's own addresses and every
pair runs through the relay. The relay listens on each port of the server's UDP range at a second
address of the pyegress network namespace (added to the veth's peer, which the server does not
bind) and forwards each client's datagrams from a socket of their own to the same port of the
server, and the answers back. Only the client-to-server direction is held; RTCP never is.

It runs as a subprocess (``python -m pyegress.testing.relay``), so the test process's own work
never delays a packet. Inside a pyegress network namespace only: the address it adds exists
nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import math
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from . import netns

__all__ = ["AUDIO_PAYLOAD_TYPES", "BurstRelay", "RelayStats", "main"]

#: The payload types libwebrtc (the SDK's and Chromium's) gives Opus: alone, and in RED (the
#: redundant audio LiveKit's SDKs publish by default).
AUDIO_PAYLOAD_TYPES = frozenset({111, 63})
_READY = "ready"
Address = tuple[str, int]


@dataclass
class RelayStats:
    """What the relay carried: datagrams each way, and how many of those to the server it held."""

    to_server: int = 0
    to_clients: int = 0
    held: int = 0
    clients: int = 0


def _held_type(data: bytes, types: frozenset[int]) -> bool:
    """Whether ``data`` is an RTP packet (version 2, not RTCP) of one of ``types``."""
    if len(data) < 12 or data[0] & 0xC0 != 0x80:
        return False  # STUN, DTLS, or not RTP
    if 192 <= data[1] <= 223:
        return False  # RTCP: its packet types sit where RTP's marker bit and type would
    return data[1] & 0x7F in types


class _Relay:
    """The relay's event-loop side (in the subprocess)."""

    def __init__(self, listen: str, server: str, burst: float, types: frozenset[int]) -> None:
        self.listen, self.server, self.burst, self.types = listen, server, burst, types
        self.stats = RelayStats()
        self._listeners: dict[int, asyncio.DatagramTransport] = {}
        self._upstream: dict[tuple[int, Address], asyncio.DatagramTransport] = {}
        self._pending: list[tuple[asyncio.DatagramTransport, bytes]] = []
        self._connecting: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak ones
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()

    async def open(self, ports: range) -> None:
        for port in ports:
            transport, _ = await self._loop.create_datagram_endpoint(
                partial(_Protocol, partial(self._from_client, port)), local_addr=(self.listen, port)
            )
            self._listeners[port] = transport

    def _from_client(self, port: int, data: bytes, client: Address) -> None:
        up = self._upstream.get((port, client))
        if up is None:
            task = self._loop.create_task(self._connect(port, client, data))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
            return
        self._send_up(up, data)

    async def _connect(self, port: int, client: Address, first: bytes) -> None:
        key = (port, client)
        if key not in self._upstream:
            listener = self._listeners[port]

            def back(data: bytes, _addr: Address) -> None:
                self.stats.to_clients += 1
                listener.sendto(data, client)

            up, _ = await self._loop.create_datagram_endpoint(
                lambda: _Protocol(back), local_addr=(self.listen, 0), remote_addr=(self.server, port)
            )
            if key in self._upstream:  # another first datagram raced this one
                up.close()
            else:
                self._upstream[key] = up
                self.stats.clients += 1
        self._send_up(self._upstream[key], first)

    def _send_up(self, up: asyncio.DatagramTransport, data: bytes) -> None:
        self.stats.to_server += 1
        if self.burst <= 0 or not _held_type(data, self.types):
            up.sendto(data)
            return
        self.stats.held += 1
        if not self._pending:  # the first held since the last release: it goes at the slot's end
            now = self._loop.time() - self._t0
            release = math.ceil(now / self.burst + 1e-9) * self.burst
            self._loop.call_at(self._t0 + release, self._release)
        self._pending.append((up, data))

    def _release(self) -> None:
        pending, self._pending = self._pending, []
        for up, data in pending:
            up.sendto(data)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on = on_datagram

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._on(data, addr)


async def _serve(listen: str, server: str, ports: range, burst: float, types: frozenset[int]) -> RelayStats:
    relay = _Relay(listen, server, burst, types)
    await relay.open(ports)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(_READY, flush=True)
    await stop.wait()
    return relay.stats


@dataclass
class BurstRelay:
    """A relay (in a subprocess) in front of a :class:`~pyegress.testing.LiveKitServer` that holds
    the RTP packets of ``payload_types`` sent to the server and lets them go every ``burst`` s.

    Give it to ``LiveKitServer(relay=...)``, which starts it on its UDP range once it runs and
    stops it with itself; :attr:`stats` then says what it carried."""

    burst: float
    payload_types: frozenset[int] = AUDIO_PAYLOAD_TYPES
    stats: RelayStats | None = None
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """The address clients reach the server at: the one after the namespace's own."""
        ns = netns.current()
        if ns is None:
            raise RuntimeError("BurstRelay runs inside a pyegress network namespace only")
        ip = ns.address.ip + 1
        if ip not in ns.address.network:
            raise RuntimeError(f"no address after {ns.address} in its network")
        return str(ip)

    def start(self, server: str, ports: range) -> None:
        """Add :attr:`address` to the namespace and relay ``ports`` of it to ``server``'s."""
        address = self.address
        netns.add_peer_address(ipaddress.ip_address(address))
        self._proc = proc = subprocess.Popen(
            [sys.executable, "-m", "pyegress.testing.relay", "--listen", address, "--server", server,
             "--ports", f"{ports.start}-{ports.stop - 1}", "--burst", str(self.burst),
             "--payload-types", ",".join(map(str, sorted(self.payload_types)))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # the child prints it once bound, or exits
        if line != _READY:
            self.stop()  # reaps it: its exit code is known
            raise RuntimeError(f"the relay did not start (exit {proc.returncode})")

    def stop(self) -> RelayStats | None:
        """Stop the relay (if it runs) and keep what it carried in :attr:`stats`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.stats
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        with contextlib.suppress(ValueError, TypeError):
            self.stats = RelayStats(**json.loads(out.strip().splitlines()[-1]))
        return self.stats


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyegress.testing.relay --listen IP --server IP --ports A-B --burst S``"""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, help="address the clients send to")
    parser.add_argument("--server", required=True, help="address of the server's UDP range")
    parser.add_argument("--ports", required=True, help="the server's UDP range, FIRST-LAST")
    parser.add_argument("--burst", type=float, default=0.2, help="seconds between releases (0: none held)")
    held = ",".join(map(str, sorted(AUDIO_PAYLOAD_TYPES)))
    parser.add_argument("--payload-types", default=held, help="RTP payload types held (%(default)s)")
    args = parser.parse_args(argv)
    first, _, last = args.ports.partition("-")
    ports = range(int(first), int(last or first) + 1)
    types = frozenset(int(t) for t in args.payload_types.split(",") if t)
    stats = asyncio.run(_serve(args.listen, args.server, ports, args.burst, types))
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
