"""Wall-clock paced pipeline: timeline ticks → shared encoders (worker thread) → outputs.

It sits above ``media`` (timeline, encoders) and ``outputs``, and reads its inputs only
through the protocols of :mod:`pyegress.media.inputs`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np

from .media.encoder import AudioEncoder, EncodedPacket, Packet, VideoEncoder
from .media.encoding import AudioEncoding, VideoEncoding
from .media.frames import fit_on_canvas, solid_canvas, to_av
from .media.inputs import MIX_CHANNELS, MIX_RATE, AudioSource, Picture, Renderable, VideoSource
from .media.mixer import add_clipped
from .outputs.base import FrameOutput, Output, PacketOutput, PcmOutput
from .pauses import PauseClock

__all__ = ["MIX_CHANNELS", "MIX_RATE", "Pipeline", "PipelineStats"]

log = logging.getLogger("pyegress.pipeline")


@dataclass
class PipelineStats:
    """Progress counters, read by recorders and the CLI."""

    ticks: int = 0
    video_frames: int = 0
    audio_samples: int = 0
    backlog: int = 0
    encode_seconds: float = 0.0
    still_seconds: float = 0.0  # of ``encode_seconds``: scaling the stills previews asked for


#: Seconds the output runs behind the wall clock: a tick's media is read this long after its
#: instant, so audio that came late, or was placed earlier than it came to line up with its
#: camera (``sources.delays.MAX_ADVANCE``), still lands in place. 0.3 s: with the largest
#: advance, a chunk handled 90 ms late by a busy event loop is still read whole (at 0.15 s
#: with no advance, 40 ms); a live output is this much later, a file is not affected.
LATENCY = 0.3


class Pipeline:
    """Ticks at the output frame rate, hands each tick to one encode thread, feeds outputs.

    One encoder per distinct encoding, shared by every output that uses it. ``latency`` is how
    far behind the wall clock the output runs, so late audio still lands in place.
    """

    def __init__(
        self,
        *,
        outputs: Sequence[Output],
        video_input: VideoSource | None,
        audio_inputs: Sequence[AudioSource],
        fps: int = 30,
        latency: float = LATENCY,
    ) -> None:
        self.outputs = list(outputs)
        self._packets = [o for o in self.outputs if isinstance(o, PacketOutput)]
        self._frames = [o for o in self.outputs if isinstance(o, FrameOutput)]
        self._pcm = [o for o in self.outputs if isinstance(o, PcmOutput)]
        self.video_input = video_input
        self.audio_inputs = list(audio_inputs)
        self.fps = fps if video_input is not None else 50
        self.latency = latency
        self.stats = PipelineStats()
        self.t0 = 0.0
        self._video_enc: dict[VideoEncoding, VideoEncoder] = {}
        self._audio_enc: dict[AudioEncoding, AudioEncoder] = {}
        for out in self._packets:
            if out.video is not None and out.video not in self._video_enc:
                self._video_enc[out.video] = VideoEncoder(out.video)
            if out.audio is not None and out.audio not in self._audio_enc:
                self._audio_enc[out.audio] = AudioEncoder(out.audio, in_rate=MIX_RATE)
        self._queue: queue.Queue[tuple[int, Picture | None, np.ndarray | None, bool] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="pyegress-encode", daemon=True)
        self._last_src: Picture | None = None
        self._fitted: dict[tuple[int, int], av.VideoFrame] = {}
        self._last_av: av.VideoFrame | None = None
        self._stills: collections.deque[tuple[int, concurrent.futures.Future[av.VideoFrame | None]]]
        self._stills = collections.deque()
        self.last_pcm: list[np.ndarray] = []  # each audio source's chunk of the latest tick
        self.pauses = PauseClock(self.fps)  # pause / resume (:mod:`pyegress.pauses`)
        self._still: Picture | None = None  # the last frame recorded (a "still" slate)
        self._cuts: dict[int, float] = {}  # per output: ticks cut so far that it was told of

    @property
    def encoder_count(self) -> int:
        """Distinct encoders in use (one per distinct encoding)."""
        return len(self._video_enc) + len(self._audio_enc)

    def still(self, width: int) -> concurrent.futures.Future[av.VideoFrame | None]:
        """The picture of the next encoded tick as composited, scaled to ``width`` (height by
        its aspect) in RGB: taken on the encode thread between two ticks, so never half drawn,
        from the frame the tick already made (no decode, no encode). None without video."""
        future: concurrent.futures.Future[av.VideoFrame | None] = concurrent.futures.Future()
        if self.video_input is None:
            future.set_result(None)
        else:
            self._stills.append((width, future))
        return future

    def encoders(self, out: Output) -> tuple[VideoEncoder | None, AudioEncoder | None]:
        """The encoders feeding ``out`` (none for frame and PCM outputs)."""
        if not isinstance(out, PacketOutput):
            return None, None
        video = self._video_enc.get(out.video) if out.video is not None else None
        return video, self._audio_enc.get(out.audio) if out.audio is not None else None

    def open(self) -> None:
        """Open every output; one that cannot open is marked failed, the others go on."""
        for out in self.outputs:
            packets = isinstance(out, PacketOutput)
            v = self._video_enc[out.video].stream if packets and out.video is not None else None
            a = self._audio_enc[out.audio].stream if packets and out.audio is not None else None
            try:
                out.open(v, a)
            except Exception as e:
                out.fail(e)

    async def run(self, t0: float, stop: asyncio.Event) -> None:
        """Tick from monotonic ``t0`` until ``stop`` is set, then drain and close outputs.

        Ticks go on until the media reaches the instant ``stop`` was set at (``latency`` more):
        a recording holds everything up to its stop, not up to ``latency`` before it."""
        self.t0 = t0
        self.pauses.start(t0)
        self._thread.start()
        k = 0
        end: float | None = None  # when stop was set
        try:
            while True:
                if end is None and stop.is_set():
                    end = time.monotonic()
                if end is not None and t0 + k / self.fps >= end:
                    break
                delay = t0 + k / self.fps + self.latency - time.monotonic()
                if delay > 0 and end is None:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        continue  # stopped: ticked on to the stop's instant
                    except asyncio.TimeoutError:
                        pass
                elif delay > 0:
                    await asyncio.sleep(delay)
                else:  # behind (the loop was busy): frames that came meanwhile are pushed first
                    await asyncio.sleep(0)
                self._tick(k)
                k += 1
                self.pauses.next_tick = k
        finally:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)

    def when_output(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the output reaches the media of now (``latency`` from now): a
        message sent beside the media (a mute change) lands in order with it."""
        asyncio.get_running_loop().call_later(self.latency, fn)

    def _tick(self, k: int) -> None:
        tau = k / self.fps
        fill = self.pauses.fill_at(k)
        frame = self.video_input.at(self.t0 + tau) if self.video_input is not None else None
        if fill is None:
            self._still = frame
        else:  # paused: the slate (the inputs are still read, so their buffers move on)
            frame = self._still if fill == "still" else None
        pcm = None
        if self.audio_inputs:
            start = round(tau * MIX_RATE)
            count = round((k + 1) / self.fps * MIX_RATE) - start
            self.last_pcm = [a.read(start, count) for a in self.audio_inputs]
            pcm = add_clipped(self.last_pcm)
            if fill is not None:
                pcm = np.zeros_like(pcm)
            self._feed_pcm(pcm, tau)
        self._queue.put((k, frame, pcm, self.pauses.key_at(k)))
        self.stats.ticks = k + 1
        self.stats.backlog = self._queue.qsize()
        if self.stats.backlog > 2 * self.fps and k % self.fps == 0:
            log.warning("encoding is %d ticks behind real time", self.stats.backlog)

    # --- worker thread -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            started = time.thread_time()
            try:
                self._encode(*item)
            except Exception as e:
                log.exception("encoding failed")
                for out in self.outputs:
                    out.fail(e)
            self.stats.encode_seconds += time.thread_time() - started
        self._flush()

    def _canvas(self, src: Picture | None, enc: VideoEncoding) -> av.VideoFrame:
        """The canvas for this tick; scaled once per new source frame, black before the first."""
        if src is not self._last_src:
            self._last_src = src
            self._fitted.clear()
            if isinstance(src, Renderable):  # a composite scene: drawn here, on the encode thread
                self._last_av = src.render(enc.width, enc.height)
            elif src is not None:
                self._last_av = src if isinstance(src, av.VideoFrame) else to_av(src)
        key = (enc.width, enc.height)
        if key not in self._fitted:
            if src is None or self._last_av is None:
                self._fitted[key] = av.VideoFrame.from_ndarray(
                    solid_canvas(enc.width, enc.height), format="yuv420p"
                )
            else:
                self._fitted[key] = fit_on_canvas(self._last_av, enc.width, enc.height)
        return self._fitted[key]

    def _feed_pcm(self, pcm: np.ndarray, t: float) -> None:
        """Raw PCM outputs (WebSocket) take the tick on the loop: no encode, nothing to offload."""
        for out in self._pcm:
            if not out.failed:
                try:
                    out.write_pcm(pcm, t)
                except Exception as e:
                    out.fail(e)

    def _feed_frames(self, k: int, frame: Picture | None) -> None:
        """Raw frame outputs (images) take the canvas of the ticks they ask for (on the recorded
        timeline: none of a cut span)."""
        if self.pauses.fill_at(k) == "cut":
            return
        t = self.pauses.media_tick(k) / self.fps
        for out in self._frames:
            if not out.failed and out.wants_frame(t):
                try:
                    out.write_frame(self._canvas(frame, out.canvas), t)
                except Exception as e:
                    out.fail(e)

    def _encode(self, k: int, frame: Picture | None, pcm: np.ndarray | None, key: bool = False) -> None:
        for enc, encoder in self._video_enc.items():
            packets = encoder.encode(self._canvas(frame, enc), k, key=key)
            self._deliver(packets, "video", enc, None)
        self.stats.video_frames = k + 1 if self._video_enc else 0
        self._feed_frames(k, frame)
        while self._stills:
            self._take_still(*self._stills.popleft())
        if pcm is not None:
            for aenc, aencoder in self._audio_enc.items():
                self._deliver(aencoder.encode(pcm), "audio", None, aenc)
            self.stats.audio_samples += len(pcm)

    def _deliver(
        self,
        packets: list[Packet],
        kind: str,
        venc: VideoEncoding | None,
        aenc: AudioEncoding | None,
    ) -> None:
        if not packets:
            return
        encoded = [EncodedPacket.of(kind, p) for p in packets]
        for out in self._packets:
            if (
                out.failed
                or (kind == "video" and out.video != venc)
                or (kind == "audio" and out.audio != aenc)
            ):
                continue
            try:
                for p in encoded:
                    q = p if out.streams_live else self.pauses.cut(p)
                    if q is None:
                        continue
                    if q is not p:
                        self._tell_cut(out, p)
                    out.write(q)
            except Exception as e:
                out.fail(e)

    def _take_still(self, width: int, future: concurrent.futures.Future[av.VideoFrame | None]) -> None:
        src = self._last_av  # what this tick's canvas was made from (drawn on this thread)
        if not future.set_running_or_notify_cancel():  # the asker gave up
            return
        if src is None:
            future.set_result(None)
            return
        started = time.thread_time()
        height = max(2, round(width * src.height / src.width / 2) * 2)
        still = src.reformat(width, height, "rgb24", interpolation="FAST_BILINEAR")  # half the cost
        self.stats.still_seconds += time.thread_time() - started
        future.set_result(still)

    def _tell_cut(self, out: Output, packet: EncodedPacket) -> None:
        """The first packet after a cut goes to ``out``: let it mark the cut (HLS)."""
        cut = self.pauses.cut_before(packet.start * self.fps + 1e-6)
        if cut > self._cuts.get(id(out), 0):
            self._cuts[id(out)] = cut
            out.on_cut()

    def _flush(self) -> None:
        while self._stills:
            _, future = self._stills.popleft()
            if future.set_running_or_notify_cancel():
                future.set_result(None)
        for enc, encoder in self._video_enc.items():
            self._safe_flush(encoder.encode, "video", enc, None)
        for aenc, aencoder in self._audio_enc.items():
            self._safe_flush(aencoder.encode, "audio", None, aenc)
        for out in self.outputs:
            try:
                out.close()
            except Exception as e:
                out.fail(e)
        for video_encoder in self._video_enc.values():
            video_encoder.close()
        for audio_encoder in self._audio_enc.values():
            audio_encoder.close()

    def _safe_flush(
        self,
        encode: Callable[[None], list[Packet]],
        kind: str,
        venc: VideoEncoding | None,
        aenc: AudioEncoding | None,
    ) -> None:
        try:
            self._deliver(encode(None), kind, venc, aenc)
        except Exception as e:
            log.warning("flushing %s encoder failed: %s", kind, e)
