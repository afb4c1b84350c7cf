"""One builder per request type: what that type asks for, validated into an ``EgressConfig``.

Outputs, containers, audio codecs and paths are checked by :func:`pyegress.config.build_config`
for every type alike; a builder only reads its own fields.
"""

from __future__ import annotations

from livekit.protocol import egress as pe

from ..errors import InvalidRequestError
from ..media.encoding import AudioEncoding, VideoEncoding, from_request
from ..media.layout import parse_layout
from .model import EgressConfig, Kind
from .outputs import Place, check_page_url, check_websocket_url, file_target, file_targets, legacy_output
from .passthrough import as_sent, asks_passthrough


def _require(value: str, name: str) -> str:
    if not value.strip():
        raise InvalidRequestError(name, "is required")
    return value.strip()


def _encodings(
    req: pe.ParticipantEgressRequest
    | pe.TrackCompositeEgressRequest
    | pe.RoomCompositeEgressRequest
    | pe.WebEgressRequest,
) -> tuple[VideoEncoding, AudioEncoding]:
    which = req.WhichOneof("options")
    return from_request(
        req.preset, req.advanced, has_preset=which == "preset", has_advanced=which == "advanced"
    )


def _base(kind: Kind, room: str, req: object, place: Place) -> EgressConfig:
    return EgressConfig(kind, room, req, output_dir=place.root, jail=place.jail)  # type: ignore[arg-type]


def participant(req: pe.ParticipantEgressRequest, place: Place) -> EgressConfig:
    cfg = _base(Kind.PARTICIPANT, _require(req.room_name, "room_name"), req, place)
    cfg.identity = _require(req.identity, "identity")
    cfg.screen_share = req.screen_share
    cfg.passthrough = asks_passthrough(req)
    cfg.video, cfg.audio = as_sent() if cfg.passthrough else _encodings(req)
    cfg.files = file_targets(req, place)
    return cfg


def track_composite(req: pe.TrackCompositeEgressRequest, place: Place) -> EgressConfig:
    cfg = _base(Kind.TRACK_COMPOSITE, _require(req.room_name, "room_name"), req, place)
    if not req.audio_track_id and not req.video_track_id:
        raise InvalidRequestError("audio_track_id", "audio_track_id or video_track_id is required")
    cfg.passthrough = asks_passthrough(req)
    video, audio = as_sent() if cfg.passthrough else _encodings(req)
    cfg.audio_track_id, cfg.video_track_id = req.audio_track_id.strip(), req.video_track_id.strip()
    cfg.video = video if cfg.video_track_id else None
    cfg.audio = audio if cfg.audio_track_id else None
    cfg.files = file_targets(req, place)
    return cfg


def track(req: pe.TrackEgressRequest, place: Place) -> EgressConfig:
    cfg = _base(Kind.TRACK, _require(req.room_name, "room_name"), req, place)
    cfg.track_id = _require(req.track_id, "track_id")
    which = legacy_output(req)
    if which == "websocket_url":
        cfg.websocket_url = check_websocket_url(req.websocket_url)
    elif which == "file":
        cfg.files = [file_target(req.file, "file", place)]
    else:
        raise InvalidRequestError("file", "the request has no output")
    return cfg


def room_composite(req: pe.RoomCompositeEgressRequest, place: Place) -> EgressConfig:
    cfg = _base(Kind.ROOM_COMPOSITE, _require(req.room_name, "room_name"), req, place)
    if req.custom_base_url.strip():
        cfg.web_url = check_page_url(req.custom_base_url, "custom_base_url")
    if req.audio_only and req.video_only:
        raise InvalidRequestError("video_only", "audio_only and video_only cannot both be set")
    if req.audio_mixing not in pe.AudioMixing.values():
        raise InvalidRequestError("audio_mixing", f"unknown audio mixing {req.audio_mixing}")
    if not cfg.web_url:
        parse_layout(req.layout)  # a template has layouts of its own
    video, audio = _encodings(req)
    cfg.video = None if req.audio_only else video
    cfg.audio = None if req.video_only else audio
    cfg.files = file_targets(req, place)
    cfg.layout, cfg.audio_mixing = req.layout, req.audio_mixing
    return cfg


def web(req: pe.WebEgressRequest, place: Place) -> EgressConfig:
    cfg = _base(Kind.WEB, "", req, place)
    cfg.web_url = check_page_url(req.url, "url")
    cfg.await_start_signal = req.await_start_signal
    if req.audio_only and req.video_only:
        raise InvalidRequestError("video_only", "audio_only and video_only cannot both be set")
    video, audio = _encodings(req)
    cfg.video = None if req.audio_only else video
    cfg.audio = None if req.video_only else audio
    cfg.files = file_targets(req, place)
    return cfg
