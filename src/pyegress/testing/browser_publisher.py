"""A LiveKit participant that is a real browser: ``livekit-client`` in Debian's Chromium.

Most participants of a LiveKit room are browsers, which publish differently from the Python SDK:
VP8 with simulcast, Opus with DTX (and RED), their own encoder's pacing and rate adaptation.
This publisher sends the same self-describing signal as
:class:`~pyegress.testing.publisher.SyntheticPublisher`: a canvas (each picture one frame of the
track, through Chromium's ``MediaStreamTrackGenerator``) showing
:class:`~pyegress.testing.signals.PatternGenerator`'s moving pattern (its pixels are computed
here and handed to the page, so :func:`~pyegress.testing.cadence.cadence` can follow it) with white
flashes, and a WebAudio tone that beeps at the same instants, so ``av_offset`` measures a
recording of it as it does a synthetic one.

The page is ``examples/templates/dist/publisher/publisher.js``, built from npm's
``livekit-client`` by ``scripts/build-templates.sh`` (``PYEGRESS_PUBLISHER_JS`` overrides).
Chromium is launched as web egress launches it (:class:`~pyegress.sources.web.PageSource`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import av
from aiohttp import web

from ..sources.web import PageSource
from .publisher import SignalPublisher, _default_bitrate
from .signals import BEEP_AMPLITUDE, MARKER_DURATION, PATTERN_SPEED, TONE_AMPLITUDE

__all__ = ["BrowserPublisher", "publisher_js"]

_START_LEAD = 0.05  # seconds between "connected" and the signal's time zero
_PAGE = (
    '<!doctype html><html><body style="margin:0;background:#000"><canvas id="canvas"></canvas>'
    '<script src="publisher.js"></script></body></html>'
)


def publisher_js() -> Path:
    """The built page script; a clear error if the setup has not built it."""
    default = Path(__file__).resolve().parents[3] / "examples/templates/dist/publisher/publisher.js"
    path = Path(os.environ.get("PYEGRESS_PUBLISHER_JS") or default)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the browser publisher's page is not built (run scripts/build-templates.sh)"
        )
    return path


def _rgb(i420: Any) -> Any:
    """An I420 picture of the generator as RGB, converted as a browser's canvas capture will
    convert it back (BT.601, limited range)."""
    return av.VideoFrame.from_ndarray(i420, format="yuv420p").to_ndarray(format="rgb24")


class BrowserPublisher(SignalPublisher):
    """Publishes a canvas camera and a WebAudio microphone from ``livekit-client`` in Chromium.

    Same shape as :class:`~pyegress.testing.publisher.SyntheticPublisher`: ``start``/``stop``
    (or ``async with``), ``identity``, ``video_track_sid``, ``audio_track_sid``, ``t0``.
    """

    #: Set by :meth:`start` (the page's answer) and by the page's server.
    _page: PageSource | None = None
    _site: web.AppRunner | None = None
    _result: Mapping[str, Any] = MappingProxyType({})

    @property
    def identity(self) -> str:
        """This participant's identity (known once started)."""
        return str(self._result.get("identity", ""))

    @property
    def video_track_sid(self) -> str | None:
        """SID of the published camera track, or None."""
        return self._result.get("videoSid")

    @property
    def audio_track_sid(self) -> str | None:
        """SID of the published microphone track, or None."""
        return self._result.get("audioSid")

    async def frames_drawn(self) -> int:
        """How many pictures the page has drawn on its canvas so far."""
        if self._page is None or self._page.page is None:
            return 0
        return int(await self._page.page.evaluate("window.pyegressFrames || 0"))

    async def sender_stats(self) -> list[dict[str, Any]]:
        """The browser's video encoder per simulcast layer (``rid``, ``fps``, ``width``,
        ``height``, ``framesSent``, ``limitation``: why WebRTC lowered the quality, if it did)."""
        if self._page is None or self._page.page is None:
            return []
        stats: list[dict[str, Any]] = await self._page.page.evaluate("window.pyegressStats()")
        return stats

    def _config(self) -> dict[str, Any]:
        flash = (
            _rgb(self.pattern.frame_at(self.marker_interval))[0, 0] if self.marker_interval > 0 else (0, 0, 0)
        )
        rgba = _rgb(self.pattern.frame_at(0.0))
        pixels = bytearray(self.width * self.height * 4)
        pixels[0::4], pixels[1::4], pixels[2::4] = (rgba[..., i].tobytes() for i in range(3))
        pixels[3::4] = b"\xff" * (self.width * self.height)
        return {
            "url": self.url,
            "token": self.token,
            "video": self.video_enabled,
            "audio": self.audio_enabled,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "rgba": base64.b64encode(bytes(pixels)).decode(),
            "flash": "rgb({},{},{})".format(*(int(c) for c in flash)),
            "speed": PATTERN_SPEED if self.color is None else 0.0,
            "markerInterval": self.marker_interval,
            "markerDuration": MARKER_DURATION,
            "toneHz": self.tone_hz,
            "beepHz": self.beep_hz,
            "toneAmplitude": TONE_AMPLITUDE,
            "beepAmplitude": BEEP_AMPLITUDE,
            "startLead": _START_LEAD,
            "maxBitrate": _default_bitrate(self.width, self.height),
        }

    async def start(self) -> None:
        """Launch Chromium, connect with ``livekit-client`` and publish the enabled tracks."""
        script = publisher_js()
        page = self._page = PageSource(
            "about:blank", self.width, self.height, video=False, audio=False, capture="screencast"
        )
        try:
            await page.open()
            # a real loopback origin: Chromium's local network access checks block a page of
            # about:blank (or one fulfilled by an interception) from reaching a loopback server
            await page.page.goto(await self._serve(script))
            self._result = await page.page.evaluate("c => window.pyegressPublish(c)", self._config())
            self._t0 = time.monotonic() - float(self._result["t0Ago"])
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Disconnect and close the browser (every Chromium process is reaped)."""
        page, self._page = self._page, None
        if page is not None:
            if page.page is not None:
                with contextlib.suppress(Exception):
                    await page.page.evaluate("window.pyegressStop && window.pyegressStop()")
            await page.close()
        site, self._site = self._site, None
        if site is not None:
            await site.cleanup()

    async def _serve(self, script: Path) -> str:
        """Serve the page on 127.0.0.1 (a free port); its address."""

        async def page(_: web.Request) -> web.StreamResponse:
            return web.Response(text=_PAGE, content_type="text/html")

        async def code(_: web.Request) -> web.StreamResponse:
            return web.FileResponse(script)

        async def nothing(_: web.Request) -> web.StreamResponse:
            return web.Response(status=204)

        app = web.Application()
        app.router.add_get("/", page)
        app.router.add_get("/publisher.js", code)
        app.router.add_get("/favicon.ico", nothing)
        self._site = web.AppRunner(app, access_log=None)
        await self._site.setup()
        site = web.TCPSite(self._site, "127.0.0.1", 0)
        await site.start()
        port = self._site.addresses[0][1]
        return f"http://127.0.0.1:{port}/"
