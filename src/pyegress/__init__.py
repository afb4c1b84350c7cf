"""pyegress: record and live-stream LiveKit rooms from inside your own asyncio process."""

from livekit.protocol.egress import (
    DirectFileOutput,
    EgressInfo,
    EncodedFileOutput,
    EncodedFileType,
    EncodingOptions,
    EncodingOptionsPreset,
    ListEgressRequest,
    ListEgressResponse,
    ParticipantEgressRequest,
    RoomCompositeEgressRequest,
    StopEgressRequest,
    TrackCompositeEgressRequest,
    TrackEgressRequest,
    UpdateLayoutRequest,
    WebEgressRequest,
)

from .errors import (
    EgressError,
    EgressNotFoundError,
    InvalidRequestError,
    NotSupportedError,
    OutputError,
    SourceError,
)
from .limits import SessionLimits
from .recorders import (
    ParticipantRecorder,
    Recorder,
    RoomCompositeRecorder,
    TemplateRecorder,
    TrackCompositeRecorder,
    TrackRecorder,
    WebRecorder,
)
from .selection import Rule, Selection
from .service import EgressService

__version__ = "0.1.0"

__all__ = [
    "DirectFileOutput",
    "EgressError",
    "EgressInfo",
    "EgressNotFoundError",
    "EgressService",
    "EncodedFileOutput",
    "EncodedFileType",
    "EncodingOptions",
    "EncodingOptionsPreset",
    "InvalidRequestError",
    "ListEgressRequest",
    "ListEgressResponse",
    "NotSupportedError",
    "OutputError",
    "ParticipantEgressRequest",
    "ParticipantRecorder",
    "Recorder",
    "RoomCompositeEgressRequest",
    "RoomCompositeRecorder",
    "Rule",
    "Selection",
    "SessionLimits",
    "SourceError",
    "StopEgressRequest",
    "TemplateRecorder",
    "TrackCompositeEgressRequest",
    "TrackCompositeRecorder",
    "TrackEgressRequest",
    "TrackRecorder",
    "UpdateLayoutRequest",
    "WebEgressRequest",
    "WebRecorder",
]
