"""A web page as a source: Debian's Chromium, driven by Playwright, rendering at the canvas size.

One browser process per page (its own throw-away profile), always reaped on close. Two ways to
capture the picture, chosen by measurement (docs/performance.md, ``web-capture``):

* ``x11`` (default when Xvfb is installed): Chromium runs headful on its own Xvfb display
  and the screen is read at the output frame rate with FFmpeg's ``x11grab`` (PyAV);
* ``screencast``: headless Chromium's DevTools screencast (JPEG frames, decoded on the
  encode thread only when a tick uses them).

Audio comes from an init script that routes every ``AudioContext``'s output and every playing
``<audio>`` / ``<video>`` element through a capture node, handing 48 kHz int16 PCM to Python
(headless Chromium has no sound device to record). The page signals the start and end of the
recording by logging ``START_RECORDING`` / ``END_RECORDING`` to the console, as LiveKit's
``@livekit/egress-sdk`` does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import SourceError
from ..media.frames import fit_on_canvas, reformat
from ..media.mixer import add_clipped
from ..media.timeline import AudioInput, VideoInput
from ..redaction import redact_url, scrub

log = logging.getLogger("pyegress.web")

START_SIGNAL = "START_RECORDING"
END_SIGNAL = "END_RECORDING"
#: Profiles are ``<tmp>/pyegress-chromium-<our pid>-*``: every process of our browsers says so.
PROFILE_PREFIX = "pyegress-chromium-"
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

#: How much later than its arrival in Python captured audio is placed on the timeline, so that
#: it lines up with the picture, which reaches the screen (and the grab) later than the sound
#: reaches the capture node. Measured with tests/pages/markers.html (flash + beep together).
AUDIO_LAG = {"x11": 0.058, "screencast": 0.030}

# Every AudioContext (the page's, and one for media elements) gets a capture tap in front of
# its destination: a ScriptProcessor that sends interleaved stereo int16 PCM (48 kHz, base64)
# to Python with the context's id. Media elements playing a MediaStream (WebRTC audio) are
# tapped with createMediaStreamSource, others with createMediaElementSource.
_AUDIO_CAPTURE_JS = r"""
(() => {
  const Base = window.AudioContext || window.webkitAudioContext;
  if (!Base || Base.__pyegress) return;
  const realDestination = Object.getOwnPropertyDescriptor(BaseAudioContext.prototype, 'destination').get;
  let contexts = 0;
  class Captured extends Base {
    constructor(options) {
      super(Object.assign({}, options || {}, {sampleRate: 48000}));
      const id = ++contexts;
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
        try { window.__pyegressPcm(id, btoa(text)); } catch (err) {}
      };
      Object.defineProperty(this, 'destination', {get: () => tap});
    }
  }
  Captured.__pyegress = true;
  window.AudioContext = Captured;
  window.webkitAudioContext = Captured;

  let elementContext = null;
  const tapped = new Map();  // element -> {stream, node}
  function tapElement(el) {
    if (!(el instanceof HTMLMediaElement)) return;
    const prev = tapped.get(el);
    const stream = el.srcObject;
    if (stream instanceof MediaStream) {
      const live = !el.muted && el.volume > 0 && stream.getAudioTracks().length > 0;
      if (prev && prev.stream === stream && !!prev.node === live) return;
      if (prev && prev.node) prev.node.disconnect();
      let node = null;
      if (live) {
        elementContext = elementContext || new Captured();
        node = elementContext.createMediaStreamSource(stream);
        node.connect(elementContext.destination);
      }
      tapped.set(el, {stream, node});
    } else if (!prev && (el.currentSrc || el.src)) {
      elementContext = elementContext || new Captured();
      const node = elementContext.createMediaElementSource(el);
      node.connect(elementContext.destination);
      tapped.set(el, {stream: null, node});
    }
    if (elementContext && elementContext.state === 'suspended') elementContext.resume();
  }
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    try { tapElement(this); } catch (err) {}
    return play.apply(this, arguments);
  };
  setInterval(() => {
    try {
      document.querySelectorAll('audio, video').forEach(tapElement);
      for (const el of tapped.keys()) tapElement(el);
    } catch (err) {}
  }, 250);
})();
"""


def find_chromium() -> str:
    """Debian's Chromium (``PYEGRESS_CHROMIUM`` overrides); never a downloaded browser."""
    for candidate in (os.environ.get("PYEGRESS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SourceError("chromium: not installed (apt-get install chromium, or set PYEGRESS_CHROMIUM)")


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


class PageAudio:
    """The page's sound: one timeline input per capturing AudioContext, summed when read."""

    def __init__(self, sample_rate: int, channels: int, t0: float) -> None:
        self.sample_rate, self.channels, self.t0 = sample_rate, channels, t0
        self.inputs: dict[int, AudioInput] = {}

    def push(self, context: int, pcm: np.ndarray, arrival: float) -> None:
        """Samples of one AudioContext that finished arriving at monotonic ``arrival``."""
        sink = self.inputs.get(context)
        if sink is None:
            sink = self.inputs[context] = AudioInput(self.sample_rate, self.channels, self.t0)
        sink.push(pcm, arrival)

    def read(self, start: int, count: int) -> np.ndarray:
        chunks = [i.read(start, count) for i in list(self.inputs.values())]
        if not chunks:
            return np.zeros((count, self.channels), np.int16)
        return add_clipped(chunks)


class PageSource:
    """One page in its own Chromium, captured at ``width`` x ``height`` and ``fps``.

    ``allow_hosts`` (None: any) limits the hosts the browser can resolve and request, e.g. the
    template's origin and the LiveKit server. ``on_end`` is called with a reason when the page
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
    ) -> None:
        self.url, self.width, self.height, self.fps = url, width, height, fps
        self.want_video, self.want_audio = video, audio
        self.capture = capture or default_capture()
        if self.capture not in ("x11", "screencast"):
            raise SourceError(f"capture: {self.capture!r} is not x11 or screencast")
        self.allow_hosts = list(allow_hosts) if allow_hosts is not None else None
        self.video_sink: VideoInput[object] | None = None
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
        self._display = ""
        self._profile = ""
        self._pids: set[int] = set()
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
        _remove_stale_profiles()
        self._profile = tempfile.mkdtemp(prefix=f"{PROFILE_PREFIX}{os.getpid()}-")
        args = list(CHROMIUM_FLAGS)
        if self.allow_hosts is not None:
            args.append(f"--host-resolver-rules={host_rules(self.allow_hosts)}")
        env = dict(os.environ)
        x11 = self.capture == "x11" and self.want_video
        if x11:
            self._display = await self._start_xvfb()
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
            self._pids = browser_pids(self._profile)
            context = self._context
            context.on("close", lambda *_: self._gone("the browser closed"))
            if self.allow_hosts is not None:
                await context.route("**/*", self._filter)
            if self.want_audio:
                await context.expose_binding("__pyegressPcm", self._pcm)
                await context.add_init_script(_AUDIO_CAPTURE_JS)
            page = self._page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", self._console)
            page.on("crash", lambda *_: self._gone("the page crashed"))
            page.on("pageerror", lambda e: log.warning("page error in %s: %s", redact_url(self.url), e))
            await page.goto(self.url, wait_until="load", timeout=30_000)
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(f"url: cannot open {redact_url(self.url)} in Chromium: {scrub(str(e))}") from e

    def start_capture(self, video: VideoInput[object] | None, audio: PageAudio | None) -> None:
        """Start feeding ``video`` (at ``fps``) and ``audio`` from the page."""
        self.video_sink, self.audio_sink = video, audio
        if video is None or self._page is None:
            return
        if self.capture == "x11":
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
        pids = self._pids | browser_pids(self._profile)
        with contextlib.suppress(Exception):
            if self._context is not None:
                await asyncio.wait_for(self._context.close(), 10)
        with contextlib.suppress(Exception):
            if self._pw is not None:
                await asyncio.wait_for(self._pw.stop(), 10)
        self._context = self._pw = self._page = self._cdp = None
        await asyncio.to_thread(_reap, pids)
        if self._xvfb is not None:
            await asyncio.to_thread(_stop_process, self._xvfb)
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

    async def _start_xvfb(self) -> str:
        """Start a private Xvfb a little larger than the window (so the window is exact size).

        The display number is picked at random and claimed through Xvfb's own lock file
        (``-displayfd`` alone lets concurrent servers collide), then awaited until it is ready.
        Xvfb is started from the event loop's thread and dies with it (``PR_SET_PDEATHSIG``),
        so a killed recorder process leaves no display behind.
        """
        xvfb = shutil.which("Xvfb")
        if xvfb is None:
            raise SourceError("capture: Xvfb is not installed (apt-get install xvfb), or use screencast")
        rng = random.SystemRandom()
        for _ in range(20):
            number = rng.randint(100, 32000)
            if os.path.exists(f"/tmp/.X{number}-lock") or os.path.exists(f"/tmp/.X11-unix/X{number}"):
                continue
            read_fd, write_fd = os.pipe()
            try:
                proc = subprocess.Popen(
                    [
                        xvfb,
                        f":{number}",
                        "-displayfd",
                        str(write_fd),
                        "-screen",
                        "0",
                        f"{self.width + 8}x{self.height + 8}x24",
                        "-nolisten",
                        "tcp",
                        "-noreset",
                    ],
                    pass_fds=(write_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
                os.close(write_fd)
                write_fd = -1
                said = await asyncio.to_thread(_read_line, read_fd, 10.0)
            finally:
                os.close(read_fd)
                if write_fd >= 0:
                    os.close(write_fd)
            if said == str(number) and proc.poll() is None:
                self._xvfb = proc
                return f":{number}"
            await asyncio.to_thread(_stop_process, proc)  # that display was taken after all
        raise SourceError("capture: Xvfb did not start")

    def _grab(self) -> None:
        """Read the display at ``fps`` (x11grab paces itself) into the video sink (thread)."""
        try:
            container = av.open(
                f"{self._display}.0+0,0",
                format="x11grab",
                options={
                    "framerate": str(self.fps),
                    "video_size": f"{self.width}x{self.height}",
                    "draw_mouse": "0",
                },
            )
        except Exception as e:
            self._from_thread(f"capture: cannot read the browser's display: {e}")
            return
        try:
            for frame in container.decode(video=0):
                if self._stop_grab.is_set():
                    break
                sink = self.video_sink
                if sink is not None:
                    sink.push(reformat(frame), time.monotonic())
                    self.frames_grabbed += 1
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


def _proc_table() -> dict[int, tuple[int, bytes]]:
    """pid -> (ppid, cmdline) of every process (Linux /proc)."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        table[int(entry.name)] = (ppid, cmd)
    return table


def browser_pids(profile: str) -> set[int]:
    """Chromium processes with a user data dir starting with ``profile``, and their descendants.

    ``browser_pids(f"{tempfile.gettempdir()}/{PROFILE_PREFIX}{os.getpid()}-")`` lists every
    browser process this process started that is still alive.
    """
    if not profile:
        return set()
    table = _proc_table()
    marker = f"--user-data-dir={profile}".encode()
    found = {pid for pid, (_, cmd) in table.items() if marker in cmd}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def _remove_stale_profiles() -> None:
    """Delete the profiles of pyegress processes that are gone (killed before they could)."""
    for path in Path(tempfile.gettempdir()).glob(f"{PROFILE_PREFIX}*-*"):
        pid = path.name[len(PROFILE_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _reap(pids: set[int]) -> None:
    """SIGKILL whichever of ``pids`` (Chromium processes) outlived a graceful close."""
    deadline = time.monotonic() + 3
    while True:
        table = _proc_table()
        alive = [p for p in pids if p in table and b"chrom" in table[p][1]]
        if not alive:
            return
        if time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            log.warning("killed %d Chromium process(es) left after close", len(alive))
            return
        time.sleep(0.1)


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the forked child: get SIGTERM when the thread that started us exits (Linux)."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read_line(fd: int, timeout: float) -> str:
    """One line from ``fd`` (Xvfb dies if its pipe closes before it wrote the whole line)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 32) if ready else b""
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
