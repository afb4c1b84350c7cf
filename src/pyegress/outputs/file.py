"""File output: MP4, OGG, WebM, MP3 on local disk, uploaded to its store when it closes.

A retry of the egress continues a fragmented MP4 (:mod:`pyegress.outputs.fmp4`): the same file,
its timeline going on, one result; unless the file name has ``{retry}`` (a file per attempt,
as asked) or the file cannot take the new fragments (then a file of its own, as before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import av
from livekit.protocol import egress as pe

from ..media.encoder import EncodedPacket
from ..media.encoding import AudioEncoding, VideoEncoding
from ..storage.upload import Store
from .base import Output, PacketOutput
from .fmp4 import CannotContinue, FragmentAppender, ResumePoint, resume_point
from .manifest import manifest_path

log = logging.getLogger("pyegress.outputs.file")

CONTAINER_FORMATS = {".mp4": "mp4", ".ogg": "ogg", ".webm": "webm", ".mp3": "mp3"}


def container_options(fmt: str) -> dict[str, str]:
    """Muxer options of a file format.

    Fragmented MP4: what was written before a crash stays playable (up to the last key frame);
    the AAC encoder's packets start at 0, so no edit list is needed. Each fragment goes to disk
    when it is cut (flush_packets): FFmpeg's 32 KB write buffer would otherwise hold seconds of
    a low-bitrate recording back from a crash-surviving file.
    """
    if fmt == "mp4":
        return {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
    return {}


class FileOutput(PacketOutput):
    """Writes one container file; its manifest (``<file>.json``) unless ``manifest`` is False.
    ``before_upload`` (set by a recorder) completes the closed file before it goes up, on a
    worker thread (speaker tracks merged in); when it fails the file stays as it was."""

    before_upload: Callable[[Path], None] | None = None

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        video: VideoEncoding | None,
        audio: AudioEncoding | None,
        manifest: bool = False,
        store: Store | None = None,
        per_attempt: bool = False,
    ) -> None:
        super().__init__(
            name, video, audio, store=store, manifest_path=manifest_path(path) if manifest else None
        )
        self.path = path
        #: a file per attempt of the egress (its name has ``{retry}``): a retry never continues it
        self.per_attempt = per_attempt
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._result: pe.FileInfo | None = None
        self._resume: tuple[Path, ResumePoint] | None = None  # (own path, where the file ends)
        self._offset = 0.0  # seconds of media the earlier attempts wrote to this file
        self._appender: FragmentAppender | None = None

    def resume(self, previous: Output) -> None:
        """Continue ``previous``'s fragmented MP4 (see the module); checked again in :meth:`open`."""
        if (
            self.per_attempt
            or not isinstance(previous, FileOutput)
            or previous.failed
            or (previous.path.suffix, self.path.suffix) != (".mp4", ".mp4")
        ):
            return
        try:
            point = resume_point(previous.path)
        except (OSError, CannotContinue) as e:
            log.warning("%s: a file of its own after the retry: %s", self.name, e)
            return
        self._resume = (self.path, point)
        self.path = previous.path
        if self.manifest_path is not None:
            self.manifest_path = manifest_path(self.path)

    @property
    def continued(self) -> bool:
        """True while this attempt appends to an earlier attempt's file."""
        return self._resume is not None

    @property
    def continued_after(self) -> float | None:
        """Seconds of media the earlier attempts wrote to the file this attempt goes on with
        (None: a file of its own); known once open."""
        return self._offset if self._resume is not None else None

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        fmt = CONTAINER_FORMATS[self.path.suffix]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._resume is not None:
            try:
                self._appender = FragmentAppender(self.path, self._resume[1])
                self._open_mp4(self._appender, video, audio)
                self._offset = self._resume[1].seconds
                return
            except (OSError, CannotContinue) as e:
                log.warning("%s: a file of its own after the retry: %s", self.name, e)
                self._close_quietly()
                if self._appender is not None:
                    self._appender.close()
                    self._appender = None
                self.path = self._resume[0]
                if self.manifest_path is not None:
                    self.manifest_path = manifest_path(self.path)
                self._resume = None
        if fmt == "mp4":
            self._open_mp4(str(self.path), video, audio)
            return
        self._container = av.open(str(self.path), "w", format=fmt)
        self._add_streams(video, audio)

    def _open_mp4(self, target: object, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        options = container_options("mp4")
        self._container = av.open(target, "w", format="mp4", options=options)  # type: ignore[call-overload]
        self._add_streams(video, audio)

    def _add_streams(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        assert self._container is not None
        self._streams = {}
        if video is not None and self.video is not None:
            self._streams["video"] = self._container.add_stream_from_template(video)
        if audio is not None and self.audio is not None:
            self._streams["audio"] = self._container.add_stream_from_template(audio)
        self._container.start_encoding()  # the header: a continued file checks its tracks here

    def _close_quietly(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception as e:  # a half-open muxer: what it says is moot
                log.debug("%s: closing the abandoned muxer: %s", self.name, e)

    def write(self, packet: EncodedPacket) -> None:
        stream = self._streams.get(packet.kind)
        if stream is None or self._container is None:
            return
        self._track_end(packet.kind, self._offset + packet.end)
        self._container.mux(packet.to_av(stream))

    def close(self) -> None:
        try:
            if self._container is not None:
                container, self._container = self._container, None
                container.close()
        finally:
            if self._appender is not None:  # PyAV leaves a file object it was given open
                self._appender.close()

    async def finish(self) -> None:
        """Upload the finished file; its result's ``location`` becomes the object URL, or stays
        the local path when the upload failed for good (the output then fails)."""
        if self.before_upload is not None and self.path.is_file():
            try:
                await asyncio.to_thread(self.before_upload, self.path)
            except Exception as e:
                log.warning("output %s: %s", self.name, e)
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
        if self._resume is not None:  # the file goes on after a retry: so does its result
            for res in info.file_results:
                if res.filename == str(self.path):
                    self._result = res
                    return
        self._result = info.file_results.add(
            filename=str(self.path), location=str(self.path), started_at=started_at
        )

    def refresh(self, ended_at: int | None = None) -> None:
        if self._result is None or ended_at is None:
            return  # a file's size and duration are final only once it is closed
        self._result.ended_at = ended_at
        self._result.duration = int(self.duration * 1e9)
        self._result.size = self.size
