"""The recorder: wires a source, a timeline and outputs, and owns the EgressInfo lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from livekit import rtc
from livekit.protocol import egress as pe

from ..config import EgressConfig, FileType, Request, build_config
from ..errors import EgressError, OutputError, SourceError
from ..filenames import resolve_path, time_values
from ..info import is_terminal, new_info, now_ns, set_status, snapshot
from ..media.encoding import AudioEncoding, VideoEncoding
from ..media.pipeline import MIX_CHANNELS, MIX_RATE, Pipeline
from ..media.timeline import AudioInput, VideoInput
from ..outputs.file import FileOutput
from ..sources.room import RoomSource

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
    ) -> None:
        self.config: EgressConfig = build_config(request, output_dir=Path(output_dir) if output_dir else None)
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
        self.outputs: list[FileOutput] = []
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
            await self.source.connect(self.wait_timeout)
            self.source.on("disconnected", lambda *_: self.end("room closed"))
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
                await self.source.close()
            self._write_manifests()

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
            stem = f"{media.values.get('room_name', 'room')}-{kind}-{media.values['time']}"
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
            video = media.video if path.suffix in (".mp4", ".webm") else None
            manifest = None if target.disable_manifest else self._manifest
            self.outputs.append(FileOutput(target.field, path, video=video, audio=audio, manifest=manifest))

    async def _record(self) -> None:
        media_video = any(o.video for o in self.outputs)
        media_audio = any(o.audio for o in self.outputs)
        fps = next((o.video.fps for o in self.outputs if o.video), 30)
        self._t0 = t0 = time.monotonic()
        self.video_input = VideoInput() if media_video else None
        self.audio_input = AudioInput(MIX_RATE, MIX_CHANNELS, t0) if media_audio else None
        self.pipeline = Pipeline(
            outputs=self.outputs,
            video_input=self.video_input,
            audio_inputs=[self.audio_input] if self.audio_input else [],
            fps=fps,
        )
        await asyncio.to_thread(self.pipeline.open)
        if all(o.failed for o in self.outputs):
            raise OutputError("; ".join(f"{o.name}: {o.error}" for o in self.outputs))
        started = now_ns()
        for o in self.outputs:
            self.info.file_results.add(filename=str(o.path), location=str(o.path), started_at=started)
        self.info.room_id = self.info.room_id or await self._room_sid()
        set_status(self.info, pe.EGRESS_ACTIVE)
        self.info.started_at = started
        self._subscribe_all()
        self.source.on("track_published", self._published)
        self.source.on("track_subscribed", self._subscribed)
        self.source.on("track_unpublished", self._unpublished)
        self.source.on("participant_disconnected", self._on_participant_left)
        try:
            await self.pipeline.run(t0, self._end)
        finally:
            set_status(self.info, pe.EGRESS_ENDING)
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
        if kind == "video" and self.video_input is not None:
            self.source.pump_video(track, self.video_input)
        elif kind == "audio" and self.audio_input is not None:
            self.source.pump_audio(track, self.audio_input)

    def _unpublished(self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if self._route(participant, pub) is not None:
            self.source.stop_pump(pub.sid)
            self._on_unpublished(participant, pub)

    def _finish_results(self) -> None:
        ended = now_ns()
        for result, out in zip(self.info.file_results, self.outputs, strict=False):
            result.ended_at = ended
            result.duration = int(out.duration * 1e9)
            result.size = out.size
        if self.info.file_results:
            self.info.file.CopyFrom(self.info.file_results[0])
        failed = [o for o in self.outputs if o.failed]
        if failed and len(failed) == len(self.outputs):
            set_status(self.info, pe.EGRESS_FAILED, "; ".join(f"{o.name}: {o.error}" for o in failed))
        else:
            if failed:
                self.info.error = "; ".join(f"{o.name}: {o.error}" for o in failed)
            set_status(self.info, pe.EGRESS_COMPLETE)

    def _manifest(self) -> dict[str, object]:
        return MessageToDict(self.info, preserving_proto_field_name=True)

    def _write_manifests(self) -> None:
        for out in self.outputs:
            try:
                out.write_manifest()
            except OSError as e:
                log.warning("cannot write manifest of %s: %s", out.name, e)


def require_found(found: object, what: str) -> None:
    """Raise the ``SourceError`` for something that never showed up."""
    if found is None:
        raise SourceError(what)
