"""The ``PASSTHROUGH`` preset of participant and track composite requests: the camera and
microphone are written as their senders encoded them (H.264 + Opus → MP4, VP8 + Opus → WebM,
Opus alone → Ogg), so nothing is encoded and the only outputs are files."""

from __future__ import annotations

from dataclasses import replace

from livekit.protocol import egress as pe

from ..errors import InvalidRequestError
from ..media.encoding import AudioEncoding, VideoEncoding
from .model import EgressConfig, FileType, Kind
from .outputs import Place


def asks_passthrough(req: pe.ParticipantEgressRequest | pe.TrackCompositeEgressRequest) -> bool:
    """Whether the request's preset is ``PASSTHROUGH``."""
    return req.WhichOneof("options") == "preset" and req.preset == pe.PASSTHROUGH


def unified_mux(req: pe.StartEgressRequest, room: str, place: Place) -> EgressConfig | None:
    """A unified request's media source as a participant (``participant_video``, its audio
    routed by that identity or not at all) or a track composite (``video_track_id`` and one
    audio route by ``track_id``), written as sent; None for any other source."""
    m = req.media
    routes = list(m.audio.routes) if m.HasField("audio") else []
    if req.WhichOneof("source") != "media" or m.audio.capture_all:
        return None
    if any(r.channel != pe.AUDIO_CHANNEL_BOTH for r in routes):
        return None  # a channel of its own needs a mix
    cfg = EgressConfig(Kind.PARTICIPANT, room, req, output_dir=place.root, jail=place.jail)
    which = m.WhichOneof("video")
    if which == "participant_video" and m.participant_video.identity.strip():
        cfg.identity = m.participant_video.identity.strip()
        cfg.screen_share = m.participant_video.prefer_screen_share
        by_identity = [r for r in routes if r.WhichOneof("match") == "participant_identity"]
        theirs = [r.participant_identity.strip() for r in by_identity]
        if len(theirs) != len(routes) or set(theirs) - {cfg.identity}:
            return None
    elif which == "video_track_id" and m.video_track_id.strip() and len(routes) == 1:
        if routes[0].WhichOneof("match") != "track_id" or not routes[0].track_id.strip():
            return None
        cfg.kind = Kind.TRACK_COMPOSITE
        cfg.video_track_id, cfg.audio_track_id = m.video_track_id.strip(), routes[0].track_id.strip()
    else:
        return None
    cfg.passthrough = True
    cfg.video, cfg.audio = as_sent()
    return cfg


def as_sent() -> tuple[VideoEncoding, AudioEncoding]:
    """The encodings of a passthrough egress: placeholders, as the senders' codecs decide."""
    return VideoEncoding(), AudioEncoding(codec="opus", sample_rate=48000, channels=2)


def check_passthrough(cfg: EgressConfig) -> None:
    """Files only, their container picked by the senders' codecs (``file_type`` MP4 or the
    default: MP4 for H.264, WebM for VP8; OGG: audio alone)."""
    others = [o.field for o in cfg.segments] + [o.field for o in cfg.streams] + [o.field for o in cfg.images]
    if others:
        raise InvalidRequestError(others[0], "a PASSTHROUGH egress writes files only (nothing is encoded)")
    files = []
    for f in cfg.files:
        if f.file_type is FileType.MP3 or (f.file_type is FileType.OGG and cfg.video is not None):
            raise InvalidRequestError(
                f"{f.field}.file_type",
                f"PASSTHROUGH writes the senders' codecs: {f.file_type.name} cannot hold them "
                "(MP4: H.264 into MP4, VP8 into WebM)",
            )
        files.append(replace(f, file_type=FileType.AUTO))
    cfg.files = files
