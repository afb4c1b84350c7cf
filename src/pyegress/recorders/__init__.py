"""Recorders, one per request type; public for users who hold their own ``rtc.Room``."""

from ..config import EgressConfig, Kind
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
    return cls.from_config(config, options)


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
