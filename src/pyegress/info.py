"""EgressInfo: building it, its status transitions, and its one owner per egress.

Every change of an egress's status or results goes through its :class:`InfoOwner`, which
stamps ``updated_at`` and tells listeners (callbacks, and ``async for`` iterators), so the
CLI's progress, webhooks and a LiveKit worker follow an egress without polling. What callers
and listeners get is redacted (:mod:`.redaction`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable, Iterator

from google.protobuf.message import Message
from livekit.protocol import egress as pe

from .config import Request, request_type
from .ending import EndReason, end_details
from .redaction import REDACTED as REDACTED
from .redaction import redact_message as redact

log = logging.getLogger("pyegress.info")

#: A listener of an egress's changes; it gets a snapshot (its own copy).
Listener = Callable[[pe.EgressInfo], None]

_ALPHABET = string.ascii_letters + string.digits

_TERMINAL = {pe.EGRESS_COMPLETE, pe.EGRESS_FAILED, pe.EGRESS_ABORTED, pe.EGRESS_LIMIT_REACHED}
_ACTIVE = {pe.EGRESS_STARTING, pe.EGRESS_ACTIVE, pe.EGRESS_ENDING}


def now_ns() -> int:
    """Unix time in nanoseconds, the unit of EgressInfo timestamps."""
    return time.time_ns()


def new_egress_id() -> str:
    """An id shaped like LiveKit's (``EG_`` + 12 base62 characters)."""
    return "EG_" + "".join(secrets.choice(_ALPHABET) for _ in range(12))


def new_info(req: Request, egress_id: str | None = None) -> pe.EgressInfo:
    """A STARTING EgressInfo carrying a redacted copy of the request."""
    info = pe.EgressInfo(
        egress_id=egress_id or new_egress_id(),
        room_name=req.room_name if hasattr(req, "room_name") else "",
        status=pe.EGRESS_STARTING,
        source_type=pe.EGRESS_SOURCE_TYPE_SDK,
        updated_at=now_ns(),
    )
    copy: Message = type(req)()
    copy.CopyFrom(req)
    redact(copy)
    entry = request_type(req)
    getattr(info, entry.slot).CopyFrom(copy)
    info.source_type = entry.source(req)  # type: ignore[assignment]
    return info


def is_terminal(status: int) -> bool:
    """COMPLETE, FAILED, ABORTED or LIMIT_REACHED."""
    return status in _TERMINAL


def is_active(status: int) -> bool:
    """STARTING, ACTIVE or ENDING."""
    return status in _ACTIVE


#: LiveKit's ``error_code`` of each unsuccessful end when the error names none: 500 internal,
#: 412 failed precondition (aborted), 413 (a session limit).
_END_CODES: dict[int, int] = {pe.EGRESS_FAILED: 500, pe.EGRESS_ABORTED: 412, pe.EGRESS_LIMIT_REACHED: 413}


def set_status(info: pe.EgressInfo, status: int, error: str = "", code: int = 0) -> None:
    """Move ``info`` to ``status``; terminal states are final and stamp ``ended_at``. A failed,
    aborted or limited end takes ``code`` (an ``EgressError.code``) as ``error_code``, else
    LiveKit's code of that end; a failure with no end reason yet says ``End reason: Failure``."""
    if is_terminal(info.status):
        return
    info.status = status  # type: ignore[assignment]
    info.updated_at = now_ns()
    if status == pe.EGRESS_ACTIVE and not info.started_at:
        info.started_at = info.updated_at
    if is_terminal(status):
        info.ended_at = info.updated_at
    if error:
        info.error = error
    if status in _END_CODES:
        info.error_code = code or _END_CODES[status]
    if status == pe.EGRESS_FAILED and not info.details:
        info.details = end_details(EndReason.FAILURE)


def snapshot(info: pe.EgressInfo) -> pe.EgressInfo:
    """A redacted copy for callers (and manifests), so later updates do not change what they hold."""
    out = pe.EgressInfo()
    out.CopyFrom(info)
    redact(out)
    return out


class InfoOwner:
    """The one place an egress's ``EgressInfo`` changes (event loop only), and its listeners.

    Change fields with :meth:`set_status` or inside ``with owner.edit() as info:``; either
    publishes a snapshot to every listener. :meth:`close` ends the ``updates`` iterators.
    """

    def __init__(self, info: pe.EgressInfo) -> None:
        self.info = info
        self._listeners: list[Listener] = []
        self._queues: list[asyncio.Queue[pe.EgressInfo | None]] = []
        self.closed = False

    def set_status(self, status: int, error: str = "", code: int = 0) -> None:
        """Move to ``status`` (terminal states are final) and publish."""
        set_status(self.info, status, error, code)
        self.publish()

    @contextlib.contextmanager
    def edit(self) -> Iterator[pe.EgressInfo]:
        """Change fields of the info in place; published when the block ends."""
        yield self.info
        self.info.updated_at = now_ns()
        self.publish()

    def publish(self) -> None:
        """Tell every listener the current state."""
        for listener in list(self._listeners):
            try:
                listener(snapshot(self.info))
            except Exception:  # a listener's failure is its own
                log.exception("egress %s: an info listener failed", self.info.egress_id)
        for q in self._queues:
            q.put_nowait(snapshot(self.info))

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each change; returns a function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def updates(self) -> AsyncIterator[pe.EgressInfo]:
        """The current info, then each change, until the egress is over (files and manifests
        written)."""
        q: asyncio.Queue[pe.EgressInfo | None] = asyncio.Queue()
        self._queues.append(q)
        if self.closed:
            q.put_nowait(None)
        try:
            yield snapshot(self.info)
            while True:
                item = await q.get()
                if item is None:
                    return
                yield item
        finally:
            self._queues.remove(q)

    def close(self) -> None:
        """The egress is over: publish the final state and end every ``updates`` iterator."""
        if not self.closed:
            self.publish()
            self.closed = True
            for q in self._queues:
                q.put_nowait(None)
