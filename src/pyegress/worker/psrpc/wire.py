"""psrpc's wire format: channel names, the ``internal.Msg`` envelope, the error type."""

from __future__ import annotations

import logging
import time
from typing import Any

from google.protobuf.message import DecodeError, Message

from .. import proto

log = logging.getLogger("pyegress.worker.psrpc")

TYPE_PREFIX = "type.googleapis.com/"


class RpcError(Exception):
    """A psrpc error: ``code`` is psrpc's lowercase code (``invalid_argument``, ``unavailable``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _escape(part: str) -> str:
    out: list[str] = []
    for ch in part:
        cp = ord(ch)
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"u+{cp:04x}")
        else:
            out.append(f"U+{cp:08x}")
    return "".join(out)


def channel(*parts: str) -> str:
    """psrpc's Redis channel name: parts joined by ``|``, empty ones dropped, characters outside
    ``[0-9A-Za-z_]`` written ``u+%04x`` (``U+%08x`` above U+FFFF)."""
    return "|".join(e for e in map(_escape, parts) if e)


def now_ns() -> int:
    return time.time_ns()


def wrap(msg: Message) -> bytes:
    """``msg`` inside psrpc's ``internal.Msg`` (``channel`` empty, as on Redis)."""
    return proto.Msg(
        type_url=TYPE_PREFIX + msg.DESCRIPTOR.full_name, value=msg.SerializeToString()
    ).SerializeToString()


def unwrap(payload: bytes, cls: type[Message]) -> Any | None:
    """The envelope of type ``cls`` in ``payload``; None (logged) for anything else."""
    try:
        outer: Any = proto.Msg.FromString(payload)
        if outer.type_url != TYPE_PREFIX + cls.DESCRIPTOR.full_name:
            log.debug(
                "psrpc: ignoring a %s where a %s was expected", outer.type_url, cls.DESCRIPTOR.full_name
            )
            return None
        return cls.FromString(outer.value)
    except DecodeError:
        log.warning("psrpc: undecodable message ignored")
        return None
