"""LiveKit's unified ``StartEgressRequest`` mapped onto what pyegress records.

Its ``template`` source is the room composite (native layouts, or a web template with
``custom_base_url``), ``web`` is the web egress, and ``media`` is one video (a track, or a
participant's camera / screen share) with routed audio, recorded by the media recorder.
Outputs are one list of ``Output`` messages, each with an optional ``storage`` of its own;
the request's ``storage`` is the store of outputs that name none (before the service's
default). Every field is honoured or refused naming it, from the request's root.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import replace
from typing import TypeVar

from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from ..errors import InvalidRequestError, NotSupportedError
from ..media.encoding import AudioEncoding, VideoEncoding, from_request
from ..media.layout import parse_layout
from ..storage.config import StorageMessage, default_storage
from .model import (
    AudioRoute,
    Channel,
    EgressConfig,
    FileTarget,
    FileType,
    ImageTarget,
    Kind,
    SegmentTarget,
    StreamTarget,
)
from .outputs import (
    Place,
    _image_target,
    _segment_target,
    _stream_target,
    check_page_url,
    check_websocket_url,
    file_target,
    set_other_outputs,
)
from .passthrough import unified_mux

_CHANNELS = {
    pe.AUDIO_CHANNEL_BOTH: Channel.BOTH,
    pe.AUDIO_CHANNEL_LEFT: Channel.LEFT,
    pe.AUDIO_CHANNEL_RIGHT: Channel.RIGHT,
}

_T = TypeVar("_T", FileTarget, SegmentTarget, ImageTarget)


def source_kind(req: pe.StartEgressRequest) -> str:
    """What the request records, as the worker's CPU cost names it: ``room_composite``, ``web``
    (a web page, or a template rendered by Chromium) or ``participant`` (a media source, as
    LiveKit counts it)."""
    which = req.WhichOneof("source")
    if which == "template":
        return "web" if req.template.custom_base_url.strip() else "room_composite"
    return {"web": "web", "media": "participant"}.get(which or "", "room_composite")


def source_type(req: pe.StartEgressRequest) -> int:
    """``EgressInfo.source_type``: a web source is rendered by a browser, the others by the SDK."""
    return pe.EGRESS_SOURCE_TYPE_WEB if req.WhichOneof("source") == "web" else pe.EGRESS_SOURCE_TYPE_SDK


def egress(req: pe.StartEgressRequest, place: Place) -> EgressConfig:
    """Validate a unified request into the config of the recorder its source picks."""
    which = req.WhichOneof("encoding")
    if which == "preset" and req.preset == pe.PASSTHROUGH:
        media = req.WhichOneof("source") == "media"
        mux = unified_mux(req, _room(req), place) if media else None  # a camera and microphone as sent
        if mux is not None:
            _outputs(mux, req, place)
            return mux
        return _passthrough(req, place)
    video, audio = from_request(
        req.preset, req.advanced, has_preset=which == "preset", has_advanced=which == "advanced"
    )
    source = req.WhichOneof("source")
    if source == "template":
        cfg = _template(req, video, audio, place)
    elif source == "web":
        cfg = _web(req, video, audio, place)
    elif source == "media":
        cfg = _media(req, video, audio, place)
    else:
        raise InvalidRequestError("source", "set template, web or media")
    _outputs(cfg, req, place)
    return cfg


def _room(req: pe.StartEgressRequest) -> str:
    if not req.room_name.strip():
        raise InvalidRequestError("room_name", "is required")
    return req.room_name.strip()


def _base(kind: Kind, room: str, req: pe.StartEgressRequest, place: Place) -> EgressConfig:
    return EgressConfig(kind, room, req, output_dir=place.root, jail=place.jail)


def _only(
    where: str, audio_only: bool, video_only: bool, video: VideoEncoding, audio: AudioEncoding
) -> tuple[VideoEncoding | None, AudioEncoding | None]:
    if audio_only and video_only:
        raise InvalidRequestError(f"{where}.video_only", "audio_only and video_only cannot both be set")
    return (None if audio_only else video), (None if video_only else audio)


def _template(
    req: pe.StartEgressRequest, video: VideoEncoding, audio: AudioEncoding, place: Place
) -> EgressConfig:
    t = req.template
    cfg = _base(Kind.ROOM_COMPOSITE, _room(req), req, place)
    if t.custom_base_url.strip():
        cfg.web_url = check_page_url(t.custom_base_url, "template.custom_base_url")
    else:
        parse_layout(t.layout, "template.layout")  # a template has layouts of its own
    cfg.video, cfg.audio = _only("template", t.audio_only, t.video_only, video, audio)
    cfg.layout = t.layout
    return cfg


def _web(
    req: pe.StartEgressRequest, video: VideoEncoding, audio: AudioEncoding, place: Place
) -> EgressConfig:
    w = req.web
    cfg = _base(Kind.WEB, req.room_name.strip(), req, place)
    cfg.web_url = check_page_url(w.url, "web.url")
    cfg.await_start_signal = w.await_start_signal
    cfg.video, cfg.audio = _only("web", w.audio_only, w.video_only, video, audio)
    return cfg


def _media(
    req: pe.StartEgressRequest, video: VideoEncoding, audio: AudioEncoding, place: Place
) -> EgressConfig:
    m = req.media
    cfg = _base(Kind.MEDIA, _room(req), req, place)
    which = m.WhichOneof("video")
    if which == "video_track_id":
        if not m.video_track_id.strip():
            raise InvalidRequestError("media.video_track_id", "is empty")
        cfg.video_track_id = m.video_track_id.strip()
    elif which == "participant_video":
        if not m.participant_video.identity.strip():
            raise InvalidRequestError("media.participant_video.identity", "is required")
        cfg.identity = m.participant_video.identity.strip()
        cfg.screen_share = m.participant_video.prefer_screen_share
    if m.HasField("audio"):
        cfg.audio_routes = [_route(r, f"media.audio.routes[{i}]") for i, r in enumerate(m.audio.routes)]
        cfg.capture_all_audio = m.audio.capture_all
        if not cfg.audio_routes and not cfg.capture_all_audio:
            raise InvalidRequestError("media.audio", "set capture_all or at least one route")
    if which is None and not m.HasField("audio"):
        raise InvalidRequestError("media", "set video_track_id, participant_video or audio")
    cfg.video = video if which is not None else None
    cfg.audio = audio if m.HasField("audio") else None
    return cfg


_ONE_TRACK = "PASSTHROUGH records one track (video_track_id, or one audio route by track_id)"


def _passthrough(req: pe.StartEgressRequest, place: Place) -> EgressConfig:
    """``preset: PASSTHROUGH``: a media source of one track is that track's egress, written as
    sent (H.264 MP4, VP8 WebM, Opus Ogg), to file outputs of the container its codec calls for.
    What a remux cannot give is refused, never re-encoded behind the request's back."""
    if req.WhichOneof("source") != "media":
        raise NotSupportedError("preset: PASSTHROUGH records one track of a media source as sent; "
                                "a template or web page is always encoded")  # fmt: skip
    m = req.media
    which = m.WhichOneof("video")
    if which == "participant_video":
        raise NotSupportedError(f"media.participant_video: not recordable as sent; {_ONE_TRACK}")
    routes = list(m.audio.routes) if m.HasField("audio") else []
    if m.HasField("audio") and (m.audio.capture_all or len(routes) != 1):
        raise NotSupportedError(f"media.audio: not recordable as sent; {_ONE_TRACK}, without capture_all")
    if which == "video_track_id" and routes:
        raise NotSupportedError(f"media.audio: not recordable as sent with video_track_id; {_ONE_TRACK}")
    cfg = _base(Kind.TRACK, _room(req), req, place)
    if which == "video_track_id":
        cfg.track_id = m.video_track_id.strip()
        field = "media.video_track_id"
    elif routes:
        field = "media.audio.routes[0]"
        if routes[0].WhichOneof("match") != "track_id":
            raise NotSupportedError(f"{field}: PASSTHROUGH records one track by its track_id")
        if routes[0].channel != pe.AUDIO_CHANNEL_BOTH:
            raise InvalidRequestError(f"{field}.channel", "PASSTHROUGH keeps the sender's channels")
        cfg.track_id, field = routes[0].track_id.strip(), f"{field}.track_id"
    else:
        raise InvalidRequestError("media", "set video_track_id or one audio route by track_id")
    if not cfg.track_id:
        raise InvalidRequestError(field, "is empty")
    for i, out in enumerate(req.outputs):
        if out.WhichOneof("config") != "file":
            raise NotSupportedError(f"outputs[{i}]: PASSTHROUGH writes files (the track as sent) only")
        if out.file.file_type != pe.DEFAULT_FILETYPE:
            own = "PASSTHROUGH writes the track's container (H.264 MP4, VP8 WebM, Opus Ogg): leave it unset"
            raise InvalidRequestError(f"outputs[{i}].file.file_type", own)
    _outputs(cfg, req, place)
    cfg.files = [replace(f, file_type=FileType.AUTO) for f in cfg.files]
    return cfg


def _route(r: pe.AudioRoute, where: str) -> AudioRoute:
    if r.channel not in _CHANNELS:
        raise InvalidRequestError(f"{where}.channel", f"unknown audio channel {r.channel}")
    channel = _CHANNELS[r.channel]
    match = r.WhichOneof("match")
    if match == "track_id" and r.track_id.strip():
        return AudioRoute(where, channel, track_id=r.track_id.strip())
    if match == "participant_identity" and r.participant_identity.strip():
        return AudioRoute(where, channel, identity=r.participant_identity.strip())
    if match == "participant_kind":
        if r.participant_kind not in pm.ParticipantInfo.Kind.values():
            raise InvalidRequestError(f"{where}.participant_kind", f"unknown kind {r.participant_kind}")
        return AudioRoute(where, channel, participant_kind=pm.ParticipantInfo.Kind.Name(r.participant_kind))
    if match is not None:
        raise InvalidRequestError(f"{where}.{match}", "is empty")
    raise InvalidRequestError(where, "set track_id, participant_identity or participant_kind")


def _outputs(cfg: EgressConfig, req: pe.StartEgressRequest, place: Place) -> None:
    """``outputs`` into the config's targets; stores: the output's own ``storage``, else its
    message's legacy ``s3`` / ``gcp`` / ``azure``, else the request's ``storage``, else the
    service default."""
    if not req.outputs:
        raise InvalidRequestError("outputs", "at least one output is required")
    if req.HasField("storage"):
        place = replace(place, default_storage=default_storage(req.storage) or place.default_storage)
    segs: list[SegmentTarget] = []
    streams: list[StreamTarget] = []
    images: list[ImageTarget] = []
    for i, out in enumerate(req.outputs):
        where = f"outputs[{i}]"
        which = out.WhichOneof("config")
        own = default_storage(out.storage, f"{where}.storage") if out.HasField("storage") else None
        if which == "stream":
            if own is not None:
                raise InvalidRequestError(f"{where}.storage", "a stream output is not stored")
            if _is_websocket(out.stream):
                _websocket(cfg, out.stream, f"{where}.stream")
            else:
                streams.append(_stream_target(out.stream, f"{where}.stream"))
        elif which == "file":
            f = out.file
            legacy = pe.EncodedFileOutput(
                file_type=f.file_type, filepath=f.filepath, disable_manifest=f.disable_manifest
            )
            cfg.files.append(_with_store(file_target(legacy, f"{where}.file", place), own))
        elif which == "segments":
            _one_store(out.segments, own, f"{where}.segments")
            segs.append(_with_store(_segment_target(out.segments, f"{where}.segments", place), own))
        elif which == "images":
            _one_store(out.images, own, f"{where}.images")
            images.append(_with_store(_image_target(out.images, f"{where}.images", place), own))
        else:
            raise InvalidRequestError(where, "set file, stream, segments or images")
    if cfg.websocket_url:
        if streams:  # LiveKit takes one stream output per egress
            raise InvalidRequestError(streams[0].field, "one stream output per egress; a WebSocket is set")
        if cfg.audio is None:
            raise InvalidRequestError(cfg.websocket_field, "WebSocket outputs carry audio; none is recorded")
        cfg.video = None  # LiveKit: a WebSocket output makes the whole egress audio only
    explicit = req.WhichOneof("encoding") == "advanced" and req.advanced.key_frame_interval > 0
    set_other_outputs(cfg, segs, streams, images, explicit_gop=explicit)


def _is_websocket(out: pe.StreamOutput) -> bool:
    """``protocol: WEBSOCKET``, or the default protocol with a ``ws(s)://`` first URL (as LiveKit)."""
    if out.protocol == pe.StreamProtocol.WEBSOCKET:
        return True
    first = [*out.urls, *(d.url for d in out.destinations)][:1]
    scheme = urllib.parse.urlsplit(first[0].strip()).scheme.lower() if first else ""
    return out.protocol == pe.DEFAULT_PROTOCOL and scheme in ("ws", "wss")


def _websocket(cfg: EgressConfig, out: pe.StreamOutput, where: str) -> None:
    """The egress's WebSocket PCM output (one URL), as ``TrackEgressRequest.websocket_url``."""
    if cfg.websocket_url:
        raise InvalidRequestError(where, "only one WebSocket output per egress")
    if out.destinations:
        raise InvalidRequestError(f"{where}.destinations", "a WebSocket output takes one URL in urls")
    if len(out.urls) != 1:
        raise InvalidRequestError(f"{where}.urls", "a WebSocket output takes exactly one ws:// or wss:// URL")
    cfg.websocket_url = check_websocket_url(out.urls[0], f"{where}.urls[0]")
    cfg.websocket_field = where


def _one_store(msg: pe.SegmentedFileOutput | pe.ImageOutput, own: StorageMessage | None, where: str) -> None:
    legacy = msg.WhichOneof("output")
    if own is not None and legacy:
        raise InvalidRequestError(f"{where}.{legacy}", "the output's storage is set too: keep one of them")


def _with_store(target: _T, own: StorageMessage | None) -> _T:
    return target if own is None else replace(target, storage=own)
