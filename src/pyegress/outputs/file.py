"""File output: MP4, OGG, WebM, MP3 on local disk, uploaded to its store when it closes."""

from __future__ import annotations

from pathlib import Path

import av
from livekit.protocol import egress as pe

from ..media.encoder import EncodedPacket
from ..media.encoding import AudioEncoding, VideoEncoding
from ..storage.upload import Store
from .base import PacketOutput
from .manifest import manifest_path

CONTAINER_FORMATS = {".mp4": "mp4", ".ogg": "ogg", ".webm": "webm", ".mp3": "mp3"}


def container_options(fmt: str) -> dict[str, str]:
    """Muxer options: fragmented MP4, so that what was written before a crash stays playable (up
    to the last key frame); the AAC encoder's packets start at 0, so no edit list is needed.
    Each fragment goes to disk when it is cut (flush_packets): FFmpeg's 32 KB write buffer
    would otherwise hold seconds of a low-bitrate recording back from a crash-surviving file."""
    if fmt == "mp4":
        return {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
    return {}


class FileOutput(PacketOutput):
    """Writes one container file; its manifest (``<file>.json``) unless ``manifest`` is False."""

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        video: VideoEncoding | None,
        audio: AudioEncoding | None,
        manifest: bool = False,
        store: Store | None = None,
    ) -> None:
        super().__init__(
            name, video, audio, store=store, manifest_path=manifest_path(path) if manifest else None
        )
        self.path = path
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._result: pe.FileInfo | None = None

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        fmt = CONTAINER_FORMATS[self.path.suffix]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w", format=fmt, options=container_options(fmt))
        if video is not None and self.video is not None:
            self._streams["video"] = self._container.add_stream_from_template(video)
        if audio is not None and self.audio is not None:
            self._streams["audio"] = self._container.add_stream_from_template(audio)
        self._container.start_encoding()

    def write(self, packet: EncodedPacket) -> None:
        stream = self._streams.get(packet.kind)
        if stream is None or self._container is None:
            return
        self._track_end(packet.kind, packet.end)
        self._container.mux(packet.to_av(stream))

    def close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    async def finish(self) -> None:
        """Upload the finished file; its result's ``location`` becomes the object URL, or stays
        the local path when the upload failed for good (the output then fails)."""
        if self.store is None or not self.path.is_file():
            return
        up = await self.store.upload(self.path)
        if up.ok:
            if self._result is not None:
                self._result.location = up.location
        else:
            self.fail(up.error or "upload failed")

    @property
    def size(self) -> int:
        """Bytes on disk now."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def attach(self, info: pe.EgressInfo, started_at: int) -> None:
        self._result = info.file_results.add(
            filename=str(self.path), location=str(self.path), started_at=started_at
        )

    def refresh(self, ended_at: int | None = None) -> None:
        if self._result is None or ended_at is None:
            return  # a file's size and duration are final only once it is closed
        self._result.ended_at = ended_at
        self._result.duration = int(self.duration * 1e9)
        self._result.size = self.size
