"""Request → one validated, normalised config. Every error a user can cause is found here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from livekit.protocol import egress as pe

from .errors import InvalidRequestError, NotSupportedError
from .filenames import TEMPLATE_KEYS, check_template, resolve_path
from .media.encoding import AudioEncoding, VideoEncoding, from_request

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


_FILE_TYPES = {pe.DEFAULT_FILETYPE: FileType.MP4, pe.MP4: FileType.MP4, pe.OGG: FileType.OGG}


@dataclass(frozen=True)
class FileTarget:
    """One file output as requested: container, path template, manifest flag."""

    field: str  # where it came from in the request, e.g. "file_outputs[0]"
    file_type: FileType
    filepath: str
    disable_manifest: bool


@dataclass
class EgressConfig:
    """Everything a recorder needs, validated."""

    kind: Kind
    room_name: str
    request: Request
    identity: str = ""
    screen_share: bool = False
    audio_track_id: str = ""
    video_track_id: str = ""
    track_id: str = ""
    video: VideoEncoding | None = None
    audio: AudioEncoding | None = None
    files: list[FileTarget] = field(default_factory=list)
    output_dir: Path = field(default_factory=Path.cwd)


def _storage_unsupported(out: pe.EncodedFileOutput | pe.DirectFileOutput, where: str) -> None:
    which = out.WhichOneof("output")
    if which:
        raise NotSupportedError(f"{where}.{which}: cloud storage uploads are not supported yet")


def _file_target(out: pe.EncodedFileOutput, where: str) -> FileTarget:
    if out.file_type not in _FILE_TYPES:
        raise InvalidRequestError(f"{where}.file_type", f"unsupported file type {out.file_type}")
    _storage_unsupported(out, where)
    check_template(out.filepath, f"{where}.filepath")
    return FileTarget(where, _FILE_TYPES[out.file_type], out.filepath, out.disable_manifest)


def _encoded_outputs(req: pe.ParticipantEgressRequest | pe.TrackCompositeEgressRequest) -> list[FileTarget]:
    files = [_file_target(o, f"file_outputs[{i}]") for i, o in enumerate(req.file_outputs)]
    if isinstance(req, pe.TrackCompositeEgressRequest) and req.WhichOneof("output") == "file":
        files.insert(0, _file_target(req.file, "file"))
    for name in ("stream_outputs", "segment_outputs", "image_outputs"):
        if len(getattr(req, name)):
            raise NotSupportedError(f"{name}: only file outputs are supported so far")
    if isinstance(req, pe.TrackCompositeEgressRequest) and req.WhichOneof("output") in (
        "stream",
        "segments",
    ):
        raise NotSupportedError(f"{req.WhichOneof('output')}: only file outputs are supported so far")
    if not files:
        raise InvalidRequestError("file_outputs", "the request has no output")
    return files


def _require(value: str, name: str) -> str:
    if not value.strip():
        raise InvalidRequestError(name, "is required")
    return value.strip()


def _encodings(
    req: pe.ParticipantEgressRequest | pe.TrackCompositeEgressRequest,
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
        if f.file_type is FileType.OGG and has_video:
            raise InvalidRequestError(
                f"{f.field}.file_type", "OGG cannot hold video; use MP4, or record audio only"
            )
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
    return _check_paths(_build(req, (output_dir or Path.cwd()).resolve()))


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
            raise NotSupportedError("websocket_url: WebSocket track egress is not supported yet")
        if which != "file":
            raise InvalidRequestError("file", "the request has no output")
        _storage_unsupported(req.file, "file")
        check_template(req.file.filepath, "file.filepath")
        target = FileTarget("file", FileType.AUTO, req.file.filepath, req.file.disable_manifest)
        return EgressConfig(Kind.TRACK, room, req, track_id=track, files=[target], output_dir=out_dir)
    if isinstance(req, pe.RoomCompositeEgressRequest):
        raise NotSupportedError("room composite egress is not supported yet")
    if isinstance(req, pe.WebEgressRequest):
        raise NotSupportedError("web egress is not supported yet")
    raise InvalidRequestError("request", f"unsupported request type {type(req).__name__}")
