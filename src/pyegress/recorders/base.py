"""The recorder: wires a source, a timeline and outputs, and owns the EgressInfo lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from livekit import rtc
from livekit.protocol import egress as pe

from .. import redaction
from ..config import EgressConfig, FileType, Request, StreamURL, build_config
from ..errors import EgressError, InvalidRequestError, OutputError, SourceError
from ..filenames import resolve_path, time_values
from ..info import is_terminal, new_info, now_ns, set_status, snapshot
from ..media.encoding import AudioEncoding, VideoEncoding
from ..media.pipeline import MIX_CHANNELS, MIX_RATE, Pipeline
from ..media.timeline import AudioInput, VideoInput
from ..outputs.base import Output
from ..outputs.file import FileOutput
from ..outputs.images import ImageOutput, image_prefix
from ..outputs.segments import SegmentOutput, segment_paths
from ..outputs.stream import StreamOutput
from ..outputs.websocket import WebSocketOutput
from ..sources.room import RoomSource
from ..storage import upload as storage_upload

log = logging.getLogger("pyegress.recorder")


@dataclass
class Progress:
    """What a progress display shows."""

    status: str
    elapsed: float
    size: int
    fps: float


@dataclass
class Media:
    """What a recorder found to record: template values and the encodings per kind."""

    values: dict[str, str]
    video: VideoEncoding | None
    audio: AudioEncoding | None


class Recorder:
    """Base of every recorder; subclasses say what to wait for, subscribe to and when to end.

    Construct with a request (invalid requests raise ``InvalidRequestError`` naming the field),
    and either an ``rtc.Room`` the application already has connected, or ``url`` / ``api_key`` /
    ``api_secret`` to join the room as a hidden participant.
    """

    def __init__(
        self,
        request: Request,
        *,
        room: rtc.Room | None = None,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        wait_timeout: float = 10.0,
        egress_id: str | None = None,
        default_storage: pe.StorageConfig | None = None,
    ) -> None:
        redaction.remember(self, *redaction.secrets_in(request))  # before a config error quotes one
        self.config: EgressConfig = build_config(request, output_dir=Path(output_dir) if output_dir else None)
        # files with no s3/gcp/azure of their own go to this store (None: they stay local)
        self.uploads = storage_upload.FileUploads(self.config, default_storage)
        self.info = new_info(request, egress_id)
        self.wait_timeout = wait_timeout
        self.source = RoomSource(
            self.config.room_name,
            room=room,
            url=url or os.environ.get("LIVEKIT_URL", ""),
            api_key=api_key or os.environ.get("LIVEKIT_API_KEY", ""),
            api_secret=api_secret or os.environ.get("LIVEKIT_API_SECRET", ""),
            identity=f"EG_{self.info.egress_id[3:]}",
        )
        self.outputs: list[Output] = []
        self.pipeline: Pipeline | None = None
        self.video_input: VideoInput[object] | None = None
        self.audio_input: AudioInput | None = None
        self._end = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0

    # --- public lifecycle ---------------------------------------------------------------

    @property
    def egress_id(self) -> str:
        return self.info.egress_id

    async def start(self) -> pe.EgressInfo:
        """Start recording in the background on the running loop; returns at once (STARTING)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"pyegress-{self.egress_id}"
            )
        return snapshot(self.info)

    async def stop(self) -> pe.EgressInfo:
        """End the recording now and wait until its files are complete."""
        if self._task is None:
            set_status(self.info, pe.EGRESS_ABORTED, "stopped before it started")
            return snapshot(self.info)
        if not is_terminal(self.info.status):
            self.end("stopped")
        return await self.wait()

    async def wait(self, timeout: float | None = None) -> pe.EgressInfo:
        """Wait for the egress to end (COMPLETE, FAILED, ...) and return its final info."""
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return snapshot(self.info)

    def end(self, reason: str) -> None:
        """Ask the recording to finish (idempotent)."""
        if not self._end.is_set():
            log.info("egress %s ending: %s", self.egress_id, reason)
            self.info.details = reason
            self._end.set()

    def progress(self) -> Progress:
        """Elapsed seconds, bytes written and output frame rate so far."""
        elapsed = time.monotonic() - self._t0 if self._t0 and self.pipeline else 0.0
        size = sum(o.size for o in self.outputs)
        frames = self.pipeline.stats.video_frames if self.pipeline else 0
        status = pe.EgressStatus.Name(self.info.status)
        return Progress(status, elapsed, size, frames / elapsed if elapsed > 0 else 0.0)

    # --- subclass hooks -----------------------------------------------------------------

    async def _resolve(self) -> Media:
        """Wait (bounded) for what to record; raise ``SourceError`` when it never shows up."""
        raise NotImplementedError

    def _route(self, participant: rtc.RemoteParticipant, pub: rtc.RemoteTrackPublication) -> str | None:
        """Which input ("video", "audio" or None) this publication feeds."""
        raise NotImplementedError

    def _on_unpublished(self, participant: rtc.RemoteParticipant, pub: rtc.RemoteTrackPublication) -> None:
        """A routed track went away (default: keep recording, the timeline fills the gap)."""

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        """A participant left (subclasses end when theirs did)."""

    # --- the run ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            self._check_output_dir()
            await self._connect()
            media = await self._resolve()
            self._build(media)
            await self._record()
        except asyncio.CancelledError:
            set_status(self.info, pe.EGRESS_ABORTED, "cancelled")
            raise
        except EgressError as e:
            set_status(self.info, pe.EGRESS_FAILED, str(e))
        except Exception as e:
            log.exception("egress %s failed", self.egress_id)
            set_status(self.info, pe.EGRESS_FAILED, f"{type(e).__name__}: {e}")
        finally:
            with contextlib.suppress(Exception):
                await self._disconnect()
            self._write_manifests()
            await self.uploads.upload_manifests(self.info, self.outputs)

    async def _connect(self) -> None:
        """Reach the media: join the room (hidden) or check the given one (subclasses: a page)."""
        await self.source.connect(self.wait_timeout)
        self.source.on("disconnected", lambda *_: self.end("room closed"))

    async def _disconnect(self) -> None:
        """Let go of the media source (always called, also after a failure)."""
        await self.source.close()

    async def _end_when_empty(self, timeout: float) -> None:
        """End the recording once the room has had no (visible) participant for ``timeout`` s."""
        empty_since: float | None = None
        with contextlib.suppress(asyncio.CancelledError):
            while not self._end.is_set():
                if self.source.room.remote_participants:
                    empty_since = None
                elif empty_since is None:
                    empty_since = time.monotonic()
                elif time.monotonic() - empty_since >= timeout:
                    self.end(f"room empty for {timeout:g} s")
                    return
                await asyncio.sleep(0.25)

    def _check_output_dir(self) -> None:
        root = self.config.output_dir
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"output_dir: cannot create {root}: {e.strerror}") from e
        if not os.access(root, os.W_OK):
            raise OutputError(f"output_dir: {root} is not writable")

    def _template_values(self, extra: dict[str, str]) -> dict[str, str]:
        values = {"room_name": self.config.room_name, **time_values(), **extra}
        values.setdefault("room_id", self.info.room_id)
        return values

    def _build(self, media: Media) -> None:
        for target in self.config.files:
            ftype = target.file_type
            ext = ftype.extension or media.values.get("extension", ".mp4")
            kind = "track" if self.config.kind.value == "track" else self.config.kind.value
            stem = f"{media.values.get('room_name') or 'egress'}-{kind}-{media.values['time']}"
            path = resolve_path(
                target.filepath,
                values=media.values,
                output_dir=self.config.output_dir,
                default_stem=stem,
                extension=ext,
                field=f"{target.field}.filepath",
            )
            if ftype is FileType.AUTO and path.suffix != ext:
                raise OutputError(
                    f"{target.field}.filepath: {path.name} does not match the track's container {ext}"
                )
            audio = media.audio
            if audio is not None and path.suffix in (".ogg", ".webm"):
                audio = audio.for_codec("opus")
            elif audio is not None and path.suffix == ".mp3":
                audio = audio.for_codec("mp3")
            video = media.video if path.suffix in (".mp4", ".webm") else None
            manifest = None if target.disable_manifest else self._manifest
            self.outputs.append(FileOutput(target.field, path, video=video, audio=audio, manifest=manifest))
        self.outputs += build_outputs(
            self.config, media.values, media.video, media.audio, self._manifest, uploads=self.uploads
        )

    def _make_inputs(self, t0: float, video: bool, audio: bool) -> tuple[Any, list[Any]]:
        """The pipeline's video source and audio sources (default: one of each)."""
        self.video_input = VideoInput() if video else None
        self.audio_input = AudioInput(MIX_RATE, MIX_CHANNELS, t0) if audio else None
        return self.video_input, [self.audio_input] if self.audio_input else []

    def _attach(
        self, kind: str, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        """Start feeding a subscribed track into its input (default: the single inputs)."""
        if kind == "video" and self.video_input is not None:
            self.source.pump_video(track, self.video_input)
        elif kind == "audio" and self.audio_input is not None:
            self.source.pump_audio(track, self.audio_input)

    async def _record(self) -> None:
        media_video = any(o.video or o.canvas for o in self.outputs)
        media_audio = any(o.audio or o.wants_pcm for o in self.outputs)
        fps = next((o.video.fps for o in self.outputs if o.video), 30)
        # the room id first: waiting for it after t0 would leave the first ticks behind
        self.info.room_id = self.info.room_id or await self._room_sid()
        self._t0 = t0 = time.monotonic()
        video_source, audio_sources = self._make_inputs(t0, media_video, media_audio)
        self.pipeline = Pipeline(
            outputs=self.outputs,
            video_input=video_source,
            audio_inputs=audio_sources,
            fps=fps,
        )
        await asyncio.to_thread(self.pipeline.open)
        if all(o.failed for o in self.outputs):
            raise OutputError("; ".join(f"{o.name}: {o.error}" for o in self.outputs))
        started = now_ns()
        loop = asyncio.get_running_loop()
        for o in self.outputs:
            if isinstance(o, FileOutput):
                self.info.file_results.add(filename=str(o.path), location=str(o.path), started_at=started)
            else:
                o.add_result(self.info, started)
                o.notify = lambda: _call_soon(loop, self._sync_results)
        self._sync_results()
        set_status(self.info, pe.EGRESS_ACTIVE)
        self.info.started_at = started
        self._subscribe_all()
        self.source.on("track_published", self._published)
        self.source.on("track_subscribed", self._subscribed)
        self.source.on("track_unpublished", self._unpublished)
        self.source.on("participant_disconnected", self._on_participant_left)
        if any(isinstance(o, WebSocketOutput) for o in self.outputs):
            self.source.on("track_muted", lambda p, pub: self._muted(p, pub, True))
            self.source.on("track_unmuted", lambda p, pub: self._muted(p, pub, False))
            for participant, pub in self.source.publications():
                if pub.muted:
                    self._muted(participant, pub, True)
        try:
            await self.pipeline.run(t0, self._end)
        finally:
            set_status(self.info, pe.EGRESS_ENDING)
            for o in self.outputs:
                await o.finish()
            await self.uploads.upload_files(self.info, self.outputs)  # worker thread, not the loop
            self._finish_results()

    async def _room_sid(self) -> str:
        with contextlib.suppress(Exception):
            return await asyncio.wait_for(self.source.room.sid, 2.0)
        return ""

    def _subscribe_all(self) -> None:
        for participant, pub in self.source.publications():
            self._published(pub, participant)

    def _published(self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if self._route(participant, pub) is None:
            return
        if pub.track is not None:
            self._subscribed(pub.track, pub, participant)
        else:
            self.source.subscribe(pub)

    def _subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        kind = self._route(participant, pub)
        if kind is not None:
            self._attach(kind, track, pub, participant)

    def _unpublished(self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if self._route(participant, pub) is not None:
            self.source.stop_pump(pub.sid)
            self._on_unpublished(participant, pub)

    def _sync_results(self, ended: int | None = None) -> None:
        """Copy the live state of segment, stream and image outputs into ``info`` (event loop)."""
        for o in self.outputs:
            if not isinstance(o, FileOutput):
                o.update_result(ended)
        # the deprecated single-result oneof (file, stream or segments): files take it first
        if not self.info.file_results and self.info.stream_results:
            self.info.stream.ClearField("info")
            self.info.stream.info.extend(self.info.stream_results)
        elif not self.info.file_results and self.info.segment_results:
            self.info.segments.CopyFrom(self.info.segment_results[0])
        self.info.updated_at = now_ns()

    async def update_stream(self, add: list[StreamURL], remove: list[str]) -> pe.EgressInfo:
        """Add and remove RTMP URLs of a live egress; the other URLs keep streaming untouched."""
        streams = [o for o in self.outputs if isinstance(o, StreamOutput)]
        if self.info.status != pe.EGRESS_ACTIVE:
            raise InvalidRequestError("egress_id", f"egress {self.egress_id} is not active")
        if not streams:
            raise InvalidRequestError("egress_id", f"egress {self.egress_id} has no stream output")
        gone = []
        for i, u in enumerate(remove):
            sink = next((s for s in (o.find(u) for o in streams) if s is not None), None)
            if sink is None:
                raise InvalidRequestError(f"remove_output_urls[{i}]", "not a URL this egress streams to")
            gone.append(sink)
        for i, url in enumerate(add):
            if any(o.find(url.url) for o in streams):
                raise InvalidRequestError(f"add_output_urls[{i}]", f"{url.redacted} is already streaming")
        for url in add:
            streams[0].add(url)
        await asyncio.gather(*(sink.owner.remove(sink) for sink in gone))
        self._sync_results()
        return snapshot(self.info)

    def _muted(self, participant: rtc.Participant, pub: rtc.TrackPublication, muted: bool) -> None:
        """Tell WebSocket receivers when the recorded audio is muted or unmuted."""
        remote = isinstance(participant, rtc.RemoteParticipant)
        remote = remote and isinstance(pub, rtc.RemoteTrackPublication)
        if remote and self._route(participant, pub) == "audio":  # type: ignore[arg-type]
            for o in self.outputs:
                if isinstance(o, WebSocketOutput):
                    o.set_muted(muted)

    def _finish_results(self) -> None:
        ended = now_ns()
        files = [o for o in self.outputs if isinstance(o, FileOutput)]
        for result, out in zip(self.info.file_results, files, strict=False):
            result.ended_at = ended
            result.duration = int(out.duration * 1e9)
            result.size = out.size
        if self.info.file_results:
            self.info.file.CopyFrom(self.info.file_results[0])
        self._sync_results(ended)
        failed = [o for o in self.outputs if o.failed]
        if failed and len(failed) == len(self.outputs):
            set_status(self.info, pe.EGRESS_FAILED, "; ".join(f"{o.name}: {o.error}" for o in failed))
        else:
            if failed:
                self.info.error = "; ".join(f"{o.name}: {o.error}" for o in failed)
            set_status(self.info, pe.EGRESS_COMPLETE)

    def _manifest(self) -> dict[str, object]:
        return MessageToDict(snapshot(self.info), preserving_proto_field_name=True)

    def _write_manifests(self) -> None:
        for out in self.outputs:
            try:
                out.write_manifest()
            except OSError as e:
                log.warning("cannot write manifest of %s: %s", out.name, e)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is gone: nothing left to report to
        loop.call_soon_threadsafe(fn)


def build_outputs(
    config: EgressConfig,
    values: dict[str, str],
    video: VideoEncoding | None,
    audio: AudioEncoding | None,
    manifest: Callable[[], dict[str, object]],
    *,
    uploads: storage_upload.FileUploads | None = None,
) -> list[Output]:
    """The segment, stream, image and WebSocket outputs of ``config`` (files are built above).

    HLS and RTMP carry AAC (an Opus-only egress gets a second, AAC encode for them); every
    output with the same encoding shares one encoder. HLS and image outputs with a store
    (``uploads``) upload while recording.
    """
    kind = "track" if config.kind.value == "track" else config.kind.value
    stem = f"{values.get('room_name', 'room')}-{kind}-{values.get('time', '')}"
    aac = audio if audio is None or audio.codec == "aac" else audio.for_codec("aac")
    outs: list[Output] = []
    for seg in config.segments:
        paths = segment_paths(seg, values, config.output_dir, stem)
        outs.append(
            SegmentOutput(
                seg.field,
                paths,
                segment_duration=seg.segment_duration,
                suffix=seg.suffix,
                video=video,
                audio=aac,
                manifest=None if seg.disable_manifest else manifest,
                uploads=uploads.live(seg.field) if uploads is not None else None,
            )
        )
    for st in config.streams:
        outs.append(StreamOutput(st.field, st.urls, video=video, audio=aac))
    for img in config.images:
        if video is None:
            raise OutputError(f"{img.field}: image outputs need video")
        outs.append(
            ImageOutput(
                img.field,
                image_prefix(img, values, config.output_dir, stem),
                canvas=video,
                interval=img.capture_interval,
                width=img.width,
                height=img.height,
                suffix=img.suffix,
                manifest=None if img.disable_manifest else manifest,
                uploads=uploads.live(img.field) if uploads is not None else None,
            )
        )
    if config.websocket_url:
        if video is not None:
            raise InvalidRequestError(
                "websocket_url", "WebSocket egress carries audio only; this track is video"
            )
        outs.append(WebSocketOutput("websocket_url", config.websocket_url, loop=asyncio.get_running_loop()))
    return outs


def require_found(found: object, what: str) -> None:
    """Raise the ``SourceError`` for something that never showed up."""
    if found is None:
        raise SourceError(what)
