"""A web page as a source: Chromium (Debian's, driven by Playwright) rendering at the canvas size.

Video comes from the DevTools screencast (JPEG frames, decoded on the encode thread only when a
tick uses them); audio from an init script that routes every ``AudioContext``'s output through a
capture node and hands 16-bit PCM to Python. The page signals the start and end of the
recording by logging ``START_RECORDING`` / ``END_RECORDING`` to the console, as LiveKit's
``@livekit/egress-sdk`` does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from ..errors import SourceError
from ..media.frames import fit_on_canvas
from ..media.timeline import AudioInput, VideoInput

log = logging.getLogger("pyegress.web")

START_SIGNAL = "START_RECORDING"
END_SIGNAL = "END_RECORDING"

#: Chromium flags: headless, no sandbox (root in containers), and nothing that calls home.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--autoplay-policy=no-user-gesture-required",
)

# Routes every AudioContext's output through a ScriptProcessor that sends interleaved stereo
# int16 PCM (48 kHz, base64) to Python; the page still plays through the real destination.
_AUDIO_CAPTURE_JS = r"""
(() => {
  const Base = window.AudioContext || window.webkitAudioContext;
  if (!Base || Base.__pyegress) return;
  const realDestination = Object.getOwnPropertyDescriptor(BaseAudioContext.prototype, 'destination').get;
  class Captured extends Base {
    constructor(options) {
      super(Object.assign({}, options || {}, {sampleRate: 48000}));
      const tap = this.createGain();
      const proc = this.createScriptProcessor(1024, 2, 2);
      tap.connect(proc);
      proc.connect(realDestination.call(this));
      proc.onaudioprocess = (e) => {
        const l = e.inputBuffer.getChannelData(0), r = e.inputBuffer.getChannelData(1);
        const pcm = new Int16Array(l.length * 2);
        for (let i = 0; i < l.length; i++) {
          pcm[2 * i] = Math.max(-1, Math.min(1, l[i])) * 32767;
          pcm[2 * i + 1] = Math.max(-1, Math.min(1, r[i])) * 32767;
        }
        const bytes = new Uint8Array(pcm.buffer);
        let text = '';
        for (let i = 0; i < bytes.length; i += 0x8000) {
          text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        }
        window.__pyegressPcm(btoa(text));
      };
      Object.defineProperty(this, 'destination', {get: () => tap});
    }
  }
  Captured.__pyegress = true;
  window.AudioContext = Captured;
  window.webkitAudioContext = Captured;
})();
"""


def find_chromium() -> str:
    """Debian's Chromium (``PYEGRESS_CHROMIUM`` overrides); never a downloaded browser."""
    for candidate in (os.environ.get("PYEGRESS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SourceError("chromium: not installed (apt-get install chromium, or set PYEGRESS_CHROMIUM)")


class JpegFrame:
    """A screencast frame, decoded and fitted only when the encode thread draws it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def render(self, width: int, height: int) -> av.VideoFrame:
        codec = av.CodecContext.create("mjpeg", "r")
        frames = codec.decode(av.Packet(self.data))
        if not frames:
            raise ValueError("undecodable screencast frame")
        frame = frames[0].reformat(format="yuv420p")
        return fit_on_canvas(frame, width, height)


class PageSource:
    """One page in its own browser (context), captured at ``width`` x ``height``."""

    def __init__(self, url: str, width: int, height: int, *, video: bool, audio: bool) -> None:
        self.url, self.width, self.height = url, width, height
        self.want_video, self.want_audio = video, audio
        self.video_sink: VideoInput[object] | None = None
        self.audio_sink: AudioInput | None = None
        self.started = asyncio.Event()
        self.on_end: Callable[[str], None] = lambda reason: None
        self.crashed = ""
        self._pw: Any = None
        self._browser: Any = None
        self._page: Any = None
        self._cdp: Any = None

    async def open(self) -> None:
        """Launch Chromium, open the page and start capturing (media is dropped until sinks exist)."""
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        try:
            self._browser = await self._pw.chromium.launch(
                executable_path=find_chromium(), headless=True, args=list(CHROMIUM_FLAGS)
            )
            context = await self._browser.new_context(viewport={"width": self.width, "height": self.height})
            page = self._page = await context.new_page()
            if self.want_audio:
                await page.expose_binding("__pyegressPcm", self._pcm)
                await page.add_init_script(_AUDIO_CAPTURE_JS)
            page.on("console", self._console)
            page.on("crash", lambda *_: self._crash("the page crashed"))
            page.on("close", lambda *_: self.on_end("page closed"))
            await page.goto(self.url, wait_until="load", timeout=30_000)
            if self.want_video:
                self._cdp = await context.new_cdp_session(page)
                self._cdp.on("Page.screencastFrame", self._frame)
                await self._cdp.send(
                    "Page.startScreencast",
                    {"format": "jpeg", "quality": 85, "maxWidth": self.width, "maxHeight": self.height},
                )
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(f"url: cannot open {self.url!r} in Chromium: {e}") from e

    def _console(self, msg: Any) -> None:
        text = str(msg.text)
        if START_SIGNAL in text:
            self.started.set()
        elif END_SIGNAL in text:
            self.on_end("the page sent END_RECORDING")

    def _crash(self, reason: str) -> None:
        self.crashed = reason
        self.on_end(reason)

    def _frame(self, params: dict[str, Any]) -> None:
        if self.video_sink is not None:
            self.video_sink.push(JpegFrame(base64.b64decode(params["data"])), time.monotonic())
        if self._cdp is not None:
            ack = self._cdp.send("Page.screencastFrameAck", {"sessionId": params["sessionId"]})
            asyncio.ensure_future(ack).add_done_callback(_ignore)

    def _pcm(self, _source: Any, data: str) -> None:
        if self.audio_sink is not None:
            pcm = np.frombuffer(base64.b64decode(data), np.int16).reshape(-1, 2)
            self.audio_sink.push(pcm, time.monotonic())

    async def close(self) -> None:
        """Close the browser; the Chromium processes are always reaped."""
        with contextlib.suppress(Exception):
            if self._browser is not None:
                await asyncio.wait_for(self._browser.close(), 10)
        with contextlib.suppress(Exception):
            if self._pw is not None:
                await asyncio.wait_for(self._pw.stop(), 10)
        self._browser = self._pw = self._page = self._cdp = None


def _ignore(fut: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        fut.exception()
