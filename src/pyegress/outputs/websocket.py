"""WebSocket output (track egress): raw PCM in binary frames, mute changes in text frames.

Frames carry interleaved ``pcm_s16le`` at 48 kHz (``channels``: 2 by default, as the timeline
holds it, or 1 for a mono downmix), one frame per timeline tick (20 ms for audio-only
egress). Mute changes are sent as ``{"muted": true}`` / ``{"muted": false}``.

Design: the PCM is produced on the event loop (the timeline tick runs there) and needs no
encoding, so it is delivered on the loop too: ``write_pcm`` only puts bytes on a bounded
asyncio queue and one sender task writes them to the socket. Nothing waits on a thread, and
a slow receiver costs at most the queue (about 5 s) before frames are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import aiohttp
import av
import numpy as np
from livekit.protocol import egress as pe

from ..redaction import redact_url, scrub, url_secrets
from .base import PcmOutput

log = logging.getLogger("pyegress.outputs.websocket")

_CLOSE = object()


class WebSocketOutput(PcmOutput):
    """Sends the track's PCM to ``url``; the connection closes when the egress ends."""

    streams_live = True  # a paused egress sends silence

    def __init__(
        self,
        name: str,
        url: str,
        *,
        loop: asyncio.AbstractEventLoop,
        channels: int = 2,
        connect_timeout: float = 10.0,
        queue_frames: int = 250,
        report: bool = False,
    ) -> None:
        super().__init__(name)
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        self.url = url
        self.report = report
        self._result: pe.StreamInfo | None = None
        self.channels = channels
        self.connect_timeout = connect_timeout
        self.bytes_sent = 0
        self._dropped = 0
        self.muted = False
        self._loop = loop
        self._queue: asyncio.Queue[bytes | str | object] = asyncio.Queue(maxsize=queue_frames)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._sender: asyncio.Task[None] | None = None

    # --- opening (called on a worker thread by Pipeline.open) ----------------------------

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
        fut.result(self.connect_timeout + 1.0)

    async def _connect(self) -> None:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url, timeout=aiohttp.ClientWSTimeout(ws_close=5.0), autoping=True
            )
        except Exception:
            await self._session.close()
            self._session = None
            raise
        self._sender = asyncio.get_running_loop().create_task(self._send_loop(), name="pyegress-websocket")

    # --- event loop ------------------------------------------------------------------------

    def write_pcm(self, pcm: np.ndarray, t: float) -> None:
        if self._ws is None:
            return
        data = pcm if self.channels == 2 else pcm.mean(axis=1, dtype=np.int32).astype(np.int16)
        self._offer(np.ascontiguousarray(data, dtype="<i2").tobytes())
        self._track_end("audio", t + len(pcm) / 48000)

    @property
    def frames_dropped(self) -> int:
        """PCM frames not sent: the receiver was too slow (the queue was full)."""
        return self._dropped

    def set_muted(self, muted: bool) -> None:
        """Tell the receiver the track was muted or unmuted (sent in order with the PCM)."""
        if muted != self.muted:
            self.muted = muted
            self._offer(json.dumps({"muted": muted}), force=True)

    def _offer(self, item: bytes | str | object, *, force: bool = False) -> None:
        if self._queue.full():
            if not force:
                self._dropped += 1
                return
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()  # make room for a control message
                self._dropped += 1
        self._queue.put_nowait(item)

    async def _send_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while True:
                item = await self._queue.get()
                if item is _CLOSE:
                    break
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                    self.bytes_sent += len(item)
                elif isinstance(item, str):
                    await ws.send_str(item)
        except Exception as e:
            self.fail(f"websocket: {e or type(e).__name__}")
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    def close(self) -> None:
        """End after what is queued (called on the encode thread; the work happens on the loop)."""
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(lambda: self._offer(_CLOSE, force=True))

    async def finish(self) -> None:
        """Wait for the queue to go out and the close handshake (bounded), then drop the session."""
        if self._sender is not None:
            if not self._sender.done():
                self._offer(_CLOSE, force=True)
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), 10.0)
            except asyncio.TimeoutError:
                self._sender.cancel()
                self.fail("websocket: the receiver did not take the end of the stream in time")
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def size(self) -> int:
        return self.bytes_sent

    def attach(self, info: pe.EgressInfo, started_at: int) -> None:
        """With ``report`` (the unified request's ``StreamOutput``), an entry in
        ``stream_results`` as LiveKit gives it; a track egress's ``websocket_url`` has none."""
        if self.report:
            self._result = info.stream_results.add(url=redact_url(self.url), started_at=started_at)
            self.refresh()

    def refresh(self, ended_at: int | None = None) -> None:
        r = self._result
        if r is None:
            return
        ended = bool(ended_at) or self.failed
        info = pe.StreamInfo
        r.status = info.FAILED if self.failed else info.FINISHED if ended else info.ACTIVE
        r.error = scrub(self.error, url_secrets(self.url))
        if ended and not r.ended_at:
            r.ended_at = ended_at or time.time_ns()
            r.duration = r.ended_at - r.started_at
