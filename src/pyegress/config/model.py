"""What a validated request becomes: the kinds, the output targets and ``EgressConfig``.

Data only; :mod:`.requests` builds it. Fields that hold credentials or stream keys are kept out
of ``repr``.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from livekit.protocol import egress as pe

from ..media.encoding import AudioEncoding, VideoEncoding
from ..redaction import redact_url as redact_stream_url
from ..redaction import redacted_repr
from ..storage.config import StorageMessage

Request: TypeAlias = (
    pe.ParticipantEgressRequest
    | pe.TrackCompositeEgressRequest
    | pe.TrackEgressRequest
    | pe.RoomCompositeEgressRequest
    | pe.WebEgressRequest
    | pe.StartEgressRequest
)


class Kind(enum.Enum):
    """The request type, which picks the recorder."""

    PARTICIPANT = "participant"
    TRACK_COMPOSITE = "track_composite"
    TRACK = "track"
    ROOM_COMPOSITE = "room_composite"
    WEB = "web"
    MEDIA = "media"  # the unified request's media source: one video, routed audio


class FileType(enum.Enum):
    """Containers a file output can be; ``AUTO`` means by the media (track egress)."""

    MP4 = "mp4"
    OGG = "ogg"
    WEBM = "webm"
    MP3 = "mp3"
    AUTO = "auto"

    @property
    def extension(self) -> str:
        return "" if self is FileType.AUTO else "." + self.value


class SegmentSuffix(enum.Enum):
    """How segment files are numbered: ``<prefix>_00000.ts`` or ``<prefix>_<YYYYMMDDHHMMSSmmm>.ts``."""

    INDEX = "index"
    TIMESTAMP = "timestamp"


class ImageSuffix(enum.Enum):
    """How image files are named: by index, by timestamp, or one file overwritten."""

    INDEX = "index"
    TIMESTAMP = "timestamp"
    NONE_OVERWRITE = "none_overwrite"


class Channel(enum.Enum):
    """Where a routed voice goes in the stereo mix (``pe.AudioChannel``)."""

    BOTH = None
    LEFT = 0
    RIGHT = 1


@dataclass(frozen=True)
class AudioRoute:
    """One ``AudioRoute`` of a media source: the audio it matches (exactly one of track id,
    participant identity, participant kind) and its channel."""

    field: str
    channel: Channel
    track_id: str = ""
    identity: str = ""
    participant_kind: str = ""  # ParticipantInfo.Kind by name (AGENT, SIP...): rtc numbers them differently


@dataclass(frozen=True)
class FileTarget:
    """One file output as requested: container, path template, manifest flag."""

    field: str  # where it came from in the request, e.g. "file_outputs[0]"
    file_type: FileType
    filepath: str
    disable_manifest: bool
    # its store (its own s3/gcp/azure, else the service default; None: local); holds credentials
    storage: StorageMessage | None = dataclasses.field(default=None, repr=False)


@dataclass(frozen=True)
class SegmentTarget:
    """One HLS output as requested (names are templates, expanded once the media is known)."""

    field: str
    filename_prefix: str
    playlist_name: str
    live_playlist_name: str
    segment_duration: int
    suffix: SegmentSuffix
    disable_manifest: bool
    storage: StorageMessage | None = dataclasses.field(default=None, repr=False)


@dataclass(frozen=True)
class StreamURL:
    """One RTMP(S) destination; ``url`` holds the stream key, so show ``redacted`` instead."""

    url: str = field(repr=False)
    id: str = ""

    @property
    def redacted(self) -> str:
        return redact_stream_url(self.url)


@dataclass(frozen=True)
class StreamTarget:
    """One stream output: the RTMP(S) URLs it multicasts to."""

    field: str
    urls: tuple[StreamURL, ...]


@dataclass(frozen=True)
class ImageTarget:
    """One image (thumbnail) output as requested."""

    field: str
    capture_interval: int
    width: int
    height: int
    filename_prefix: str
    suffix: ImageSuffix
    disable_manifest: bool
    storage: StorageMessage | None = dataclasses.field(default=None, repr=False)


@redacted_repr  # websocket_url and web_url may carry tokens
@dataclass
class EgressConfig:
    """Everything a recorder needs, validated; recorders never read the request itself.

    ``request`` is kept only for the redacted copy ``EgressInfo`` carries. ``output_dir`` is
    where relative paths go; ``jail`` keeps absolute ones inside it too (when the user chose it).
    """

    kind: Kind
    room_name: str
    request: Request = field(repr=False)  # holds credentials and stream keys
    identity: str = ""
    screen_share: bool = False
    audio_track_id: str = ""
    video_track_id: str = ""
    track_id: str = ""
    video: VideoEncoding | None = None
    audio: AudioEncoding | None = None
    files: list[FileTarget] = field(default_factory=list)
    output_dir: Path = field(default_factory=Path.cwd)
    jail: bool = True
    segments: list[SegmentTarget] = field(default_factory=list)
    streams: list[StreamTarget] = field(default_factory=list)
    images: list[ImageTarget] = field(default_factory=list)
    websocket_url: str = ""  # may carry a token: repr shows it redacted
    websocket_field: str = "websocket_url"  # the request field it came from (unified: outputs[i].stream)
    layout: str = ""  # room composite: the layout name as requested
    audio_mixing: int = 0  # room composite: pe.AudioMixing
    web_url: str = ""  # web: the page; room composite: the template (repr shows it redacted)
    await_start_signal: bool = False  # web: wait for the page's START_RECORDING
    audio_routes: list[AudioRoute] = field(default_factory=list)  # media: the routed voices
    capture_all_audio: bool = False  # media: every other audio track too, in both channels
    backup_storage: StorageMessage | None = field(default=None, repr=False)  # where failed uploads go
    passthrough: bool = False  # PASSTHROUGH: the senders' frames are written as sent (config.passthrough)

    @property
    def template(self) -> bool:
        """A room composite rendered by a web template (``custom_base_url``)."""
        return self.kind is Kind.ROOM_COMPOSITE and bool(self.web_url)
