"""The ``PASSTHROUGH`` preset of participant and track composite requests: the camera and
microphone are written as their senders encoded them (H.264 + Opus → MP4, VP8 + Opus → WebM,
Opus alone → Ogg), so nothing is encoded and the only outputs are files."""

from __future__ import annotations

from dataclasses import replace

from livekit.protocol import egress as pe

from ..errors import InvalidRequestError
from ..media.encoding import AudioEncoding, VideoEncoding
from .model import EgressConfig, FileType


def asks_passthrough(req: pe.ParticipantEgressRequest | pe.TrackCompositeEgressRequest) -> bool:
    """Whether the request's preset is ``PASSTHROUGH``."""
    return req.WhichOneof("options") == "preset" and req.preset == pe.PASSTHROUGH


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
