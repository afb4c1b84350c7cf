"""The recorder: wires a source, the pipeline and the outputs, and reports through the info owner.

A subclass says where its media comes from (:meth:`Recorder._connect`, :meth:`_resolve`,
:meth:`_make_inputs`) and when to end; this base runs the lifecycle the same way for all:
config → connect → resolve → outputs → pipeline → results → manifests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from livekit import rtc
from livekit.protocol import egress as pe

from .. import redaction
from ..config import EgressConfig, Request, StreamURL, build_config
from ..ending import (
    MSG_LIMIT_REACHED,
    MSG_LIMIT_REACHED_WITHOUT_START,
    MSG_STOPPED_BEFORE_STARTED,
    EndReason,
    end_details,
)
from ..errors import (
    EgressError,
    InvalidRequestError,
    OutputError,
    SourceError,
    StoreUnreachableError,
    TransientError,
)
from ..filenames import time_values
from ..info import InfoOwner, Listener, is_terminal, new_info, now_ns, snapshot
from ..limits import SessionLimits, watch_limits
from ..media.encoding import AudioEncoding, VideoEncoding
from ..media.inputs import MIX_CHANNELS, MIX_RATE, AudioSource, Picture, VideoSource
from ..media.timeline import AudioInput, Ticks, VideoInput
from ..outputs import FrameOutput, Output, PcmOutput, StreamOutput, build_outputs
from ..outputs.file import FileOutput
from ..outputs.segments import SegmentOutput
from ..pauses import PauseClock, PauseFill, check_fill
from ..pipeline import Pipeline, PipelineStats
from ..preview import Preview, View
from ..quality import (
    AudioQuality,
    OutputQuality,
    QualityReport,
    VideoQuality,
    audio_quality,
    video_quality,
    with_details,
)
from ..selection import Selection
from ..sidecars import Sidecars, check_kinds

log = logging.getLogger("pyegress.recorder")

#: Retries of an egress that failed for a transient reason (:class:`TransientError`). LiveKit's
#: open-source egress leaves the count to the controller that re-dispatches (not open source);
#: its own retry test expects the first retry (``retry_count`` 1) to succeed.
DEFAULT_MAX_RETRIES = 1
#: How long the rtc SDK may try to regain a lost room connection before the recording ends
#: early; the SDK usually gives up first (10 attempts: 13-23 s measured against a killed server).
RECONNECT_TIMEOUT = 30.0


@dataclass
class Progress:
    """What a progress display shows."""

    status: str
    elapsed: float
    size: int
    fps: float
    backlog: int = 0  # ticks waiting for the encoder thread: growing means it cannot keep up
    frames_dropped: int = 0  # frames (video or audio) a stream or WebSocket output could not send
    frames_skipped: int = 0  # received video frames never shown (late, or above the frame rate)


@dataclass
class Options:
    """How the service starts recorders: where LiveKit is, and the waits (each recorder takes
    what it needs, :meth:`Recorder.from_config`)."""

    url: str = ""
    api_key: str = ""
    api_secret: str = field(default="", repr=False)
    room: rtc.Room | None = None  # the application's connected room, when given
    wait_timeout: float = 10.0
    empty_timeout: float = 30.0
    egress_id: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    reconnect_timeout: float = RECONNECT_TIMEOUT
    insecure: bool = False  # web pages and templates run without web security
    limits: SessionLimits | None = None
    sidecars: frozenset[str] = frozenset()  # time-aligned sidecars written beside the media
    selection: Selection | None = None  # room composites: who is recorded
    speaker_tracks: bool = False  # room composites: one audio track per participant in files
    receive_path: str = "auto"  # participant / track / room composite: pyegress.recorders.RECEIVE_PATHS


@dataclass
class Media:
    """What a recorder found to record: template values and the encodings per kind."""

    values: dict[str, str]
    video: VideoEncoding | None
    audio: AudioEncoding | None


class Recorder:
    """Base of every recorder.

    Construct with a request (invalid requests raise ``InvalidRequestError`` naming the field)
    or a config already built from one. ``output_dir`` given: every path stays inside it;
    None: relative paths go under the working folder, absolute ones where they say.
    ``default_storage`` is where outputs without a store of their own are uploaded;
    ``backup_storage`` where uploads go once an output's store failed.
    ``limits``: the session limits it ends at (:mod:`pyegress.limits`).
    """

    def __init__(
        self,
        request: Request | None = None,
        *,
        config: EgressConfig | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        wait_timeout: float = 10.0,
        egress_id: str | None = None,
        default_storage: pe.StorageConfig | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backup_storage: pe.StorageConfig | None = None,
        limits: SessionLimits | None = None,
        sidecars: Collection[str] = (),
    ) -> None:
        self.sidecar_kinds = check_kinds(sidecars)
        self.sidecars: Sidecars | None = None  # while recording, with sidecar_kinds
        if config is None:
            if request is None:
                raise InvalidRequestError("request", "a request or a config is required")
            redaction.remember(self, *redaction.secrets_in(request))  # before a config error quotes one
            out = Path(output_dir) if output_dir is not None else None
            config = build_config(request, output_dir=out, default=default_storage, backup=backup_storage)
        else:
            redaction.remember(self, *redaction.secrets_in(config.request))
        self.config = config
        self.owner = InfoOwner(new_info(config.request, egress_id))
        self.wait_timeout = wait_timeout
        self.limits = limits
        self._final: int = pe.EGRESS_COMPLETE  # how a clean end ends (LIMIT_REACHED at a limit)
        self.outputs: list[Output] = []
        self.pipeline: Pipeline | None = None
        self.video_input: VideoInput[Picture] | None = None
        self.audio_input: AudioInput | None = None
        self._stats = PipelineStats()
        self._end = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self.ticks: Ticks | None = None  # the output's frame instants, once the clock runs
        self._t1 = 0.0
        self.max_retries = max_retries
        self._end_error: EgressError | None = None  # the recording ended early: fail once finished
        self._stop_asked = False
        self._quality: QualityReport | None = None  # the final report, once the recording ended
        self._before: tuple[PauseClock, Sidecars | None] | None = None  # the attempt before a retry

    @classmethod
    def from_config(cls, config: EgressConfig, options: Options) -> Recorder:
        """The recorder of a validated config, with what it needs of ``options``."""
        return cls(config=config, **cls._options(options))

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        """The constructor's keywords taken from ``options`` (subclasses add theirs)."""
        return {
            "wait_timeout": options.wait_timeout,
            "egress_id": options.egress_id,
            "max_retries": options.max_retries,
            "limits": options.limits,
            "sidecars": options.sidecars,
        }

    # --- public lifecycle ---------------------------------------------------------------

    @property
    def info(self) -> pe.EgressInfo:
        """The live info (read only: changes go through ``owner``)."""
        return self.owner.info

    @property
    def egress_id(self) -> str:
        return self.info.egress_id

    async def start(self) -> pe.EgressInfo:
        """Start recording in the background on the running loop.

        Returns:
            The info at once (``EGRESS_STARTING``); a bad request ends the egress ``FAILED``
            with an ``error`` naming the field instead of raising.
        """
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"pyegress-{self.egress_id}"
            )
        return snapshot(self.info)

    async def stop(self) -> pe.EgressInfo:
        """End the recording now and wait until its files are complete.

        Returns:
            The final info (``EGRESS_ABORTED`` when it had not started).
        """
        if self._task is None:
            with self.owner.edit() as info:
                info.details = end_details(EndReason.API)
            self.owner.set_status(pe.EGRESS_ABORTED, MSG_STOPPED_BEFORE_STARTED)
            self.owner.close()
            return snapshot(self.info)
        if not is_terminal(self.info.status):
            self._stop_asked = True
            self.end(EndReason.API)
        return await self.wait()

    async def wait(self, timeout: float | None = None) -> pe.EgressInfo:
        """Wait for the egress to end by itself (COMPLETE, FAILED, ...).

        Args:
            timeout: seconds to wait at most (None: as long as it takes).

        Returns:
            The final info.

        Raises:
            TimeoutError: it was still running after ``timeout``.
        """
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return snapshot(self.info)

    def _tell_pcm_muted(self, muted: bool) -> None:
        """Tell raw PCM receivers (WebSocket) that the recorded audio was muted or unmuted, in
        order with the PCM: once the output reaches the media of now."""

        def tell() -> None:
            for o in self.outputs:
                if isinstance(o, PcmOutput):
                    o.set_muted(muted)

        if self.pipeline is not None:
            self.pipeline.when_output(tell)
        else:
            tell()

    def end(self, reason: str = EndReason.API, detail: str = "") -> None:
        """Ask the recording to finish (idempotent); ``details`` becomes ``End reason: <reason>``
        (one of :class:`~pyegress.ending.EndReason`) with ``detail`` after it. Before it
        started, the egress ends ABORTED."""
        if not self._end.is_set():
            log.info("egress %s ending: %s%s", self.egress_id, reason, f" ({detail})" if detail else "")
            with self.owner.edit() as info:
                info.details = end_details(reason, detail)
            if self.sidecars is not None:  # the media ends at this instant: no room event after it
                self.sidecars.stop_at(time.monotonic())
            self._end.set()

    @property
    def ending(self) -> bool:
        """True once the recording was asked to finish (or is over)."""
        return self._end.is_set() or is_terminal(self.info.status)

    def reach_limit(self, detail: str) -> None:
        """A session limit was reached while recording: finish the outputs cleanly, then end
        ``EGRESS_LIMIT_REACHED``."""
        self._final = pe.EGRESS_LIMIT_REACHED
        self.end(EndReason.LIMIT_REACHED, detail)

    def abort_at_limit(self, detail: str) -> None:
        """A session limit passed before the recording started: ABORTED, as LiveKit does."""
        self.end(EndReason.LIMIT_REACHED, detail)
        self.owner.set_status(pe.EGRESS_ABORTED, MSG_LIMIT_REACHED_WITHOUT_START)

    def done(self) -> bool:
        """True once the egress is over (files, uploads and manifests finished)."""
        return self.owner.closed

    def updates(self) -> AsyncIterator[pe.EgressInfo]:
        """Follow the egress: ``async for info in recorder.updates()``.

        Returns:
            An iterator of the current info, then each change, until the egress is over.
        """
        return self.owner.updates()

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with a snapshot at each change.

        Args:
            listener: called with an ``EgressInfo`` on the event loop; it must not block.

        Returns:
            A function that stops the calls.
        """
        return self.owner.listen(listener)

    def progress(self) -> Progress:
        """How far the recording is.

        Returns:
            Elapsed seconds, bytes written, output frame rate, encoder backlog and frames
            dropped (by outputs) or skipped (received but never shown) so far.
        """
        end = self._t1 or time.monotonic()
        elapsed = end - self._t0 if self._t0 else 0.0
        stats = self.pipeline.stats if self.pipeline is not None else self._stats
        size = sum(o.size for o in self.outputs)
        status = pe.EgressStatus.Name(self.info.status)
        fps = stats.video_frames / elapsed if elapsed > 0 else 0.0
        video = self.pipeline.video_input if self.pipeline is not None else None
        return Progress(
            status,
            elapsed,
            size,
            fps,
            stats.backlog if self.pipeline is not None else 0,
            frames_dropped=sum(o.frames_dropped for o in self.outputs),
            frames_skipped=video.frames_skipped if video is not None else 0,
        )

    def preview(
        self, *, interval: float = 0.25, width: int = 480, view: View = "auto", stream: TextIO | None = None
    ) -> Preview:
        """Show this egress live until it ends (see :meth:`pyegress.EgressService.preview`).

        Args:
            interval: seconds between refreshes.
            width: the still's width in pixels.
            view: ``"widget"``, ``"text"`` or ``"auto"`` (widgets inside Jupyter).
            stream: where the text view writes (default stdout).

        Returns:
            The running :class:`~pyegress.preview.Preview`.
        """
        return Preview(self, interval=interval, width=width, view=view, stream=stream).start()

    def quality(self) -> QualityReport:
        """How well the recording goes (:mod:`pyegress.quality`).

        Returns:
            The report so far (final once the recording ended): per input what came and how
            the timeline bent it, per output what its encoders made.
        """
        if self._quality is not None:
            return self._quality
        video, audio = self._quality_inputs()
        report = QualityReport(video, audio)
        pipeline = self.pipeline
        for o in self.outputs:
            v, a = pipeline.encoders(o) if pipeline is not None else (None, None)
            out = OutputQuality(o.name)
            if v is not None:
                out.video_frames, out.video_bytes = v.packets_out, v.bytes_out
            if a is not None:
                out.audio_packets, out.audio_bytes = a.packets_out, a.bytes_out
            report.outputs.append(out)
        return report

    def _quality_inputs(self) -> tuple[list[VideoQuality], list[AudioQuality]]:
        """The quality of each input (default: the one video and one audio input)."""
        video = [video_quality("video", self.video_input)] if self.video_input is not None else []
        audio = [audio_quality("audio", self.audio_input)] if self.audio_input is not None else []
        return video, audio

    async def update_stream(self, add: Sequence[StreamURL], remove: Sequence[str]) -> pe.EgressInfo:
        """Add and remove stream URLs of a live egress; the other URLs keep streaming untouched.

        Args:
            add: URLs to start streaming to (on the first stream output).
            remove: URLs to stop, in clear or as ``EgressInfo`` shows them.

        Returns:
            The egress's info.

        Raises:
            InvalidRequestError: it is not active or has no stream output, a URL to remove is
                not streamed to (naming ``remove_output_urls[i]``), or one to add already is
                (``add_output_urls[i]``).
        """
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

    # --- pause, marks (pyegress.pauses, pyegress.sidecars) ---------------------------------

    def _recording(self) -> Pipeline:
        if self.pipeline is None or self.info.status != pe.EGRESS_ACTIVE:
            raise InvalidRequestError("egress_id", f"egress {self.egress_id} is not active")
        return self.pipeline

    def pause(self, fill: PauseFill | str = "cut") -> pe.EgressInfo:
        """Stop recording the room from the next frame on: recorded outputs leave the span out
        (``fill="cut"``) or show a slate (``"black"``, ``"still"``: the last frame; silence);
        live outputs show the slate. Pausing a paused egress changes nothing.

        Args:
            fill: ``"cut"``, ``"black"`` or ``"still"``.

        Returns:
            The egress's info.

        Raises:
            InvalidRequestError: it is not recording, or ``fill`` is unknown.
        """
        fill = check_fill(fill)
        pipeline = self._recording()
        if not pipeline.pauses.paused:
            pipeline.pauses.pause(fill)
            self.note("paused", fill=fill)
        return snapshot(self.info)

    def resume(self) -> pe.EgressInfo:
        """Record the room again from the next frame on (a cut continues the timeline).

        Returns:
            The egress's info.

        Raises:
            InvalidRequestError: it is not recording.
        """
        if self._recording().pauses.resume() is not None:
            self.note("resumed")
        return snapshot(self.info)

    def mark(self, label: str, data: object = None) -> None:
        """Put an application marker in the events sidecar at the current media time.

        Args:
            label: what the marker is.
            data: anything JSON-serializable, kept with the marker.

        Raises:
            InvalidRequestError: it is not recording, there is no ``events`` sidecar (naming
                ``sidecars``), or ``data`` is not JSON-serializable.
        """
        self._recording()
        if self.sidecars is None or "events" not in self.sidecar_kinds:
            raise InvalidRequestError("sidecars", "marks go to the events sidecar: enable 'events'")
        try:
            json.dumps(data)
        except (TypeError, ValueError) as e:
            raise InvalidRequestError("data", f"must be JSON-serializable: {e}") from None
        self.note("mark", label=label, data=data)

    def note(self, event: str, /, **data: Any) -> None:
        """An event for the events sidecar (nothing without one)."""
        if self.sidecars is not None:
            self.sidecars.note(event, **data)

    def _pause_clock(self) -> PauseClock | None:
        """The pauses of the recording (the pipeline's)."""
        return self.pipeline.pauses if self.pipeline is not None else None

    def _sidecar_room(self) -> rtc.Room | None:
        """The room whose events and text streams the sidecars follow (none by default)."""
        return None

    def _sidecar_media(self) -> FileOutput | SegmentOutput | None:
        """The first file or playlist: the media the sidecars go beside, on its clock."""
        return next((o for o in self.outputs if isinstance(o, (FileOutput, SegmentOutput))), None)

    async def _publish_sidecars(self) -> list[dict[str, str]]:
        """Write the sidecars beside the first file or playlist (else in the output folder)
        and upload them with it."""
        if self.sidecars is None:
            return []
        media, store = self.config.output_dir / self.egress_id, None
        out = self._sidecar_media()
        if out is not None:
            media = out.path if isinstance(out, FileOutput) else out.paths.playlist
            store = out.store
        header = {"egress_id": self.egress_id, "room_name": self.config.room_name}
        return await self.sidecars.publish(media, store, header)

    # --- subclass hooks -----------------------------------------------------------------

    async def _connect(self) -> None:
        """Reach the media (join the room, open the page)."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Let go of the media source (always called, also after a failure)."""

    async def _resolve(self) -> Media:
        """Wait (bounded) for what to record; raise ``SourceError`` when it never shows up."""
        return Media(self._template_values({}), self.config.video, self.config.audio)

    async def _room_id(self) -> str:
        """The room's id for ``EgressInfo`` (none by default)."""
        return ""

    def _make_inputs(
        self, t0: float, video: bool, audio: bool
    ) -> tuple[VideoSource | None, list[AudioSource]]:
        """The pipeline's video source and audio sources (default: one of each)."""
        self.video_input = VideoInput(self.ticks) if video else None
        self.audio_input = AudioInput(MIX_RATE, MIX_CHANNELS, t0) if audio else None
        return self.video_input, [self.audio_input] if self.audio_input else []

    def _on_active(self) -> None:
        """The outputs are open and the clock runs: start feeding the inputs."""

    # --- the run ------------------------------------------------------------------------

    async def _run(self) -> None:
        limits = self.limits or SessionLimits()
        watch = asyncio.get_running_loop().create_task(watch_limits(self, limits))
        try:
            self._check_output_dir()
            while True:
                try:
                    await self._attempt()
                    break
                except TransientError as e:
                    if self._stop_asked or self.info.retry_count >= self.max_retries:
                        raise
                    await self._prepare_retry(e)
        except asyncio.CancelledError:
            self.owner.set_status(pe.EGRESS_ABORTED, "cancelled")
            raise
        except EgressError as e:
            self.owner.set_status(pe.EGRESS_FAILED, str(e), e.code)
        except Exception as e:
            log.exception("egress %s failed", self.egress_id)
            self.owner.set_status(pe.EGRESS_FAILED, f"{type(e).__name__}: {e}")
        finally:
            watch.cancel()
            with contextlib.suppress(Exception):
                await self._disconnect()
            await self._publish_manifests()
            if self.pipeline is not None:  # let go of the encoders and inputs; the stats stay
                self._stats, self.pipeline = self.pipeline.stats, None
            self.owner.close()

    async def _prepare(self, previous: dict[str, Output]) -> None:
        """Join, find what to record, make the outputs (continuing ``previous`` ones)."""
        await self._connect()
        media = await self._resolve()
        self.outputs = build_outputs(self.config, media.values, media.video, media.audio)
        for o in self.outputs:
            if o.name in previous:
                o.resume(previous[o.name])

    async def _attempt(self) -> None:
        """One run from joining to finished outputs; a retry continues the previous outputs
        where their container allows (:meth:`Output.resume`). A stop or a limit while it
        joins ends it ABORTED."""
        prepare = asyncio.ensure_future(self._prepare({o.name: o for o in self.outputs}))
        ended = asyncio.ensure_future(self._end.wait())
        try:
            await asyncio.wait({prepare, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not prepare.done():
                self.owner.set_status(pe.EGRESS_ABORTED, MSG_STOPPED_BEFORE_STARTED)
                return
            prepare.result()
        finally:
            ended.cancel()
            if not prepare.done():
                prepare.cancel()
                await asyncio.wait({prepare})
            if not prepare.cancelled():
                prepare.exception()  # retrieved (raised above, or moot after an abort)
        await self._record()
        if self._end_error is not None:
            raise self._end_error

    async def _prepare_retry(self, error: EgressError) -> None:
        """Close this attempt (its manifests written, the source let go) and count the retry."""
        log.warning("egress %s: retrying (%d of %d) after: %s", self.egress_id,
                    self.info.retry_count + 1, self.max_retries, error)  # fmt: skip
        with contextlib.suppress(Exception):
            await self._disconnect()
        await self._publish_manifests()
        if self.pipeline is not None:
            self._before = (self.pipeline.pauses, self.sidecars)
            self._stats, self.pipeline = self.pipeline.stats, None
        self.sidecars = None
        self._end, self._end_error = asyncio.Event(), None
        self.owner.set_status(pe.EGRESS_STARTING)
        with self.owner.edit() as info:
            info.retry_count += 1
            info.details = f"retry {info.retry_count} after: {error}"

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
        values["retry"] = str(self.info.retry_count)
        values.setdefault("room_id", self.info.room_id)
        return values

    async def _record(self) -> None:
        media_video = any(o.video or isinstance(o, FrameOutput) for o in self.outputs)
        media_audio = any(o.audio or isinstance(o, PcmOutput) for o in self.outputs)
        fps = next((o.video.fps for o in self.outputs if o.video), 30)
        # the room id first: waiting for it after t0 would leave the first ticks behind
        room_id = self.info.room_id or await self._room_id()
        with self.owner.edit() as info:
            info.room_id = room_id
        self._t0 = t0 = time.monotonic()
        self._quality = None
        self.ticks = Ticks(t0, fps)
        video_source, audio_sources = self._make_inputs(t0, media_video, media_audio)
        self.pipeline = Pipeline(
            outputs=self.outputs, video_input=video_source, audio_inputs=audio_sources, fps=fps
        )
        await asyncio.to_thread(self.pipeline.open)
        if all(o.failed for o in self.outputs):
            raise OutputError(
                "; ".join(f"{o.name}: {o.error}" for o in self.outputs), code=_failed(self.outputs)
            )
        started = now_ns()
        loop = asyncio.get_running_loop()
        for o in self.outputs:
            o.attach(self.info, started)
            o.notify = lambda: _call_soon(loop, self._sync_results)
        with self.owner.edit() as info:
            info.started_at = info.started_at or started  # a retry keeps the first start
            self._mirror_legacy()
        clock, (before, earlier) = self.pipeline.pauses, self._before or (None, None)
        media = self._sidecar_media()
        continued = media.continued_after if media is not None else None
        if before is not None:  # a retry: a pause goes on, and so does the media it continues
            clock.carry_on(before, continued)
        clock.start(t0)
        if self.sidecar_kinds:
            self.sidecars = Sidecars(self.sidecar_kinds, clock, earlier if continued is not None else None)
            room = self._sidecar_room()
            if room is not None:
                self.sidecars.attach(room)
            if before is not None:
                self.note("retried", retry_count=self.info.retry_count, continued=continued is not None)
        self.owner.set_status(pe.EGRESS_ACTIVE)
        self._on_active()
        try:
            await self.pipeline.run(t0, self._end)
        finally:
            self._t1 = time.monotonic()
            if self.sidecars is not None:
                await self.sidecars.close()
            self._quality = report = self.quality()  # encoders flushed: the counts are final
            with self.owner.edit() as info:
                info.details = with_details(info.details, report)
            self.owner.set_status(pe.EGRESS_ENDING)
            for o in self.outputs:
                await o.finish()  # uploads on worker threads, not the loop
            self._finish_results()

    def _sync_results(self, ended: int | None = None) -> None:
        """Copy every output's live state into the info and publish it (event loop); once every
        output has failed there is nothing left to record to: end (FAILED), as LiveKit does."""
        with self.owner.edit():
            for o in self.outputs:
                o.refresh(ended)
            self._mirror_legacy()
        if ended is None and self.outputs and all(o.failed for o in self.outputs):
            self.end(EndReason.FAILURE, "every output failed")

    def _mirror_legacy(self) -> None:
        """The deprecated single-result oneof (file, stream or segments): files take it first."""
        info = self.info
        if info.file_results:
            info.file.CopyFrom(info.file_results[0])
        elif info.stream_results:
            info.stream.ClearField("info")
            info.stream.info.extend(info.stream_results)
        elif info.segment_results:
            info.segments.CopyFrom(info.segment_results[0])

    def _finish_results(self) -> None:
        self._sync_results(now_ns())
        failed = [o for o in self.outputs if o.failed]
        with self.owner.edit() as info:
            info.backup_storage_used = info.backup_storage_used or any(o.backup_used for o in self.outputs)
            if failed and len(failed) < len(self.outputs):
                info.error = "; ".join(f"{o.name}: {o.error}" for o in failed)
        if failed and len(failed) == len(self.outputs):
            error = "; ".join(f"{o.name}: {o.error}" for o in failed)
            unreachable = all(o.backup_used for o in failed)  # recorded fine, the store was away
            end_error: EgressError = StoreUnreachableError(error) if unreachable else OutputError(error)
            end_error.code = _failed(failed)
            self._end_error = end_error
        if self._end_error is not None:  # raised once the outputs are finished: FAILED or retried
            return
        if self._final == pe.EGRESS_LIMIT_REACHED:
            self.owner.set_status(pe.EGRESS_LIMIT_REACHED, MSG_LIMIT_REACHED)
        else:
            self.owner.set_status(pe.EGRESS_COMPLETE)

    async def _publish_manifests(self) -> None:
        """Each output's manifest beside its media (with the final info), then its store closes."""
        data = MessageToDict(snapshot(self.info), preserving_proto_field_name=True)
        if self._quality is not None:
            data["quality"] = self._quality.to_dict()
        clock = self._pause_clock()
        pauses = clock.to_list() if clock is not None else []
        if pauses:
            data["pauses"] = pauses
        if self.sidecars is not None:
            data["sidecars"] = await self._publish_sidecars()
        for out in self.outputs:
            location, error = await out.publish_manifest(data)
            await out.release()
            if location or error:
                with self.owner.edit() as info:
                    info.backup_storage_used = info.backup_storage_used or out.backup_used
                    info.manifest_location = info.manifest_location or location
                    if error:
                        info.backup_storage_used = True
                        info.error = f"{info.error}; {error}" if info.error else error


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is gone: nothing left to report to
        loop.call_soon_threadsafe(fn)


def _failed(outputs: Sequence[Output]) -> int:
    """The ``error_code`` of an egress whose every output failed: 503 (unavailable) when they
    all were destinations to stream to, as LiveKit answers a stream that cannot be reached."""
    return 503 if all(isinstance(o, (StreamOutput, PcmOutput)) for o in outputs) else 500


def require_found(found: object, what: str) -> None:
    """Raise the ``SourceError`` (404) for something that never showed up."""
    if found is None:
        raise SourceError(what, code=404)
