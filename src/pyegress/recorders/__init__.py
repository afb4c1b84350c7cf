"""Recorders, one per request type; public for users who hold their own ``rtc.Room``."""

import dataclasses
import importlib.util

from livekit.protocol import egress as pe

from ..config import EgressConfig, Kind
from ..errors import InvalidRequestError, NotSupportedError
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
    elif decodes_encoded(config, options):
        if config.kind == Kind.ROOM_COMPOSITE:  # the same recorder, fed by the encoded room source
            return cls.from_config(config, dataclasses.replace(options, receive_path="encoded"))
        from .decoded import DecodedRecorder  # aiortc: only when used

        cls = DecodedRecorder
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


#: ``receive_path`` values: ``auto`` (the default) takes the encoded path wherever it can, the
#: rtc SDK's decoded frames elsewhere; ``sdk`` and ``encoded`` ask for one (:mod:`.decoded`).
RECEIVE_PATHS = ("auto", "sdk", "encoded")


def check_receive_path(value: str) -> str:
    """``receive_path``, or ``InvalidRequestError`` naming it."""
    if value not in RECEIVE_PATHS:
        raise InvalidRequestError("receive_path", f"must be one of {', '.join(RECEIVE_PATHS)}, not {value!r}")
    return value


#: The requests recorded from the encoded receive path, decoded, wherever it can run.
ENCODED_KINDS = (Kind.PARTICIPANT, Kind.TRACK_COMPOSITE, Kind.ROOM_COMPOSITE)


def decodes_encoded(config: EgressConfig, options: Options) -> bool:
    """Whether a participant, track composite or room composite egress (not a template: Chromium
    joins that room) takes the encoded receive path: by default wherever it can (it costs 22 %
    less CPU to receive than the SDK's path and keeps the senders' clocks:
    ``docs/performance.md``, ``docs/motion.md``). Asked for explicitly where it
    cannot be taken: ``NotSupportedError`` naming what stands in its way."""
    if options.receive_path == "sdk" or config.kind not in ENCODED_KINDS or config.template:
        return False
    why = ""
    if not ENCODED_PATH:
        why = "the encoded receive path needs aiortc (Python 3.11 or later)"
    elif options.room is not None:
        why = ("the encoded receive path joins the room itself; an application's rtc.Room hands "
               "over decoded frames only")  # fmt: skip
    elif options.sidecars - {"events"}:
        why = (
            "transcript and chat sidecars read an rtc.Room's text streams; the encoded receive path has none"
        )
    if why and options.receive_path == "encoded":
        raise NotSupportedError(f"receive_path: {why}")
    return not why


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
    "RECEIVE_PATHS",
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
    "check_receive_path",
    "recorder_for",
]
