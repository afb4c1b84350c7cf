"""A web page as a source: Debian's Chromium, driven by Playwright, rendering at the canvas size.

One browser per page (its own throw-away profile), always reaped on close, and never outliving
the recorder process (:mod:`pyegress.sources.processes`). Two ways to capture the picture,
chosen by measurement (docs/performance.md, ``web-capture``):

* ``x11`` (default when Xvfb is installed): Chromium runs headful on its own Xvfb display
  and the screen is read at the output frame rate with FFmpeg's ``x11grab`` (PyAV);
* ``screencast``: headless Chromium's DevTools screencast (JPEG frames, decoded on the
  encode thread only when a tick uses them).

Audio comes from an init script that taps every ``AudioContext`` and media element
(:mod:`pyegress.sources.page_audio`). The page signals the start and end of the
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
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
import psutil

from ..errors import SourceError
from ..media.frames import fit_on_canvas, reformat
from ..media.inputs import Picture
from ..media.timeline import VideoInput
from ..redaction import redact_url, scrub
from . import collector
from .page_audio import AUDIO_CAPTURE_JS, PageAudio
from .page_playout import KEEP_RATE_JS, PLAYOUT_FLAGS, PLAYOUT_JS
from .processes import (
    PROFILE_PREFIX,
    browser_pids,
    browser_processes,
    find_chromium,
    new_profile,
    reap,
    start_xvfb,
    stop_process,
)
from .xdisplay import PagedDisplay

__all__ = ["LAYOUT_EVENT", "PROFILE_PREFIX", "PageAudio", "PageSource", "browser_pids", "find_chromium"]

log = logging.getLogger("pyegress.web")

START_SIGNAL = "START_RECORDING"
END_SIGNAL = "END_RECORDING"
#: The window event a template may listen to for ``update_layout`` (``detail`` is the layout).
LAYOUT_EVENT = "pyegress:layout"

#: Chromium flags: no sandbox (root in containers), no GPU, and nothing that calls home.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--hide-scrollbars",
    "--autoplay-policy=no-user-gesture-required",
)

#: What ``insecure`` adds (LiveKit Egress's two flags): no same-origin policy, mixed content runs.
INSECURE_FLAGS = ("--disable-web-security", "--allow-running-insecure-content")

#: How much later than its arrival in Python captured audio is placed on the timeline, so that
#: it lines up with the picture, which reaches the screen (and the grab) later than the sound
#: reaches the capture node. Measured with tests/pages/markers.html (flash + beep together).
AUDIO_LAG = {"x11": 0.036, "screencast": 0.030}


def default_capture() -> str:
    """``PYEGRESS_WEB_CAPTURE``, else ``x11`` when Xvfb is installed, else ``screencast``."""
    chosen = os.environ.get("PYEGRESS_WEB_CAPTURE", "")
    if chosen:
        return chosen
    return "x11" if shutil.which("Xvfb") else "screencast"


def host_rules(hosts: Sequence[str]) -> str:
    """``--host-resolver-rules`` that resolve only ``hosts`` (and loopback names)."""
    allowed = sorted({h for h in hosts if h} | {"localhost"})
    return "MAP * ~NOTFOUND, " + ", ".join(f"EXCLUDE {h}" for h in allowed)


class JpegFrame:
    """A screencast frame, decoded and fitted only when the encode thread draws it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def render(self, width: int, height: int) -> av.VideoFrame:
        codec = av.CodecContext.create("mjpeg", "r")
        frames = codec.decode(av.Packet(self.data))
        if not frames:
            raise ValueError("undecodable screencast frame")
        frame = reformat(frames[0])
        return fit_on_canvas(frame, width, height)


class PageSource:
    """One page in its own Chromium, captured at ``width`` x ``height`` and ``fps``.

    ``allow_hosts`` (None: any) limits the hosts the browser can resolve and request, e.g. the
    template's origin and the LiveKit server. ``insecure`` turns off the browser's web security
    (the same-origin policy: cross-origin requests without CORS headers succeed; http content in
    https pages runs), as LiveKit Egress's ``insecure`` does. ``on_end`` is called with a reason when the page
    sends ``END_RECORDING``, crashes or the browser goes away (``crashed`` then says why).
    """

    def __init__(
        self,
        url: str,
        width: int,
        height: int,
        *,
        video: bool,
        audio: bool,
        fps: int = 30,
        capture: str | None = None,
        allow_hosts: Sequence[str] | None = None,
        insecure: bool = False,
    ) -> None:
        self.url, self.width, self.height, self.fps = url, width, height, fps
        self.want_video, self.want_audio = video, audio
        self.capture = capture or default_capture()
        if self.capture not in ("x11", "screencast"):
            raise SourceError(f"capture: {self.capture!r} is not x11 or screencast")
        self.allow_hosts = list(allow_hosts) if allow_hosts is not None else None
        self.insecure = insecure
        self.video_sink: VideoInput[Picture] | None = None
        self.audio_sink: PageAudio | None = None
        self.started = asyncio.Event()
        self.on_end: Callable[[str], None] = lambda reason: None
        self.crashed = ""
        self.frames_grabbed = 0
        self._closing = False
        self._pw: Any = None
        self._context: Any = None
        self._page: Any = None
        self._cdp: Any = None
        self._xvfb: subprocess.Popen[bytes] | None = None
        self._screen: PagedDisplay | None = None
        self._display = ""
        self._profile = ""
        self._procs: set[psutil.Process] = set()
        self._grabber: threading.Thread | None = None
        self._stop_grab = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def page(self) -> Any:
        """The Playwright page (None before ``open`` and after ``close``)."""
        return self._page

    async def open(self) -> None:
        """Launch Chromium and load the page; media is dropped until ``start_capture``."""
        from playwright.async_api import async_playwright

        self._loop = asyncio.get_running_loop()
        executable = find_chromium()
        self._profile = new_profile()
        args = [*CHROMIUM_FLAGS, *PLAYOUT_FLAGS]
        if self.allow_hosts is not None:
            args.append(f"--host-resolver-rules={host_rules(self.allow_hosts)}")
        if self.insecure:
            args += INSECURE_FLAGS
        env = dict(os.environ)
        x11 = self.capture == "x11" and self.want_video
        if x11:
            # a little larger than the window, so that the window is exactly its size
            self._xvfb, self._display = await start_xvfb(self.width + 8, self.height + 8)
            try:
                self._screen = PagedDisplay(self._display)
                self._screen.set_rate(self.fps)
            except Exception as e:
                raise SourceError(f"capture: cannot pace the browser's display: {e}") from e
            env["DISPLAY"] = self._display
            args += ["--kiosk", f"--window-size={self.width},{self.height}", "--window-position=0,0"]
        try:
            self._pw = await async_playwright().start()
            self._context = await self._pw.chromium.launch_persistent_context(
                self._profile,
                executable_path=executable,
                headless=not x11,
                args=args,
                env=env,
                no_viewport=x11,
                viewport=None if x11 else {"width": self.width, "height": self.height},
                ignore_default_args=["--enable-automation"],
            )
            self._procs = browser_processes(self._profile)
            context = self._context
            context.on("close", lambda *_: self._gone("the browser closed"))
            if self.allow_hosts is not None:
                await context.route("**/*", self._filter)
            if self.want_audio:
                await context.expose_binding("__pyegressPcm", self._pcm)
                await context.add_init_script(AUDIO_CAPTURE_JS)
            await context.add_init_script(PLAYOUT_JS)
            if x11:  # the display refreshes at the output's rate only there (PagedDisplay)
                await context.add_init_script(KEEP_RATE_JS)
            page = self._page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", self._console)
            page.on("crash", lambda *_: self._gone("the page crashed"))
            page.on("pageerror", lambda e: log.warning("page error in %s: %s", redact_url(self.url), e))
            await page.goto(self.url, wait_until="load", timeout=30_000)
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(f"url: cannot open {redact_url(self.url)} in Chromium: {scrub(str(e))}") from e

    @property
    def paints_on_grid(self) -> bool:
        """Whether each picture captured is a paint of a display refreshing at the output's rate,
        stamped with when it was painted (x11 capture): its pictures lie on the output's grid
        (:class:`~pyegress.media.timeline.FrameSlots`)."""
        return self._screen is not None

    def start_capture(self, video: VideoInput[Picture] | None, audio: PageAudio | None) -> None:
        """Start feeding ``video`` (at ``fps``) and ``audio`` from the page."""
        self.video_sink, self.audio_sink = video, audio
        if video is None or self._page is None:
            return
        if self.capture == "x11":
            collector.hold()  # a full collection must not hold the grab past the next paint
            self._grabber = threading.Thread(target=self._grab, name="pyegress-x11grab", daemon=True)
            self._grabber.start()
        else:
            self._loop = asyncio.get_running_loop()
            self._loop.create_task(self._start_screencast())

    async def close(self) -> None:
        """Close the browser and its display; every Chromium process is reaped, whatever happened."""
        self._closing = True
        self._stop_grab.set()
        if self._grabber is not None:
            await asyncio.to_thread(self._grabber.join, 5)
            self._grabber = None
            collector.release()
        procs = self._procs | browser_processes(self._profile)
        with contextlib.suppress(Exception):
            if self._context is not None:
                await asyncio.wait_for(self._context.close(), 10)
        with contextlib.suppress(Exception):
            if self._pw is not None:
                await asyncio.wait_for(self._pw.stop(), 10)
        self._context = self._pw = self._page = self._cdp = None
        await asyncio.to_thread(reap, procs)
        if self._screen is not None:
            self._screen.close()
            self._screen = None
        if self._xvfb is not None:
            await asyncio.to_thread(stop_process, self._xvfb)
            self._xvfb = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)

    # --- browser events -------------------------------------------------------------------

    def _console(self, msg: Any) -> None:
        text = str(msg.text)
        log.debug("console %s: %s", msg.type, scrub(text[:500]))
        if START_SIGNAL in text:
            self.started.set()
        elif END_SIGNAL in text:
            self.on_end("the page sent END_RECORDING")

    def _gone(self, reason: str) -> None:
        if self._closing:
            return
        self.crashed = self.crashed or reason
        self.on_end(reason)

    async def _filter(self, route: Any) -> None:
        host = urllib.parse.urlsplit(route.request.url).hostname or ""
        if self.allow_hosts is not None and host and host not in self.allow_hosts and host != "localhost":
            log.info("blocked a request of %s to %s", redact_url(self.url), host)
            await route.abort("blockedbyclient")
        else:
            await route.continue_()

    def _pcm(self, _source: Any, context: int, data: str) -> None:
        sink = self.audio_sink
        if sink is not None:
            pcm = np.frombuffer(base64.b64decode(data), np.int16).reshape(-1, 2)
            sink.push(int(context), pcm, time.monotonic() + AUDIO_LAG[self.capture])

    # --- capture: Xvfb + x11grab ------------------------------------------------------------

    def _grab(self) -> None:
        """Read each picture Chromium paints into the video sink, stamped with when it was
        painted (thread). The display refreshes at the output's rate (:class:`PagedDisplay`), so
        a page that moves paints once per output frame and each paint takes its own slot on
        the timeline (:class:`~pyegress.media.timeline.FrameSlots`); nothing is read while the
        page is still. The first picture is read at once."""
        screen = self._screen
        period = 1.0 / self.fps
        try:
            container = av.open(
                f"{self._display}.0+0,0",
                format="x11grab",
                # read when told (a paint): never paced by x11grab (its clock only runs behind),
                # nothing kept from probing the stream at open (pictures of the past)
                options={
                    "framerate": "1000",
                    "fflags": "nobuffer",
                    "video_size": f"{self.width}x{self.height}",
                    "draw_mouse": "0",
                },
            )
        except Exception as e:
            self._from_thread(f"capture: cannot read the browser's display: {e}")
            return
        try:
            packets = container.demux(video=0)
            painted: float | None = time.monotonic()
            while not self._stop_grab.is_set():
                if painted is None and screen is not None:
                    painted = screen.next_paint(period, timeout=0.1)
                if painted is None:
                    continue
                frames = next(packets).decode()
                sink = self.video_sink
                if sink is not None and frames:
                    sink.push(reformat(frames[0]), painted)
                    self.frames_grabbed += 1
                painted = None
        except Exception as e:
            if not self._stop_grab.is_set():
                self._from_thread(f"capture: reading the browser's display failed: {e}")
        finally:
            container.close()

    def _from_thread(self, reason: str) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._gone, reason)

    # --- capture: DevTools screencast -------------------------------------------------------

    async def _start_screencast(self) -> None:
        try:
            self._cdp = await self._context.new_cdp_session(self._page)
            self._cdp.on("Page.screencastFrame", self._frame)
            await self._cdp.send(
                "Page.startScreencast",
                {"format": "jpeg", "quality": 85, "maxWidth": self.width, "maxHeight": self.height},
            )
        except Exception as e:
            self._gone(f"capture: cannot start the screencast: {e}")

    def _frame(self, params: dict[str, Any]) -> None:
        if self.video_sink is not None:
            # place the frame when Chromium captured it (metadata.timestamp, wall clock), not
            # when it reached us: the screencast's JPEG + DevTools hop adds 20-80 ms under load
            arrival = time.monotonic()
            captured = params.get("metadata", {}).get("timestamp")
            if captured:
                arrival -= min(0.5, max(0.0, time.time() - float(captured)))
            self.video_sink.push(JpegFrame(base64.b64decode(params["data"])), arrival)
            self.frames_grabbed += 1
        if self._cdp is not None:
            ack = self._cdp.send("Page.screencastFrameAck", {"sessionId": params["sessionId"]})
            asyncio.ensure_future(ack).add_done_callback(_ignore)


def _ignore(fut: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        fut.exception()
