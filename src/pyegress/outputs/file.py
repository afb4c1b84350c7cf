"""File output: MP4, OGG, WebM, MP3 on local disk, with an optional JSON manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import av

from ..media.encoder import Packet
from ..media.encoding import AudioEncoding, VideoEncoding
from .base import Output

CONTAINER_FORMATS = {".mp4": "mp4", ".ogg": "ogg", ".webm": "webm", ".mp3": "mp3"}


class FileOutput(Output):
    """Writes one container file; the manifest (``<file>.json``) is written when it closes."""

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        video: VideoEncoding | None,
        audio: AudioEncoding | None,
        manifest: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        super().__init__(name, video, audio)
        self.path = path
        self.manifest_path = path.with_name(path.name + ".json") if manifest else None
        self._manifest = manifest
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        fmt = CONTAINER_FORMATS[self.path.suffix]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # fragmented MP4: what was written before a crash stays playable (up to the last key
        # frame); the AAC encoder's packets start at 0, so no edit list is needed
        options = {"movflags": "+frag_keyframe+empty_moov+default_base_moof"} if fmt == "mp4" else {}
        self._container = av.open(str(self.path), "w", format=fmt, options=options)
        if video is not None and self.video is not None:
            self._streams["video"] = self._container.add_stream_from_template(video)
        if audio is not None and self.audio is not None:
            self._streams["audio"] = self._container.add_stream_from_template(audio)
        self._container.start_encoding()

    def write(self, packet: Packet, kind: str) -> None:
        stream = self._streams.get(kind)
        if stream is None or self._container is None:
            return
        self._track_end(packet, kind)
        packet.stream = stream
        self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    @property
    def size(self) -> int:
        """Bytes on disk now."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def write_manifest(self) -> None:
        """Write the JSON manifest beside the file (when enabled)."""
        if self.manifest_path is not None and self._manifest is not None:
            self.manifest_path.write_text(json.dumps(self._manifest(), indent=2))
