"""The one factory: every output of an egress, built from its config once the media is known.

Names are expanded with the media's template values (``{publisher_identity}``, ...), each
output gets the audio encoding its carrier calls for (:func:`pyegress.config.audio_for`) and
its own store; every output with the same encoding shares one encoder in the pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from ..config import EgressConfig, FileTarget, FileType, audio_for
from ..config.paths import image_prefix, segment_paths
from ..errors import InvalidRequestError, OutputError
from ..filenames import resolve_path
from ..media.encoding import AudioEncoding, VideoEncoding
from ..storage.upload import open_store
from .base import Output
from .file import FileOutput
from .images import ImageOutput
from .segments import SegmentOutput
from .stream import StreamOutput
from .websocket import WebSocketOutput

#: Containers that can hold video.
_VIDEO_CONTAINERS = (".mp4", ".webm")


def default_stem(config: EgressConfig, values: Mapping[str, str]) -> str:
    """The generated name of an output with no name of its own: ``<room>-<kind>-<time>``."""
    return f"{values.get('room_name') or 'egress'}-{config.kind.value}-{values.get('time', '')}"


def after_retry(path: Path, template: str, values: Mapping[str, str]) -> Path:
    """A retry never overwrites an earlier attempt's file: a name without ``{retry}`` gets
    ``-<retry_count>`` before its extension (LiveKit does so for the names it generates)."""
    retry = values.get("retry", "0")
    if retry == "0" or "{retry}" in template:
        return path
    return path.with_name(f"{path.stem}-{retry}{path.suffix}")


def _file(
    config: EgressConfig,
    target: FileTarget,
    values: Mapping[str, str],
    video: VideoEncoding | None,
    audio: AudioEncoding | None,
) -> FileOutput:
    ext = target.file_type.extension or values.get("extension", ".mp4")
    path = resolve_path(
        target.filepath,
        values=values,
        output_dir=config.output_dir,
        default_stem=default_stem(config, values),
        extension=ext,
        field=f"{target.field}.filepath",
        jail=config.jail,
    )
    path = after_retry(path, target.filepath, values)
    if target.file_type is FileType.AUTO and path.suffix != ext:
        raise OutputError(f"{target.field}.filepath: {path.name} does not match the track's container {ext}")
    return FileOutput(
        target.field,
        path,
        video=video if path.suffix in _VIDEO_CONTAINERS else None,
        audio=audio_for(audio, path.suffix),
        manifest=not target.disable_manifest,
        store=open_store(target.storage, config.output_dir, backup=config.backup_storage),
        per_attempt="{retry}" in target.filepath,
    )


def build_outputs(
    config: EgressConfig,
    values: Mapping[str, str],
    video: VideoEncoding | None,
    audio: AudioEncoding | None,
) -> list[Output]:
    """Every output of ``config``: files, HLS, RTMP, images, WebSocket (call on the event loop).

    ``values`` fill the name templates (``extension`` is the container of a track egress).
    """
    root, jail = config.output_dir, config.jail
    stem = default_stem(config, values)
    outs: list[Output] = [_file(config, t, values, video, audio) for t in config.files]
    for seg in config.segments:
        outs.append(
            SegmentOutput(
                seg.field,
                segment_paths(seg, values, root, stem, jail=jail),
                segment_duration=seg.segment_duration,
                suffix=seg.suffix,
                video=video,
                audio=audio_for(audio, "hls"),
                manifest=not seg.disable_manifest,
                store=open_store(seg.storage, root, backup=config.backup_storage),
            )
        )
    for st in config.streams:
        outs.append(StreamOutput(st.field, st.urls, video=video, audio=audio_for(audio, "rtmp")))
    for img in config.images:
        if video is None:
            raise OutputError(f"{img.field}: image outputs need video")
        outs.append(
            ImageOutput(
                img.field,
                after_retry(image_prefix(img, values, root, stem, jail=jail), img.filename_prefix, values),
                canvas=video,
                interval=img.capture_interval,
                width=img.width,
                height=img.height,
                suffix=img.suffix,
                manifest=not img.disable_manifest,
                store=open_store(img.storage, root, backup=config.backup_storage),
            )
        )
    if config.websocket_url:
        field = config.websocket_field
        if video is not None:
            raise InvalidRequestError(field, "WebSocket egress carries audio only; this track is video")
        loop = asyncio.get_running_loop()
        # the unified request's form reports in stream_results, as LiveKit's does
        outs.append(WebSocketOutput(field, config.websocket_url, loop=loop, report=field != "websocket_url"))
    return outs
