"""Request → one validated, normalised config. Every error a user can cause is found here."""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

from livekit.protocol import egress as pe

from .errors import InvalidRequestError, NotSupportedError
from .filenames import TEMPLATE_KEYS, check_template, resolve_path
from .media.encoding import AudioEncoding, VideoEncoding, from_request
from .media.layout import parse_layout
from .redaction import redact_url as redact_stream_url
from .redaction import redacted_repr
from .storage.config import StorageMessage, output_storage

Request: TypeAlias = (
    pe.ParticipantEgressRequest
    | pe.TrackCompositeEgressRequest
    | pe.TrackEgressRequest
    | pe.RoomCompositeEgressRequest
    | pe.WebEgressRequest
)


class Kind(enum.Enum):
    """The request type, which picks the recorder."""

    PARTICIPANT = "participant"
    TRACK_COMPOSITE = "track_composite"
    TRACK = "track"
    ROOM_COMPOSITE = "room_composite"
    WEB = "web"


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


_FILE_TYPES = {
    pe.DEFAULT_FILETYPE: FileType.MP4,
    pe.MP4: FileType.MP4,
    pe.OGG: FileType.OGG,
    pe.MP3: FileType.MP3,
}


@dataclass(frozen=True)
class FileTarget:
    """One file output as requested: container, path template, manifest flag."""

    field: str  # where it came from in the request, e.g. "file_outputs[0]"
    file_type: FileType
    filepath: str
    disable_manifest: bool
    # its own s3/gcp/azure (None: the service default, or local); holds credentials, so no repr
    storage: StorageMessage | None = dataclasses.field(default=None, repr=False)


#: LiveKit egress's default HLS segment length (seconds) and image capture interval.
DEFAULT_SEGMENT_DURATION = 4
DEFAULT_CAPTURE_INTERVAL = 10


class SegmentSuffix(enum.Enum):
    """How segment files are numbered: ``<prefix>_00000.ts`` or ``<prefix>_<YYYYMMDDHHMMSSmmm>.ts``."""

    INDEX = "index"
    TIMESTAMP = "timestamp"


class ImageSuffix(enum.Enum):
    """How image files are named: by index, by timestamp, or one file overwritten."""

    INDEX = "index"
    TIMESTAMP = "timestamp"
    NONE_OVERWRITE = "none_overwrite"


@dataclass(frozen=True)
class SegmentTarget:
    """One HLS output as requested (names are templates, expanded by the recorder)."""

    field: str
    filename_prefix: str
    playlist_name: str
    live_playlist_name: str
    segment_duration: int
    suffix: SegmentSuffix
    disable_manifest: bool
    # its own s3/gcp/azure (None: the service default, or local); holds credentials, so no repr
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
    # its own s3/gcp/azure (None: the service default, or local); holds credentials, so no repr
    storage: StorageMessage | None = dataclasses.field(default=None, repr=False)


_STREAM_PATH = re.compile(r"^(?P<base>rtmps?://[^/\s]+(?:/[^/\s]+)*/)(?P<key>[^/\s]+)$")


def check_stream_url(url: str, where: str) -> str:
    """Validate one RTMP(S) URL (``rtmp(s)://host[:port][/path]/app/stream_key``); returns it cleaned.

    ``mux://<key>`` is expanded to Mux's RTMPS ingest, as LiveKit does.
    """
    raw = url.strip().removesuffix(" live=1").strip()
    parsed = urllib.parse.urlsplit(raw)
    scheme = parsed.scheme.lower()
    if scheme == "mux" and parsed.netloc:
        return f"rtmps://global-live.mux.com:443/app/{parsed.netloc}"
    if scheme in ("srt", "twitch"):
        raise NotSupportedError(f"{where}: {scheme}:// URLs are not supported yet; use rtmp:// or rtmps://")
    if scheme not in ("rtmp", "rtmps"):
        raise InvalidRequestError(where, f"scheme {scheme or '(none)'!r}: must be rtmp:// or rtmps://")
    parts = [p for p in parsed.path.split("/") if p]
    if not parsed.hostname or len(parts) < 2 or not _STREAM_PATH.match(raw):
        raise InvalidRequestError(
            where,
            f"{redact_stream_url(raw)!r}: RTMP URLs must look like rtmp(s)://host[:port][/path]/app/stream_key",
        )
    return raw


def _check_websocket_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme.lower() not in ("ws", "wss") or not parsed.hostname:
        raise InvalidRequestError("websocket_url", "must be a ws:// or wss:// URL")
    return url.strip()


@redacted_repr  # websocket_url and web_url may carry tokens
@dataclass
class EgressConfig:
    """Everything a recorder needs, validated."""

    kind: Kind
    room_name: str
    request: Request = dataclasses.field(repr=False)  # holds credentials and stream keys
    identity: str = ""
    screen_share: bool = False
    audio_track_id: str = ""
    video_track_id: str = ""
    track_id: str = ""
    video: VideoEncoding | None = None
    audio: AudioEncoding | None = None
    files: list[FileTarget] = field(default_factory=list)
    output_dir: Path = field(default_factory=Path.cwd)
    segments: list[SegmentTarget] = field(default_factory=list)
    streams: list[StreamTarget] = field(default_factory=list)
    images: list[ImageTarget] = field(default_factory=list)
    websocket_url: str = ""
    layout: str = ""  # room composite: the layout name as requested
    audio_mixing: int = 0  # room composite: pe.AudioMixing
    web_url: str = ""  # room composite: the template (custom_base_url)


def _file_target(out: pe.EncodedFileOutput, where: str) -> FileTarget:
    if out.file_type not in _FILE_TYPES:
        raise InvalidRequestError(f"{where}.file_type", f"unsupported file type {out.file_type}")
    storage = output_storage(out, where)
    check_template(out.filepath, f"{where}.filepath")
    return FileTarget(where, _FILE_TYPES[out.file_type], out.filepath, out.disable_manifest, storage)


def _encoded_outputs(
    req: pe.ParticipantEgressRequest
    | pe.TrackCompositeEgressRequest
    | pe.RoomCompositeEgressRequest
    | pe.WebEgressRequest,
) -> list[FileTarget]:
    """The file outputs of a request (``file_outputs`` and the legacy ``file``); other outputs
    are read by :func:`_with_outputs`. Refuses a request that has no output at all."""
    files = [_file_target(o, f"file_outputs[{i}]") for i, o in enumerate(req.file_outputs)]
    if _legacy_output(req) == "file":
        files.insert(0, _file_target(req.file, "file"))  # type: ignore[union-attr]
    others = any(len(getattr(req, n)) for n in ("stream_outputs", "segment_outputs", "image_outputs"))
    if not files and not others and _legacy_output(req) not in ("stream", "segments"):
        raise InvalidRequestError("file_outputs", "the request has no output")
    return files


def _legacy_output(req: Request) -> str | None:
    """Which of the deprecated single ``file`` / ``stream`` / ``segments`` fields is set."""
    try:
        which: str | None = req.WhichOneof("output")  # type: ignore[arg-type]
    except ValueError:  # the request type has no such oneof
        return None
    return which


def _segment_target(out: pe.SegmentedFileOutput, where: str) -> SegmentTarget:
    if out.protocol not in (pe.DEFAULT_SEGMENTED_FILE_PROTOCOL, pe.HLS_PROTOCOL):
        raise InvalidRequestError(f"{where}.protocol", f"unsupported segment protocol {out.protocol}")
    storage = output_storage(out, where)
    for name in ("filename_prefix", "playlist_name", "live_playlist_name"):
        check_template(getattr(out, name), f"{where}.{name}")
    if out.segment_duration > 3600:
        raise InvalidRequestError(f"{where}.segment_duration", f"{out.segment_duration} s is too long")
    live = out.live_playlist_name.strip()
    if live and live.removesuffix(".m3u8") == out.playlist_name.strip().removesuffix(".m3u8"):
        raise InvalidRequestError(f"{where}.live_playlist_name", "must differ from playlist_name")
    suffix = SegmentSuffix.TIMESTAMP if out.filename_suffix == pe.TIMESTAMP else SegmentSuffix.INDEX
    return SegmentTarget(
        where,
        out.filename_prefix.strip(),
        out.playlist_name.strip(),
        live,
        out.segment_duration or DEFAULT_SEGMENT_DURATION,
        suffix,
        out.disable_manifest,
        storage,
    )


def _stream_target(out: pe.StreamOutput, where: str) -> StreamTarget:
    if out.protocol not in (pe.DEFAULT_PROTOCOL, pe.RTMP):
        known = out.protocol in pe.StreamProtocol.values()
        name = pe.StreamProtocol.Name(out.protocol) if known else str(out.protocol)
        raise NotSupportedError(f"{where}.protocol: {name} streams are not supported yet; use RTMP")
    urls = [StreamURL(check_stream_url(u, f"{where}.urls[{i}]")) for i, u in enumerate(out.urls)]
    urls += [
        StreamURL(check_stream_url(d.url, f"{where}.destinations[{i}].url"), d.id)
        for i, d in enumerate(out.destinations)
    ]
    if not urls:
        raise InvalidRequestError(f"{where}.urls", "at least one URL is required")
    if len({u.url for u in urls}) != len(urls):
        raise InvalidRequestError(f"{where}.urls", "the same URL is listed twice")
    return StreamTarget(where, tuple(urls))


_IMAGE_SUFFIXES = {
    pe.IMAGE_SUFFIX_INDEX: ImageSuffix.INDEX,
    pe.IMAGE_SUFFIX_TIMESTAMP: ImageSuffix.TIMESTAMP,
    pe.IMAGE_SUFFIX_NONE_OVERWRITE: ImageSuffix.NONE_OVERWRITE,
}


def _image_target(out: pe.ImageOutput, where: str) -> ImageTarget:
    if out.image_codec not in (0, 1):  # IC_DEFAULT, IC_JPEG
        raise InvalidRequestError(f"{where}.image_codec", "only JPEG images are supported")
    if out.filename_suffix not in _IMAGE_SUFFIXES:
        raise InvalidRequestError(f"{where}.filename_suffix", f"unknown suffix {out.filename_suffix}")
    storage = output_storage(out, where)
    check_template(out.filename_prefix, f"{where}.filename_prefix")
    for name in ("width", "height"):
        value = getattr(out, name)
        if value and (value < 16 or value > 7680 or value % 2):
            raise InvalidRequestError(f"{where}.{name}", f"{value}: must be even, 16..7680 (0 = canvas size)")
    return ImageTarget(
        where,
        out.capture_interval or DEFAULT_CAPTURE_INTERVAL,
        out.width,
        out.height,
        out.filename_prefix.strip(),
        _IMAGE_SUFFIXES[out.filename_suffix],
        out.disable_manifest,
        storage,
    )


def _with_outputs(cfg: EgressConfig) -> EgressConfig:
    """Add the segment, stream and image outputs of the request, and check they fit the media.

    Encoders are shared by every output, so the key frame interval is set here: with HLS it is
    the segment duration (the GCD of them all) so segments start on key frames, unless
    ``advanced.key_frame_interval`` was given.
    """
    req: Any = cfg.request  # any request type with encoded outputs
    if not hasattr(req, "segment_outputs"):
        return cfg
    legacy = _legacy_output(req)
    segs = [_segment_target(o, f"segment_outputs[{i}]") for i, o in enumerate(req.segment_outputs)]
    if legacy == "segments":
        segs.insert(0, _segment_target(req.segments, "segments"))
    streams = [_stream_target(o, f"stream_outputs[{i}]") for i, o in enumerate(req.stream_outputs)]
    if legacy == "stream":
        streams.insert(0, _stream_target(req.stream, "stream"))
    images = [_image_target(o, f"image_outputs[{i}]") for i, o in enumerate(req.image_outputs)]
    video = cfg.video
    if images and video is None:
        raise InvalidRequestError(images[0].field, "image outputs need video; this egress records audio only")
    if video is not None and video.codec != "h264" and (segs or streams):
        where = segs[0].field if segs else streams[0].field
        raise InvalidRequestError(where, f"HLS and RTMP carry H.264 only; {video.codec} cannot be sent there")
    if segs and video is not None:
        explicit = req.WhichOneof("options") == "advanced" and req.advanced.key_frame_interval > 0
        if not explicit:
            gop = math.gcd(*(s.segment_duration for s in segs))
            cfg.video = replace(video, keyframe_interval=float(gop))
    cfg.segments, cfg.streams, cfg.images = segs, streams, images
    return cfg


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
        req.preset,
        req.advanced,
        has_preset=which == "preset",
        has_advanced=which == "advanced",
    )


def _check_containers(files: list[FileTarget], has_video: bool, audio: AudioEncoding | None) -> None:
    for f in files:
        if f.file_type in (FileType.OGG, FileType.MP3) and has_video:
            raise InvalidRequestError(
                f"{f.field}.file_type",
                f"{f.file_type.name} cannot hold video; use MP4, or record audio only",
            )
        if f.file_type in (FileType.OGG, FileType.MP3) and audio is None:
            raise InvalidRequestError(f"{f.field}.file_type", f"{f.file_type.name} needs audio to record")
        if f.file_type is FileType.MP4 and not has_video and audio is None:
            raise InvalidRequestError(f"{f.field}.file_type", "nothing to record")


def _check_paths(cfg: EgressConfig) -> EgressConfig:
    """Refuse, before anything is joined or opened, paths that would leave the output folder."""
    sample = dict.fromkeys(TEMPLATE_KEYS, "x")
    for f in cfg.files:
        resolve_path(
            f.filepath,
            values=sample,
            output_dir=cfg.output_dir,
            default_stem="x",
            extension=f.file_type.extension or ".mp4",
            field=f"{f.field}.filepath",
        )
    return cfg


def build_config(req: Request, *, output_dir: Path | None = None) -> EgressConfig:
    """Validate ``req`` and normalise it; raises ``InvalidRequestError`` naming the field."""
    return _check_paths(_with_outputs(_build(req, (output_dir or Path.cwd()).resolve())))


def _build(req: Request, out_dir: Path) -> EgressConfig:
    if isinstance(req, pe.ParticipantEgressRequest):
        video, audio = _encodings(req)
        cfg = EgressConfig(
            Kind.PARTICIPANT,
            _require(req.room_name, "room_name"),
            req,
            identity=_require(req.identity, "identity"),
            screen_share=req.screen_share,
            video=video,
            audio=audio,
            files=_encoded_outputs(req),
            output_dir=out_dir,
        )
        _check_containers(cfg.files, True, audio)
        return cfg
    if isinstance(req, pe.TrackCompositeEgressRequest):
        room = _require(req.room_name, "room_name")
        if not req.audio_track_id and not req.video_track_id:
            raise InvalidRequestError("audio_track_id", "audio_track_id or video_track_id is required")
        video, audio = _encodings(req)
        files = _encoded_outputs(req)
        has_video = bool(req.video_track_id)
        if not has_video and all(f.file_type is FileType.OGG for f in files):
            audio = audio.for_codec("opus")
        cfg = EgressConfig(
            Kind.TRACK_COMPOSITE,
            room,
            req,
            audio_track_id=req.audio_track_id.strip(),
            video_track_id=req.video_track_id.strip(),
            video=video if has_video else None,
            audio=audio if req.audio_track_id else None,
            files=files,
            output_dir=out_dir,
        )
        _check_containers(cfg.files, has_video, cfg.audio)
        return cfg
    if isinstance(req, pe.TrackEgressRequest):
        room = _require(req.room_name, "room_name")
        track = _require(req.track_id, "track_id")
        which = req.WhichOneof("output")
        if which == "websocket_url":
            url = _check_websocket_url(req.websocket_url)
            return EgressConfig(Kind.TRACK, room, req, track_id=track, websocket_url=url, output_dir=out_dir)
        if which != "file":
            raise InvalidRequestError("file", "the request has no output")
        storage = output_storage(req.file, "file")
        check_template(req.file.filepath, "file.filepath")
        target = FileTarget("file", FileType.AUTO, req.file.filepath, req.file.disable_manifest, storage)
        return EgressConfig(Kind.TRACK, room, req, track_id=track, files=[target], output_dir=out_dir)
    if isinstance(req, pe.RoomCompositeEgressRequest):
        return _room_composite(req, out_dir)
    if isinstance(req, pe.WebEgressRequest):
        return _web(req, out_dir)
    raise InvalidRequestError("request", f"unsupported request type {type(req).__name__}")


def _room_composite(req: pe.RoomCompositeEgressRequest, out_dir: Path) -> EgressConfig:
    web_url = req.custom_base_url.strip()
    if web_url and urllib.parse.urlsplit(web_url).scheme not in ("http", "https", "file"):
        raise InvalidRequestError("custom_base_url", "must be an http://, https:// or file:// URL")
    if req.audio_only and req.video_only:
        raise InvalidRequestError("video_only", "audio_only and video_only cannot both be set")
    if req.audio_mixing not in pe.AudioMixing.values():
        raise InvalidRequestError("audio_mixing", f"unknown audio mixing {req.audio_mixing}")
    if not web_url:
        parse_layout(req.layout)  # a template has layouts of its own
    video, audio = _encodings(req)
    files = _encoded_outputs(req)
    if req.audio_only and files and all(f.file_type is FileType.OGG for f in files):
        audio = audio.for_codec("opus")
    cfg = EgressConfig(
        Kind.ROOM_COMPOSITE,
        _require(req.room_name, "room_name"),
        req,
        video=None if req.audio_only else video,
        audio=None if req.video_only else audio,
        files=files,
        output_dir=out_dir,
        layout=req.layout,
        audio_mixing=req.audio_mixing,
        web_url=web_url,
    )
    _check_containers(cfg.files, cfg.video is not None, cfg.audio)
    return cfg


def _web(req: pe.WebEgressRequest, out_dir: Path) -> EgressConfig:
    url = req.url.strip()
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise InvalidRequestError("url", "must be an http://, https:// or file:// URL")
    if req.audio_only and req.video_only:
        raise InvalidRequestError("video_only", "audio_only and video_only cannot both be set")
    video, audio = _encodings(req)
    files = _encoded_outputs(req)
    if req.audio_only and files and all(f.file_type is FileType.OGG for f in files):
        audio = audio.for_codec("opus")
    cfg = EgressConfig(
        Kind.WEB,
        "",
        req,
        video=None if req.audio_only else video,
        audio=None if req.video_only else audio,
        files=files,
        output_dir=out_dir,
    )
    _check_containers(cfg.files, cfg.video is not None, cfg.audio)
    return cfg
