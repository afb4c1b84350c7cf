"""EgressInfo building and status transitions; what callers get is redacted (:mod:`.redaction`)."""

from __future__ import annotations

import secrets
import string
import time

from google.protobuf.message import Message
from livekit.protocol import egress as pe

from .config import Request
from .redaction import REDACTED as REDACTED
from .redaction import redact_message as redact

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
    slot = {
        pe.ParticipantEgressRequest: "participant",
        pe.TrackCompositeEgressRequest: "track_composite",
        pe.TrackEgressRequest: "track",
        pe.RoomCompositeEgressRequest: "room_composite",
        pe.WebEgressRequest: "web",
    }[type(req)]
    getattr(info, slot).CopyFrom(copy)
    if slot == "web":
        info.source_type = pe.EGRESS_SOURCE_TYPE_WEB
    return info


def is_terminal(status: int) -> bool:
    """COMPLETE, FAILED, ABORTED or LIMIT_REACHED."""
    return status in _TERMINAL


def is_active(status: int) -> bool:
    """STARTING, ACTIVE or ENDING."""
    return status in _ACTIVE


def set_status(info: pe.EgressInfo, status: int, error: str = "") -> None:
    """Move ``info`` to ``status``; terminal states are final and stamp ``ended_at``."""
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
        info.error_code = 500 if status == pe.EGRESS_FAILED else info.error_code


def snapshot(info: pe.EgressInfo) -> pe.EgressInfo:
    """A redacted copy for callers (and manifests), so later updates do not change what they hold."""
    out = pe.EgressInfo()
    out.CopyFrom(info)
    redact(out)
    return out
