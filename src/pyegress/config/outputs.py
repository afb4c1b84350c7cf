"""Output messages → typed targets, checked before anything joins a room.

Every output field of a request (files, HLS, RTMP, images, WebSocket; legacy single fields
too) becomes a target naming where it came from; paths are checked against the output folder
with sample values, stores are validated and chosen (own, else the service default), and the
audio codec of each container is decided here (:func:`audio_for`), nowhere else.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from livekit.protocol import egress as pe

from ..errors import InvalidRequestError
from ..filenames import check_template
from ..media.encoding import AudioEncoding
from ..redaction import redact_url
from ..storage.config import StorageMessage, output_storage, resolve_storage
from .model import (
    EgressConfig,
    FileTarget,
    FileType,
    ImageSuffix,
    ImageTarget,
    SegmentSuffix,
    SegmentTarget,
    StreamTarget,
    StreamURL,
)
from .srt import parse_srt_url

#: What an RTMP URL with a stream key looks like: ``rtmp(s)://host[:port][/path]/app/key``.
_STREAM_PATH = re.compile(r"^rtmps?://[^/\s]+(?:/[^/\s]+)*/[^/\s]+$")

#: LiveKit egress's default HLS segment length (seconds) and image capture interval.
DEFAULT_SEGMENT_DURATION = 4
DEFAULT_CAPTURE_INTERVAL = 10

_FILE_TYPES = {
    pe.DEFAULT_FILETYPE: FileType.MP4,
    pe.MP4: FileType.MP4,
    pe.OGG: FileType.OGG,
    pe.MP3: FileType.MP3,
}

_IMAGE_SUFFIXES = {
    pe.IMAGE_SUFFIX_INDEX: ImageSuffix.INDEX,
    pe.IMAGE_SUFFIX_TIMESTAMP: ImageSuffix.TIMESTAMP,
    pe.IMAGE_SUFFIX_NONE_OVERWRITE: ImageSuffix.NONE_OVERWRITE,
}

#: The audio codec each carrier calls for (None: the requested one). HLS and RTMP carry AAC.
_CARRIER_AUDIO = {".ogg": "opus", ".webm": "opus", ".mp3": "mp3", "hls": "aac", "rtmp": "aac"}


def audio_for(base: AudioEncoding | None, carrier: str) -> AudioEncoding | None:
    """The audio encoding of one carrier (a file extension such as ``.ogg``, or ``hls`` /
    ``rtmp``): the one place pyegress decides an audio codec."""
    codec = _CARRIER_AUDIO.get(carrier)
    if base is None or codec is None or codec == base.codec:
        return base
    return base.for_codec(codec)


@dataclass(frozen=True)
class Place:
    """Where outputs go and which store they default to."""

    root: Path
    jail: bool
    default_storage: StorageMessage | None


def check_stream_url(url: str, where: str) -> str:
    """Validate one RTMP(S) URL (``rtmp(s)://host[:port][/path]/app/stream_key``); returns it cleaned.

    ``mux://<key>`` is expanded to Mux's RTMPS ingest, as LiveKit does; ``twitch://<key>`` is
    kept, and goes to Twitch's recommended ingest when it connects (:mod:`pyegress.outputs.twitch`).
    """
    raw = url.strip().removesuffix(" live=1").strip()
    parsed = urllib.parse.urlsplit(raw)
    scheme = parsed.scheme.lower()
    if scheme == "mux" and parsed.netloc:
        return f"rtmps://global-live.mux.com:443/app/{parsed.netloc}"
    if scheme == "twitch":
        if not parsed.netloc or parsed.path.strip("/") or parsed.query:
            raise InvalidRequestError(where, "Twitch URLs look like twitch://<stream_key>")
        return raw
    if scheme == "srt":
        try:
            parse_srt_url(raw)
        except ValueError as e:
            raise InvalidRequestError(where, f"{redact_url(raw)!r}: {e}") from None
        return raw
    if scheme not in ("rtmp", "rtmps"):
        raise InvalidRequestError(
            where, f"scheme {scheme or '(none)'!r}: must be rtmp://, rtmps:// or srt://"
        )
    parts = [p for p in parsed.path.split("/") if p]
    if not parsed.hostname or len(parts) < 2 or not _STREAM_PATH.match(raw):
        raise InvalidRequestError(
            where,
            f"{redact_url(raw)!r}: RTMP URLs must look like rtmp(s)://host[:port][/path]/app/stream_key",
        )
    return raw


def check_websocket_url(url: str, field: str = "websocket_url") -> str:
    """A ``ws://`` or ``wss://`` URL, cleaned."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme.lower() not in ("ws", "wss") or not parsed.hostname:
        raise InvalidRequestError(field, "must be a ws:// or wss:// URL")
    return url.strip()


def check_page_url(url: str, field: str) -> str:
    """An http(s) or file URL a browser may open."""
    url = url.strip()
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise InvalidRequestError(field, "must be an http://, https:// or file:// URL")
    return url


def _store(own: StorageMessage | None, place: Place) -> StorageMessage | None:
    return resolve_storage(own, place.default_storage)


def file_target(out: pe.EncodedFileOutput | pe.DirectFileOutput, where: str, place: Place) -> FileTarget:
    """One file output; a ``DirectFileOutput`` (track egress) has its container chosen later."""
    if isinstance(out, pe.DirectFileOutput):
        file_type = FileType.AUTO
    elif out.file_type in _FILE_TYPES:
        file_type = _FILE_TYPES[out.file_type]
    else:
        raise InvalidRequestError(f"{where}.file_type", f"unsupported file type {out.file_type}")
    storage = output_storage(out, where)
    check_template(out.filepath, f"{where}.filepath")
    return FileTarget(where, file_type, out.filepath, out.disable_manifest, _store(storage, place))


def legacy_output(req: Any) -> str | None:
    """Which of the deprecated single ``file`` / ``stream`` / ``segments`` fields is set."""
    try:
        which: str | None = req.WhichOneof("output")
    except ValueError:  # the request type has no such oneof
        return None
    return which


def file_targets(req: Any, place: Place) -> list[FileTarget]:
    """The file outputs of a request (``file_outputs`` and the legacy ``file``); refuses a
    request that has no output at all."""
    files = [file_target(o, f"file_outputs[{i}]", place) for i, o in enumerate(req.file_outputs)]
    if legacy_output(req) == "file":
        files.insert(0, file_target(req.file, "file", place))
    others = any(len(getattr(req, n)) for n in ("stream_outputs", "segment_outputs", "image_outputs"))
    if not files and not others and legacy_output(req) not in ("stream", "segments"):
        raise InvalidRequestError("file_outputs", "the request has no output")
    return files


def _segment_target(out: pe.SegmentedFileOutput, where: str, place: Place) -> SegmentTarget:
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
        _store(storage, place),
    )


def _stream_target(out: pe.StreamOutput, where: str) -> StreamTarget:
    if out.protocol == pe.StreamProtocol.WEBSOCKET:
        raise InvalidRequestError(
            f"{where}.protocol",
            "WebSocket streams are outputs of StartEgressRequest or TrackEgressRequest.websocket_url",
        )
    if out.protocol not in (pe.DEFAULT_PROTOCOL, pe.RTMP, pe.SRT):
        raise InvalidRequestError(f"{where}.protocol", f"unknown stream protocol {out.protocol}")
    urls = [StreamURL(check_stream_url(u, f"{where}.urls[{i}]")) for i, u in enumerate(out.urls)]
    urls += [
        StreamURL(check_stream_url(d.url, f"{where}.destinations[{i}].url"), d.id)
        for i, d in enumerate(out.destinations)
    ]
    if not urls:
        raise InvalidRequestError(f"{where}.urls", "at least one URL is required")
    # as LiveKit: the protocol (else the first URL) says RTMP or SRT, and every URL is of it
    srt = out.protocol == pe.SRT or (out.protocol == pe.DEFAULT_PROTOCOL and urls[0].url.startswith("srt://"))
    for i, u in enumerate(urls):
        if u.url.startswith("srt://") != srt:
            name = (
                f"{where}.urls[{i}]"
                if i < len(out.urls)
                else f"{where}.destinations[{i - len(out.urls)}].url"
            )
            raise InvalidRequestError(
                name, f"must be an {'srt://' if srt else 'rtmp(s)://'} URL like the others"
            )
    if len({u.url for u in urls}) != len(urls):
        raise InvalidRequestError(f"{where}.urls", "the same URL is listed twice")
    return StreamTarget(where, tuple(urls))


def _image_target(out: pe.ImageOutput, where: str, place: Place) -> ImageTarget:
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
        _store(storage, place),
    )


def add_other_outputs(cfg: EgressConfig, req: Any, place: Place) -> EgressConfig:
    """Add the segment, stream and image outputs of ``req`` and check they fit the media.

    Encoders are shared by every output, so the key frame interval is set here: with HLS it is
    the segment duration (the GCD of them all) so segments start on key frames, unless
    ``advanced.key_frame_interval`` was given.
    """
    if not hasattr(req, "segment_outputs"):
        return cfg
    legacy = legacy_output(req)
    segs = [_segment_target(o, f"segment_outputs[{i}]", place) for i, o in enumerate(req.segment_outputs)]
    if legacy == "segments":
        segs.insert(0, _segment_target(req.segments, "segments", place))
    streams = [_stream_target(o, f"stream_outputs[{i}]") for i, o in enumerate(req.stream_outputs)]
    if legacy == "stream":
        streams.insert(0, _stream_target(req.stream, "stream"))
    images = [_image_target(o, f"image_outputs[{i}]", place) for i, o in enumerate(req.image_outputs)]
    explicit = req.WhichOneof("options") == "advanced" and req.advanced.key_frame_interval > 0
    return set_other_outputs(cfg, segs, streams, images, explicit_gop=explicit)


def set_other_outputs(
    cfg: EgressConfig,
    segs: list[SegmentTarget],
    streams: list[StreamTarget],
    images: list[ImageTarget],
    *,
    explicit_gop: bool,
) -> EgressConfig:
    """Check that segment, stream and image targets fit the media and set them (with the key
    frame interval HLS needs unless ``explicit_gop``: the request gave its own)."""
    video = cfg.video
    if images and video is None:
        raise InvalidRequestError(images[0].field, "image outputs need video; this egress records audio only")
    if video is not None and video.codec != "h264" and (segs or streams):
        where = segs[0].field if segs else streams[0].field
        raise InvalidRequestError(where, f"HLS and RTMP carry H.264 only; {video.codec} cannot be sent there")
    if segs and video is not None and not explicit_gop:
        gop = math.gcd(*(s.segment_duration for s in segs))
        cfg.video = replace(video, keyframe_interval=float(gop))
    cfg.segments, cfg.streams, cfg.images = segs, streams, images
    return cfg


def check_containers(cfg: EgressConfig) -> None:
    """Each file's container can hold what the egress records."""
    has_video = cfg.video is not None
    for f in cfg.files:
        if f.file_type in (FileType.OGG, FileType.MP3) and has_video:
            raise InvalidRequestError(
                f"{f.field}.file_type",
                f"{f.file_type.name} cannot hold video; use MP4, or record audio only",
            )
        if f.file_type in (FileType.OGG, FileType.MP3) and cfg.audio is None:
            raise InvalidRequestError(f"{f.field}.file_type", f"{f.file_type.name} needs audio to record")
        if f.file_type is FileType.MP4 and not has_video and cfg.audio is None:
            raise InvalidRequestError(f"{f.field}.file_type", "nothing to record")
    if cfg.audio is not None and cfg.audio.codec == "mp3":  # asked for: AC_MP3
        # LiveKit puts MP3 audio in MP3 files only (its CodecCompatibility table)
        others = [f"{f.field} ({f.file_type.name})" for f in cfg.files if f.file_type is not FileType.MP3]
        others += [o.field for o in cfg.segments] + [o.field for o in cfg.streams]
        if others:
            raise InvalidRequestError(
                "advanced.audio_codec", f"AC_MP3 goes only into MP3 files, not {others[0]}; use AAC or OPUS"
            )


def settle_audio(cfg: EgressConfig) -> None:
    """When every carrier of the egress calls for the same audio codec, that is the egress's
    (an audio-only OGG recording is Opus throughout)."""
    carriers = [f.file_type.extension for f in cfg.files if f.file_type is not FileType.AUTO]
    carriers += ["hls"] * len(cfg.segments) + ["rtmp"] * len(cfg.streams)
    chosen = {audio_for(cfg.audio, c) for c in carriers}
    if len(chosen) == 1:
        cfg.audio = chosen.pop()
