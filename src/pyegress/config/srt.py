"""SRT stream URLs: ``srt://host:port[?params]`` with LiveKit's (GStreamer ``srtsink``'s) params.

Checked when the request is read, so a bad value is refused naming the parameter before anything
joins a room; the sender (:mod:`pyegress.outputs.srt`) then sets each on its socket.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

#: The query parameters taken, and what each is.
PARAMS = {
    "mode": "caller (the only mode a sender to a listener needs)",
    "passphrase": "10 to 79 characters (AES encryption)",
    "pbkeylen": "0 (default), 16, 24 or 32 (AES key length in bytes)",
    "streamid": "up to 512 bytes",
    "latency": "milliseconds, 0 to 60000",
}


@dataclass(frozen=True)
class SrtParams:
    """What one ``srt://`` URL asks for (``passphrase``/``streamid`` kept out of the repr)."""

    host: str
    port: int
    passphrase: str = field(default="", repr=False)
    pbkeylen: int = 0
    streamid: str = field(default="", repr=False)
    latency: int | None = None  # ms; None: libsrt's default (120)


def parse_srt_url(url: str) -> SrtParams:
    """The params of ``url``; ``ValueError`` naming the parameter (never its value) when bad."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "srt" or not parts.hostname or parts.path.strip("/"):
        raise ValueError("SRT URLs look like srt://host:port[?params]")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ValueError("SRT URLs look like srt://host:port[?params] (the port is missing or invalid)")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    for name, values in query.items():
        if name not in PARAMS:
            raise ValueError(f"unknown parameter {name!r}: takes {', '.join(PARAMS)}")
        if len(values) > 1:
            raise ValueError(f"parameter {name!r} is given {len(values)} times")
    one = {k: v[0] for k, v in query.items()}

    def bad(name: str) -> ValueError:
        return ValueError(f"parameter {name!r} must be {PARAMS[name]}")

    if one.get("mode", "caller") != "caller":
        raise bad("mode")
    passphrase = one.get("passphrase", "")
    if passphrase and not 10 <= len(passphrase) <= 79:
        raise bad("passphrase")
    pbkeylen = one.get("pbkeylen", "0")
    if pbkeylen not in ("0", "16", "24", "32"):
        raise bad("pbkeylen")
    streamid = one.get("streamid", "")
    if len(streamid.encode()) > 512:
        raise bad("streamid")
    latency = one.get("latency")
    if latency is not None and not (latency.isdigit() and int(latency) <= 60000):
        raise bad("latency")
    return SrtParams(
        parts.hostname,
        port,
        passphrase=passphrase,
        pbkeylen=int(pbkeylen),
        streamid=streamid,
        latency=int(latency) if latency is not None else None,
    )
