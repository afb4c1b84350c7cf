"""The one table of request types, and ``build_config``.

The service's start methods, the CLI's ``--type`` names and the ``EgressInfo`` request slot all
come from :data:`REQUEST_TYPES`; a new request type is one entry here plus its recorder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from livekit.protocol import egress as pe

from ..errors import InvalidRequestError
from ..storage.config import default_storage
from . import kinds, unified
from .model import EgressConfig, Kind, Request
from .outputs import Place, add_other_outputs, check_containers, settle_audio
from .passthrough import check_passthrough
from .paths import check_paths


@dataclass(frozen=True)
class RequestType:
    """One request type: its message, names and how it is validated."""

    kind: Kind
    message: type[Message]
    slot: str  # the request's field in EgressInfo (and its name in LiveKit's protocol)
    cli: str  # ``pyegress record --type`` (as ``lk egress start --type``)
    method: str  # the EgressService start method
    source_type: int  # EgressInfo.source_type
    build: Callable[[Any, Place], EgressConfig]
    source_of: Callable[[Any], int] | None = None  # when the source type depends on the request

    def source(self, req: Message) -> int:
        """``EgressInfo.source_type`` of ``req``."""
        return self.source_of(req) if self.source_of is not None else self.source_type


REQUEST_TYPES: tuple[RequestType, ...] = (
    RequestType(
        Kind.PARTICIPANT,
        pe.ParticipantEgressRequest,
        "participant",
        "participant",
        "start_participant_egress",
        pe.EGRESS_SOURCE_TYPE_SDK,
        kinds.participant,
    ),
    RequestType(
        Kind.TRACK_COMPOSITE,
        pe.TrackCompositeEgressRequest,
        "track_composite",
        "track-composite",
        "start_track_composite_egress",
        pe.EGRESS_SOURCE_TYPE_SDK,
        kinds.track_composite,
    ),
    RequestType(
        Kind.TRACK,
        pe.TrackEgressRequest,
        "track",
        "track",
        "start_track_egress",
        pe.EGRESS_SOURCE_TYPE_SDK,
        kinds.track,
    ),
    RequestType(
        Kind.ROOM_COMPOSITE,
        pe.RoomCompositeEgressRequest,
        "room_composite",
        "room-composite",
        "start_room_composite_egress",
        pe.EGRESS_SOURCE_TYPE_SDK,
        kinds.room_composite,
    ),
    RequestType(
        Kind.WEB,
        pe.WebEgressRequest,
        "web",
        "web",
        "start_web_egress",
        pe.EGRESS_SOURCE_TYPE_WEB,
        kinds.web,
    ),
    RequestType(  # LiveKit's unified request: its source picks one of the recorders above, or media
        Kind.MEDIA,
        pe.StartEgressRequest,
        "egress",
        "egress",
        "start_egress",
        pe.EGRESS_SOURCE_TYPE_SDK,
        unified.egress,
        unified.source_type,
    ),
)


def request_type(req: object) -> RequestType:
    """The table entry of a request message (``InvalidRequestError`` for anything else)."""
    for entry in REQUEST_TYPES:
        if type(req) is entry.message:
            return entry
    raise InvalidRequestError("request", f"unsupported request type {type(req).__name__}")


def build_config(
    req: Request,
    *,
    output_dir: Path | None = None,
    default: pe.StorageConfig | None = None,
    backup: pe.StorageConfig | None = None,
) -> EgressConfig:
    """Validate ``req`` and normalise it; raises ``InvalidRequestError`` naming the field.

    ``output_dir`` given: every path stays inside it. None: relative paths go under the working
    folder and absolute ones where they say. ``default`` is the store of outputs that name none;
    ``backup`` the store their uploads go to when their own store fails.
    """
    place = Place(
        (output_dir or Path.cwd()).resolve(),
        jail=output_dir is not None,
        default_storage=default_storage(default),
    )
    cfg = add_other_outputs(request_type(req).build(req, place), req, place)
    if cfg.passthrough:
        check_passthrough(cfg)
    check_containers(cfg)
    settle_audio(cfg)
    check_paths(cfg)
    cfg.backup_storage = default_storage(backup, "backup")
    return cfg
