"""A live look at a running egress: the latest composited picture, each input's audio level, the
status, elapsed time, size and quality figures, refreshed until the egress ends.

In Jupyter it is an ipywidgets view (``pip install 'pyegress[notebook]'``); elsewhere a plain
text line. The picture is a still, not a video: a few times a second the pipeline hands over the
frame its last tick already made, scaled down on the encode thread between two ticks (never half
drawn, no decode), and the preview encodes that small picture as a JPEG on a worker thread.
``Preview.cpu_seconds`` counts all of it, so its cost can be checked (under 2 % of a core).
"""

from __future__ import annotations

import asyncio
import html
import io
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO

import av
import numpy as np

from .media.mixer import Mixer
from .pipeline import Pipeline
from .quality import QualityReport

__all__ = ["Preview", "PreviewState", "audio_levels", "in_notebook"]

#: The quietest level a meter shows (dBFS); silence reads as this.
FLOOR_DB = -60.0

#: Seconds between two readings of the quality figures (they change slowly; the still and the
#: meters refresh every ``interval``).
QUALITY_EVERY = 1.0

View = Literal["auto", "widget", "text"]


class _Progress(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def size(self) -> int: ...
    @property
    def fps(self) -> float: ...


class Previewed(Protocol):
    """What a preview reads of a recorder (:class:`pyegress.recorders.Recorder` has it all)."""

    pipeline: Pipeline | None

    @property
    def egress_id(self) -> str: ...
    def progress(self) -> _Progress: ...
    def quality(self) -> QualityReport: ...
    def done(self) -> bool: ...


@dataclass
class PreviewState:
    """One refresh: what the view shows."""

    status: str
    elapsed: float
    size: int
    fps: float
    levels: dict[str, float] = field(default_factory=dict)  # dBFS per audio input
    quality: QualityReport = field(default_factory=QualityReport)
    jpeg: bytes | None = None  # the latest picture, None without video (or before the first)

    def line(self) -> str:
        """One line of text: status, elapsed, size, fps and the levels."""
        levels = "  ".join(f"{name} {db:.0f} dB" for name, db in self.levels.items())
        return f"{self.status:<20} {self.elapsed:7.1f} s  {self.size / 1e6:7.2f} MB  {self.fps:5.1f} fps" + (
            f"  | {levels}" if levels else ""
        )

    def quality_lines(self) -> list[str]:
        """The quality summary, one input or output a line."""
        return [p for p in self.quality.summary().removeprefix("quality: ").split("; ") if p]


def to_dbfs(rms: float) -> float:
    """An int16 RMS level in dBFS, no lower than :data:`FLOOR_DB`."""
    return max(FLOOR_DB, 20 * math.log10(rms / 32768)) if rms > 0 else FLOOR_DB


def audio_levels(recorder: Previewed, report: QualityReport) -> dict[str, float]:
    """Each audio input's level in dBFS over the latest tick, from what the pipeline already
    read: a room's mixer keeps one per voice; otherwise each audio source's last chunk, named as
    the quality report names the inputs."""
    mixer = getattr(recorder, "mixer", None)
    if isinstance(mixer, Mixer):
        return {name: to_dbfs(rms) for name, rms in list(mixer.levels.items())}
    pipeline = recorder.pipeline
    if pipeline is None:
        return {}
    chunks = list(pipeline.last_pcm)
    names = [a.name for a in report.audio]
    if len(names) != len(chunks):
        names = [f"audio {i + 1}" if len(chunks) > 1 else "audio" for i in range(len(chunks))]
    return {name: to_dbfs(_rms(c)) for name, c in zip(names, chunks, strict=True)}


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(pcm, dtype=np.float32)))) if pcm.size else 0.0


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython shell with a kernel), where widgets display."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and hasattr(shell, "kernel")


def _jpeg(frame: av.VideoFrame, quality: int) -> tuple[bytes, float]:
    """The still as JPEG bytes, and the CPU seconds it took (worker thread)."""
    started = time.thread_time()
    buf = io.BytesIO()
    frame.to_image().save(buf, format="JPEG", quality=quality)  # type: ignore[no-untyped-call]
    return buf.getvalue(), time.thread_time() - started


class Preview:
    """A live view of one egress, refreshed every ``interval`` seconds until it ends.

    Made by :meth:`pyegress.EgressService.preview` or :meth:`pyegress.recorders.Recorder.preview`
    (call it with an event loop running, as in a notebook cell). ``view``: ``"widget"``
    (ipywidgets), ``"text"`` (lines on ``stream``, default stdout) or ``"auto"`` (widgets
    inside Jupyter when ipywidgets is installed, text otherwise). ``width``: the still's width
    in pixels; ``jpeg_quality``: its JPEG quality.
    """

    def __init__(
        self,
        recorder: Previewed,
        *,
        interval: float = 0.25,
        width: int = 480,
        jpeg_quality: int = 70,
        view: View = "auto",
        stream: TextIO | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval: must be more than 0 seconds")
        if width < 16:
            raise ValueError("width: must be at least 16 pixels")
        self.recorder = recorder
        self.interval = interval
        self.width = width
        self.jpeg_quality = jpeg_quality
        self.state: PreviewState | None = None
        self.stills = 0  # pictures shown
        self.refreshes = 0
        self.cpu_seconds = 0.0  # scaling (encode thread), JPEG (worker) and view updates (loop)
        self.wall_seconds = 0.0  # from start to the last refresh
        self._view = self._make_view(view, stream)
        self._task: asyncio.Task[None] | None = None
        self._shown = False
        self._report: QualityReport | None = None
        self._report_at = 0.0

    def _make_view(self, view: View, stream: TextIO | None) -> _TextView | _WidgetView:
        if view == "auto":
            view = "widget" if in_notebook() else "text"
        if view == "widget":
            try:
                return _WidgetView(self.recorder.egress_id, self.width)
            except ImportError:
                if stream is None and in_notebook():
                    print("pyegress: no ipywidgets, showing text (pip install 'pyegress[notebook]')")
        return _TextView(stream or sys.stdout)

    @property
    def widget(self) -> Any:
        """The ipywidgets box (None in text mode), to place in a layout of your own."""
        return self._view.box if isinstance(self._view, _WidgetView) else None

    def start(self) -> Preview:
        """Show the view (in a notebook) and refresh it on the running loop; returns self."""
        if self._task is None:
            self.show()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"pyegress-preview-{self.recorder.egress_id}"
            )
        return self

    def show(self) -> None:
        """Display the widget in the current cell (once; text mode prints as it goes)."""
        if isinstance(self._view, _WidgetView) and not self._shown:
            from IPython.display import display

            display(self._view.box)  # type: ignore[no-untyped-call]
            self._shown = True

    def _ipython_display_(self) -> None:  # the cell's value: shown already by start()
        self.show()

    async def wait(self) -> PreviewState | None:
        """Wait until the egress ended and the view showed its final state; returns that state."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.state

    def stop(self) -> None:
        """Stop refreshing (the view keeps what it last showed)."""
        if self._task is not None:
            self._task.cancel()

    @property
    def cpu_share(self) -> float:
        """The preview's CPU time as a share of one core over its run so far."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    async def _run(self) -> None:
        started = time.monotonic()
        while not self.recorder.done():
            due = time.monotonic() + self.interval
            await self.refresh()
            self.wall_seconds = time.monotonic() - started
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await self.refresh(final=True)
        self.wall_seconds = time.monotonic() - started
        self._view.close(self.state)

    async def refresh(self, *, final: bool = False) -> PreviewState:
        """Read the recorder once and update the view (the quality figures once a second)."""
        pipeline = self.recorder.pipeline
        jpeg, cpu = None, 0.0
        still_before = pipeline.stats.still_seconds if pipeline is not None else 0.0
        if pipeline is not None and self._view.pictures:
            future = pipeline.still(self.width)
            try:  # the next tick's; none comes once the pipeline stopped
                frame = await asyncio.wait_for(asyncio.wrap_future(future), 1.0)
            except asyncio.TimeoutError:
                frame = None
            if frame is not None:
                jpeg, cpu = await asyncio.to_thread(_jpeg, frame, self.jpeg_quality)
                self.stills += 1
            cpu += pipeline.stats.still_seconds - still_before
        loop_started = time.thread_time()
        p = self.recorder.progress()
        now = time.monotonic()
        if final or self._report is None or now - self._report_at >= QUALITY_EVERY:
            self._report, self._report_at = self.recorder.quality(), now
        report = self._report
        state = PreviewState(p.status, p.elapsed, p.size, p.fps, audio_levels(self.recorder, report), report)
        state.jpeg = jpeg if jpeg is not None else (self.state.jpeg if self.state is not None else None)
        self._view.update(state, new_picture=jpeg is not None)
        self.state = state
        self.refreshes += 1
        self.cpu_seconds += cpu + time.thread_time() - loop_started
        return state


class _TextView:
    """Plain text: one line, rewritten in place on a terminal, else a line every few seconds."""

    pictures = False

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0

    def update(self, state: PreviewState, new_picture: bool) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + state.line() + "\x1b[K")
        elif now - self._last >= self.every:
            self.stream.write(state.line() + "\n")
        else:
            return
        self._last = now
        self.stream.flush()

    def close(self, state: PreviewState | None) -> None:
        if state is None:
            return
        lines = ["" if self.tty else state.line(), *state.quality_lines()]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class _WidgetView:
    """ipywidgets: the still, a status line, a meter per audio input, the quality figures."""

    pictures = True

    def __init__(self, egress_id: str, width: int) -> None:
        import ipywidgets as w  # the notebook extra

        self._w = w
        self.title = egress_id
        self.image = w.Image(format="jpeg", layout=w.Layout(width=f"{width}px"))
        self.status = w.HTML()
        self.meters = w.VBox()
        self.quality = w.HTML()
        self._meters: dict[str, tuple[Any, Any]] = {}
        self.box = w.VBox([self.status, self.image, self.meters, self.quality])

    def update(self, state: PreviewState, new_picture: bool) -> None:
        if new_picture and state.jpeg is not None:
            self.image.value = state.jpeg
        self.status.value = (
            f"<b>{html.escape(self.title)}</b> {html.escape(state.status)} · {state.elapsed:.1f} s · "
            f"{state.size / 1e6:.2f} MB · {state.fps:.1f} fps"
        )
        for name, db in state.levels.items():
            bar, label = self._meters.get(name) or self._add_meter(name)
            bar.value = db - FLOOR_DB
            bar.bar_style = "danger" if db > -3 else "success" if db > -40 else "info"
            label.value = f"{db:.0f} dBFS"
        lines = state.quality_lines()
        self.quality.value = "<br>".join(html.escape(line) for line in lines)

    def _add_meter(self, name: str) -> tuple[Any, Any]:
        w = self._w
        bar = w.FloatProgress(min=0.0, max=-FLOOR_DB, description=name[:24],
                              style={"description_width": "initial"})  # fmt: skip
        label = w.Label()
        self._meters[name] = bar, label
        self.meters.children = (*self.meters.children, w.HBox([bar, label]))
        return bar, label

    def close(self, state: PreviewState | None) -> None:
        if state is not None:
            self.update(state, new_picture=False)
