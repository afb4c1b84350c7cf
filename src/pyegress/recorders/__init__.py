"""Recorders, one per request type; public for users who hold their own ``rtc.Room``."""

import importlib.util

from livekit.protocol import egress as pe

from ..config import EgressConfig, Kind
from ..errors import NotSupportedError
from .base import Options, Progress, Recorder
from .media import MediaRecorder
from .participant import ParticipantRecorder
from .room import RoomRecorder
from .room_composite import RoomCompositeRecorder
from .track import TrackRecorder
from .track_composite import TrackCompositeRecorder
from .web import TemplateRecorder, WebRecorder

#: The recorder of each request type (a room composite with a template: TemplateRecorder).
RECORDERS: dict[Kind, type[Recorder]] = {
    Kind.PARTICIPANT: ParticipantRecorder,
    Kind.TRACK_COMPOSITE: TrackCompositeRecorder,
    Kind.TRACK: TrackRecorder,
    Kind.ROOM_COMPOSITE: RoomCompositeRecorder,
    Kind.WEB: WebRecorder,
    Kind.MEDIA: MediaRecorder,
}


def recorder_for(config: EgressConfig, options: Options) -> Recorder:
    """The recorder of a validated config."""
    cls = TemplateRecorder if config.template else RECORDERS[config.kind]
    if config.passthrough:
        cls = _passthrough_mux(options)
    elif passthrough(config, options):
        from .track_passthrough import PassthroughTrackRecorder  # aiortc: only when used

        cls = PassthroughTrackRecorder
    elif encoded_pcm(config, options):
        from .track_pcm import PcmTrackRecorder

        cls = PcmTrackRecorder
    elif asks_passthrough(config):  # never re-encoded behind the request's back
        why = "Python 3.11+ with aiortc" if not ENCODED_PATH else "a room pyegress joins (not room=)"
        raise NotSupportedError(f"preset: PASSTHROUGH needs the encoded receive path: {why}")
    return cls.from_config(config, options)


def _passthrough_mux(options: Options) -> type[Recorder]:
    """The recorder of a participant or track composite egress with the PASSTHROUGH preset."""
    if options.room is not None:
        raise NotSupportedError("preset: PASSTHROUGH joins the room itself; an application's rtc.Room "
                                "hands over decoded frames only")  # fmt: skip
    if not ENCODED_PATH:
        raise NotSupportedError("preset: PASSTHROUGH needs aiortc (Python 3.11 or later)")
    from .passthrough_mux import PassthroughMuxRecorder  # aiortc: only when used

    return PassthroughMuxRecorder


#: The encoded receive path needs aiortc, whose 1.16 (the version ``compat.aiortc`` is pinned
#: to) needs Python 3.11: on 3.10 a track egress is re-encoded through the SDK, as before.
ENCODED_PATH = importlib.util.find_spec("aiortc") is not None


def passthrough(config: EgressConfig, options: Options) -> bool:
    """Whether the track is written as sent: a track egress to a file, joined by pyegress
    (an application's own ``rtc.Room`` hands over decoded frames only)."""
    return (
        ENCODED_PATH
        and config.kind == Kind.TRACK
        and bool(config.files)
        and not config.websocket_url
        and options.room is None
    )


def encoded_pcm(config: EgressConfig, options: Options) -> bool:
    """Whether a track egress to a WebSocket takes the encoded path and decodes Opus only (its
    PCM without the SDK's audio stream)."""
    return ENCODED_PATH and config.kind == Kind.TRACK and bool(config.websocket_url) and options.room is None


def asks_passthrough(config: EgressConfig) -> bool:
    """The unified request's ``preset: PASSTHROUGH`` (:mod:`pyegress.config.unified` made it a
    track egress): it must be written as sent."""
    req = config.request
    return (
        isinstance(req, pe.StartEgressRequest)
        and req.WhichOneof("encoding") == "preset"
        and req.preset == pe.PASSTHROUGH
    )


__all__ = [
    "RECORDERS",
    "MediaRecorder",
    "Options",
    "ParticipantRecorder",
    "Progress",
    "Recorder",
    "RoomCompositeRecorder",
    "RoomRecorder",
    "TemplateRecorder",
    "TrackCompositeRecorder",
    "TrackRecorder",
    "WebRecorder",
    "recorder_for",
]
