"""The free-port helpers of the throw-away servers."""

from __future__ import annotations

import socket


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the caller binds it soon: another process may take it
    meanwhile, which the servers handle by retrying with new ports)."""
    return _free_port(socket.SOCK_STREAM, host)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free on ``host`` now (as :func:`free_tcp_port`)."""
    return _free_port(socket.SOCK_DGRAM, host)


def _free_port(kind: socket.SocketKind, host: str) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
