"""Recorders, one per request type; public for users who hold their own ``rtc.Room``."""

from .base import Progress, Recorder
from .participant import ParticipantRecorder
from .room_composite import RoomCompositeRecorder
from .track import TrackRecorder
from .track_composite import TrackCompositeRecorder
from .web import TemplateRecorder, WebRecorder

__all__ = [
    "ParticipantRecorder",
    "Progress",
    "Recorder",
    "RoomCompositeRecorder",
    "TemplateRecorder",
    "TrackCompositeRecorder",
    "TrackRecorder",
    "WebRecorder",
]
