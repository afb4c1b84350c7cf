"""Web recorders: any web page (WebEgressRequest) or a room composite template (custom_base_url),
rendered by Chromium and recorded with its sound."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.parse
from typing import Any

from livekit import api
from livekit.protocol import egress as pe

from ..ending import EndReason
from ..errors import SourceError
from ..media.inputs import MIX_CHANNELS, MIX_RATE, AudioSource, VideoSource
from ..media.timeline import VideoInput
from ..quality import AudioQuality, VideoQuality, audio_quality, video_quality
from ..sources.members import Participant, Publication
from ..sources.room import recorder_token
from ..sources.web import LAYOUT_EVENT, PageAudio, PageSource
from .base import Options, Recorder
from .room import RoomRecorder
from .room_composite import layout_holder

#: Canvas of an audio-only page (the page still needs a window to lay itself out in).
_AUDIO_ONLY_SIZE = (1280, 720)


class _PageRecorder(Recorder):
    """A recorder whose media is one page in its own Chromium (see :class:`PageSource`).

    ``wait_timeout`` bounds the wait for the page's ``START_RECORDING`` (counted from the
    page's load); ``capture`` picks ``x11`` or ``screencast`` (default: see
    :func:`pyegress.sources.web.default_capture`); ``insecure`` runs the page without web
    security (:class:`PageSource`).
    """

    def __init__(
        self, request: Any = None, *, capture: str | None = None, insecure: bool = False, **kw: Any
    ) -> None:
        super().__init__(request, **kw)
        self.capture = capture
        self.insecure = insecure
        self.page: PageSource | None = None
        self.page_audio: PageAudio | None = None

    async def _open_page(self, url: str, *, await_start: bool, allow_hosts: list[str] | None) -> None:
        enc = self.config.video
        width, height = (enc.width, enc.height) if enc is not None else _AUDIO_ONLY_SIZE
        self.page = PageSource(
            url,
            width,
            height,
            video=enc is not None,
            audio=self.config.audio is not None,
            fps=enc.fps if enc is not None else 30,
            capture=self.capture,
            allow_hosts=allow_hosts,
            insecure=self.insecure,
        )
        self.page.on_end = self._page_ended
        await self.page.open()
        if await_start:
            started = asyncio.ensure_future(self.page.started.wait())
            ended = asyncio.ensure_future(self._end.wait())
            try:
                await asyncio.wait({started, ended}, timeout=self.wait_timeout, return_when="FIRST_COMPLETED")
            finally:
                started.cancel()
                ended.cancel()
            if self.page.crashed:
                raise SourceError(f"url: {self.page.crashed} before START_RECORDING", code=400)
            if not self.page.started.is_set() and not self._end.is_set():
                raise SourceError(
                    f"await_start_signal: the page sent no START_RECORDING within {self.wait_timeout:g} s",
                    code=412,
                )

    def _page_ended(self, reason: str) -> None:
        if self.page is not None and self.page.crashed:
            self.owner.set_status(pe.EGRESS_FAILED, f"url: {self.page.crashed}")
        self.end(EndReason.SOURCE_CLOSED, reason)

    async def _disconnect(self) -> None:
        try:
            if self.page is not None:
                await self.page.close()
        finally:
            await super()._disconnect()

    def _quality_inputs(self) -> tuple[list[VideoQuality], list[AudioQuality]]:
        """The page's picture and each of its capturing AudioContexts."""
        video = [video_quality("page", self.video_input)] if self.video_input is not None else []
        contexts = self.page_audio.inputs.items() if self.page_audio is not None else []
        return video, [audio_quality(f"page/audio{n}", ai) for n, ai in contexts]

    def _make_inputs(
        self, t0: float, video: bool, audio: bool
    ) -> tuple[VideoSource | None, list[AudioSource]]:
        on_grid = self.page is not None and self.page.paints_on_grid
        self.video_input = VideoInput(self.ticks, on_grid=on_grid) if video else None
        self.page_audio = PageAudio(MIX_RATE, MIX_CHANNELS, t0) if audio else None
        if self.page is not None:
            self.page.start_capture(self.video_input, self.page_audio)
        return self.video_input, [self.page_audio] if self.page_audio is not None else []


class WebRecorder(_PageRecorder):
    """Records ``WebEgressRequest.url``: starts once the page has loaded or, with
    ``await_start_signal``, on its ``START_RECORDING``; ends on ``END_RECORDING`` or ``stop``."""

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        return {**super()._options(options), "insecure": options.insecure}

    async def _connect(self) -> None:
        await self._open_page(
            self.config.web_url, await_start=self.config.await_start_signal, allow_hosts=None
        )


class TemplateRecorder(RoomRecorder, _PageRecorder):
    """Room composite through a web template (``custom_base_url``), as LiveKit Egress does it.

    The page is opened with ``?url=<LiveKit ws URL>&token=<token>&layout=<layout>``; the token
    is for a hidden recorder participant that may subscribe but not publish, whose metadata is
    ``{"layout": ...}``. Recording starts on the page's ``START_RECORDING`` (bounded by
    ``wait_timeout``) and ends on ``END_RECORDING``, when the room closes or stays empty for
    ``empty_timeout`` seconds, or on ``stop``. The browser reaches only the template's host and
    the LiveKit server.
    """

    def __init__(
        self, request: pe.RoomCompositeEgressRequest | None = None, *, empty_timeout: float = 30.0, **kw: Any
    ) -> None:
        self._lk_url = kw.get("url") or os.environ.get("LIVEKIT_URL", "")
        self._lk_key = kw.get("api_key") or os.environ.get("LIVEKIT_API_KEY", "")
        self._lk_secret = kw.get("api_secret") or os.environ.get("LIVEKIT_API_SECRET", "")
        super().__init__(request, **kw)
        self.layout = self.config.layout
        self.empty_timeout = empty_timeout
        self.page_identity = f"{self.egress_id}_template"
        self._watch: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        return {
            **super()._options(options),
            "empty_timeout": options.empty_timeout,
            "insecure": options.insecure,
        }

    # --- public -------------------------------------------------------------------------

    def set_layout(self, layout: str) -> pe.EgressInfo:
        """Send ``layout`` to the live page: as the recorder participant's metadata (what
        ``@livekit/egress-sdk`` listens to) and as ``?layout=`` plus a ``pyegress:layout`` event."""
        self.layout = layout
        with self.owner.edit() as info:
            layout_holder(info).layout = layout
        task = asyncio.get_running_loop().create_task(self._push_layout(layout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return self.info

    # --- hooks --------------------------------------------------------------------------

    def _route(self, participant: Participant, pub: Publication) -> str | None:
        return None  # the page subscribes; the recorder only watches the room

    async def _connect(self) -> None:
        if not (self._lk_url and self._lk_key and self._lk_secret):
            raise SourceError("url/api_key/api_secret: a template needs them to mint its token", code=400)
        await super()._connect()  # join hidden: the room must exist; its end ends the recording
        page_url = self.template_url()
        hosts = [urllib.parse.urlsplit(u).hostname or "" for u in (self.config.web_url, self._lk_url)]
        await self._open_page(page_url, await_start=True, allow_hosts=[h for h in hosts if h])
        self._watch = asyncio.get_running_loop().create_task(self._end_when_empty(self.empty_timeout))

    async def _disconnect(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for task in list(self._tasks):
            task.cancel()
        await super()._disconnect()

    # --- the template -------------------------------------------------------------------

    def template_url(self) -> str:
        """``custom_base_url`` with ``url``, ``token`` and ``layout`` added to its query."""
        ws_url = self._lk_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        base = urllib.parse.urlsplit(self.config.web_url)
        query = urllib.parse.parse_qsl(base.query, keep_blank_values=True)
        query = [(k, v) for k, v in query if k not in ("url", "token", "layout")]
        query += [("url", ws_url), ("token", self._token()), ("layout", self.layout)]
        return urllib.parse.urlunsplit(base._replace(query=urllib.parse.urlencode(query)))

    def _token(self) -> str:
        return recorder_token(
            self._lk_key,
            self._lk_secret,
            self.page_identity,
            self.config.room_name,
            name="recorder",
            metadata=json.dumps({"layout": self.layout}),
        )

    async def _push_layout(self, layout: str) -> None:
        page = self.page.page if self.page is not None else None
        if page is not None:
            with contextlib.suppress(Exception):
                await page.evaluate(_LAYOUT_JS, [LAYOUT_EVENT, layout])
        with contextlib.suppress(Exception):
            async with api.LiveKitAPI(self._lk_url, self._lk_key, self._lk_secret) as lk:
                await lk.room.update_participant(
                    api.UpdateParticipantRequest(
                        room=self.config.room_name,
                        identity=self.page_identity,
                        metadata=json.dumps({"layout": layout}),
                    )
                )


_LAYOUT_JS = """([event, layout]) => {
  const url = new URL(window.location.href);
  url.searchParams.set('layout', layout);
  window.history.replaceState(window.history.state, '', url.toString());
  window.dispatchEvent(new CustomEvent(event, {detail: layout}));
}"""
