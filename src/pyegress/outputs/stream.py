"""RTMP(S) and SRT output: one encode multicast to many URLs, each on its own thread and connection.

Every URL is a :class:`StreamSink`: a bounded packet queue and a thread that muxes FLV and
sends it. The encode thread only copies each packet once and offers it to every sink without
ever blocking; a sink that falls behind drops packets and resumes at the next key frame. A
dropped connection is retried with exponential backoff (sending resumes at a key frame),
up to ``max_retries`` failures in a row; then that URL is FAILED and the others go on.

Connections are opened through FFmpeg's own ``rtmp``/``rtmps`` protocols; ``srt://`` URLs get
MPEG-TS sent by libsrt from this process (:mod:`pyegress.outputs.srt`). PyAV opens output
URLs without any timeout, so when the wheel's libavformat is reachable with ``ctypes`` the
sink opens the connection itself (:mod:`pyegress.compat.avio`: ``rw_timeout`` plus an interrupt
callback, so a stalled server or a removal never hangs a thread) and PyAV writes FLV into it.

Stream keys never appear in clear outside this module: URLs are shown as
``rtmp://host/app/{ab...yz}`` (:func:`pyegress.redaction.redact_url`) and error text is
scrubbed of the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import av
from livekit.protocol import egress as pe

from ..compat.avio import AvioWriter, get_avio
from ..config import StreamURL
from ..media.encoder import EncodedPacket
from ..media.encoding import AudioEncoding, VideoEncoding
from ..redaction import remember, scrub, url_secrets
from .base import PacketOutput
from .srt import SrtSender
from .twitch import ingest_url

log = logging.getLogger("pyegress.outputs.stream")

ACTIVE, FINISHED, FAILED = pe.StreamInfo.ACTIVE, pe.StreamInfo.FINISHED, pe.StreamInfo.FAILED


# --- one destination -------------------------------------------------------------------------


class StreamSink:
    """One URL of a stream output: queue, thread, connection, and its StreamInfo state."""

    def __init__(self, owner: StreamOutput, url: StreamURL) -> None:
        self.owner = owner
        self.url = url
        self.redacted = url.redacted
        remember(self, *url_secrets(url.url))  # also out of the logs of FFmpeg's errors
        self.status = ACTIVE
        self.error = ""
        self.retries = 0
        self.started_at = time.time_ns()
        self.ended_at = 0
        self.last_retry_at = 0
        self.sent_from: float | None = None  # media time of the first and last packet sent
        self.sent_to = 0.0
        self.dropped = 0  # packets not queued: the queue was full (encode thread)
        self.stale = 0  # packets queued while disconnected, thrown away (sink thread)
        self.result: pe.StreamInfo | None = None  # its entry in EgressInfo (event loop only)
        self._queue: queue.Queue[EncodedPacket | None] = queue.Queue(maxsize=owner.queue_packets)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._skip_to_key = False
        self._failures = 0  # connection failures in a row (the sink's thread)
        self._thread = threading.Thread(target=self._run, name=f"pyegress-out {self.redacted}", daemon=True)
        self._container: av.container.OutputContainer | None = None
        self._writer: io.RawIOBase | None = None
        self._streams: dict[str, av.stream.Stream] = {}

    def start(self) -> None:
        self._thread.start()

    # producer side (encode thread): never blocks
    def offer(self, item: EncodedPacket) -> None:
        if self.status == FAILED or self._stop.is_set():
            return
        if self._skip_to_key:
            if self.owner.has_video and not (item.kind == "video" and item.keyframe):
                self.dropped += 1
                return
            self._skip_to_key = False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            self._skip_to_key = True

    def finish(self) -> None:
        """Send what is queued, then end (non-blocking; see :meth:`join`)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._queue.full():  # no room for the end marker: abort rather than wait
            self._abort.set()

    def join(self, timeout: float) -> None:
        """Wait for the thread; past ``timeout`` abort the connection and wait a little more."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(2.0)
        if self._thread.is_alive():
            self.status, self.error = FAILED, "the connection did not close in time"
            self.ended_at = self.ended_at or time.time_ns()

    # the sink's thread
    def _scrub(self, text: str) -> str:
        return scrub(text.replace(self.url.url, self.redacted), url_secrets(self.url.url))

    def _connect(self) -> None:
        url = ingest_url(self.url.url)  # twitch:// becomes Twitch's ingest (looked up here, off the loop)
        api = get_avio()
        fmt, options = "flv", {"flvflags": "no_duration_filesize"}
        if url.startswith("srt://"):  # MPEG-TS sent through libsrt (PyAV has no SRT)
            self._writer = SrtSender(url, rw_timeout=self.owner.rw_timeout, abort=self._abort)
            target: Any = self._writer
            fmt, options = "mpegts", {}
        elif api is not None:
            self._writer = AvioWriter(api, url, rw_timeout=self.owner.rw_timeout, abort=self._abort)
            target = self._writer
        else:
            target = url
        container = av.open(target, "w", format=fmt, options=options)
        self._container = container
        self._streams = {}
        with self.owner.template_lock:
            for kind, tmpl in self.owner.templates.items():
                self._streams[kind] = container.add_stream_from_template(tmpl)
        container.start_encoding()

    def _disconnect(self, *, graceful: bool) -> None:
        container, self._container = self._container, None
        writer, self._writer = self._writer, None
        if container is not None:
            if not graceful:
                self._abort.set()  # make FFmpeg give up at once instead of writing a trailer
            with contextlib.suppress(Exception):
                container.close()
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        if not self._stop.is_set():
            self._abort.clear()

    def _pump(self) -> None:
        container = self._container
        assert container is not None
        need_key = self.owner.has_video
        while True:
            item = self._queue.get()
            if item is None:
                return
            if need_key:
                if item.kind != "video" or not item.keyframe:
                    continue
                need_key = False
            stream = self._streams.get(item.kind)
            if stream is None:
                continue
            container.mux(item.to_av(stream))
            if self._failures:
                self._connected()
            if item.pts is not None:
                self.sent_from = item.start if self.sent_from is None else self.sent_from
                self.sent_to = max(self.sent_to, item.end)

    def _drain(self) -> None:
        """Drop what queued up while disconnected (stale for a live stream), keep an end marker."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._queue.put_nowait(None)
                return
            self.stale += 1

    def _connected(self) -> None:
        """A connection that opened ends the run of failures."""
        if self._failures:
            log.info("stream %s reconnected", self.redacted)
            self._failures = 0

    def _run(self) -> None:
        while True:
            try:
                self._connect()
                self._connected()
                self._pump()
                self._disconnect(graceful=True)
                break
            except Exception as e:  # any failure of this URL stays on this URL
                self._disconnect(graceful=False)
                if self._stop.is_set() and (self._abort.is_set() or self._queue.empty()):
                    break
                self._failures = failures = self._failures + 1
                self.error = self._scrub(str(e)) or type(e).__name__
                if failures > self.owner.max_retries:
                    self.status = FAILED
                    log.error("stream %s failed: %s", self.redacted, self.error)
                    break
                self.retries += 1
                self.last_retry_at = time.time_ns()
                delay = min(self.owner.backoff * 2 ** (failures - 1), self.owner.max_backoff)
                log.warning(
                    "stream %s: %s; retry %d in %.1f s", self.redacted, self.error, self.retries, delay
                )
                self.owner._changed()
                self._stop.wait(delay)
                self._drain()
        self.ended_at = time.time_ns()
        if self.status != FAILED:
            self.status = FINISHED
        self.owner._sink_ended()

    @property
    def duration(self) -> float:
        return self.sent_to - self.sent_from if self.sent_from is not None else 0.0

    def fill(self, info: pe.StreamInfo) -> None:
        """Copy this sink's state into its StreamInfo (event loop)."""
        info.url = self.redacted
        info.status = self.status  # type: ignore[assignment]
        info.error = self.error if self.status == FAILED or self.retries else ""
        info.retries = self.retries
        info.last_retry_at = self.last_retry_at
        info.started_at = self.started_at
        info.ended_at = self.ended_at if self.status != ACTIVE else 0
        info.duration = int(self.duration * 1e9)


class StreamOutput(PacketOutput):
    """Streams one encode to every URL at once; URLs can be added and removed while live."""

    streams_live = True  # a paused egress keeps sending the slate

    #: Failures in a row before a URL is FAILED; backoff doubles from ``backoff`` to ``max_backoff``.
    max_retries = 5
    backoff = 1.0
    max_backoff = 10.0
    #: Seconds a connect, send or close may stall before the connection counts as dropped.
    rw_timeout = 5.0
    #: Packets a sink may queue (about 5 s of 30 fps video with 50 audio packets/s).
    queue_packets = 400

    def __init__(
        self,
        name: str,
        urls: Sequence[StreamURL],
        *,
        video: VideoEncoding | None,
        audio: AudioEncoding | None,
    ) -> None:
        super().__init__(name, video, audio)
        self._initial = list(urls)
        self.sinks: list[StreamSink] = []  # every sink ever started, removed ones included
        self.templates: dict[str, av.stream.Stream] = {}
        self.template_lock = threading.Lock()
        self._holder: av.container.OutputContainer | None = None
        self._info: pe.EgressInfo | None = None
        self._started_at = 0
        self._closed = False

    @property
    def has_video(self) -> bool:
        return "video" in self.templates

    @property
    def frames_dropped(self) -> int:
        """Packets (video and audio frames) that did not reach a URL, over every sink so far."""
        return sum(s.dropped + s.stale for s in list(self.sinks))

    @property
    def live(self) -> list[StreamSink]:
        """Sinks still sending (or retrying)."""
        return [s for s in list(self.sinks) if s.status == ACTIVE and not s._stop.is_set()]

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        # private copies of the codec parameters, read by the sink threads when they connect
        self._holder = av.open(io.BytesIO(), "w", format="flv")
        if video is not None and self.video is not None:
            self.templates["video"] = self._holder.add_stream_from_template(video)
        if audio is not None and self.audio is not None:
            self.templates["audio"] = self._holder.add_stream_from_template(audio)
        if not self.templates:
            raise ValueError("nothing to stream")
        for url in self._initial:
            self._start_sink(url)

    def _start_sink(self, url: StreamURL) -> StreamSink:
        sink = StreamSink(self, url)
        self.sinks = [*self.sinks, sink]  # copy-on-write: the encode thread iterates without a lock
        sink.start()
        return sink

    def write(self, packet: EncodedPacket) -> None:
        if packet.kind not in self.templates:
            return
        self._track_end(packet.kind, packet.end)
        for sink in self.sinks:
            sink.offer(packet)  # immutable: every sink builds its own av.Packet

    def close(self) -> None:
        """Send what is queued everywhere, then close every connection (bounded wait)."""
        self._closed = True
        sinks = list(self.sinks)
        for s in sinks:
            s.finish()
        deadline = time.monotonic() + self.rw_timeout
        for s in sinks:
            s.join(max(0.1, deadline - time.monotonic()))
        if self._holder is not None:
            with contextlib.suppress(Exception):
                self._holder.close()

    def _sink_ended(self) -> None:
        sinks = list(self.sinks)
        if not self._closed and sinks and all(s.status == FAILED for s in sinks):
            self.fail("; ".join(f"{s.redacted}: {s.error}" for s in sinks))
        self._changed()

    # --- live changes (event loop) ---------------------------------------------------------

    def find(self, url_or_id: str) -> StreamSink | None:
        """The live sink of a URL (in clear or as shown redacted) or of a destination id."""
        for s in self.live:
            if url_or_id in (s.url.url, s.redacted) or (s.url.id and url_or_id == s.url.id):
                return s
        return None

    def add(self, url: StreamURL) -> StreamSink:
        """Start streaming to one more URL (from the next key frame)."""
        sink = self._start_sink(url)
        if self._info is not None:
            sink.result = self._info.stream_results.add()
            sink.fill(sink.result)
        return sink

    async def remove(self, sink: StreamSink) -> None:
        """Stop streaming to ``sink``'s URL; the other URLs are not touched."""
        sink.finish()
        await asyncio.to_thread(sink.join, self.rw_timeout)
        if sink.result is not None:
            sink.fill(sink.result)

    # --- results (event loop) --------------------------------------------------------------

    def attach(self, info: pe.EgressInfo, started_at: int) -> None:
        self._info = info
        for s in self.sinks:
            s.result = info.stream_results.add()
            s.fill(s.result)

    def refresh(self, ended_at: int | None = None) -> None:
        for s in list(self.sinks):
            if s.result is not None:
                s.fill(s.result)
