"""WebRecorder: any web page (its picture and its sound), rendered by Chromium."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.protocol import egress as pe

from ..errors import SourceError
from ..info import set_status
from ..sources.web import PageSource
from .base import Media, Recorder


class WebRecorder(Recorder):
    """Records ``WebEgressRequest.url``; with ``await_start_signal`` it waits (``wait_timeout``)
    for the page's ``START_RECORDING`` console message, and ends on ``END_RECORDING``."""

    page: PageSource | None = None

    async def _connect(self) -> None:
        req: pe.WebEgressRequest = self.config.request  # type: ignore[assignment]
        enc = self.config.video
        width, height = (enc.width, enc.height) if enc is not None else (1280, 720)
        self.page = PageSource(
            req.url, width, height, video=enc is not None, audio=self.config.audio is not None
        )
        self.page.on_end = self._page_ended
        await self.page.open()
        if req.await_start_signal:
            try:
                await asyncio.wait_for(self.page.started.wait(), self.wait_timeout)
            except asyncio.TimeoutError:
                raise SourceError(
                    f"await_start_signal: the page sent no START_RECORDING within {self.wait_timeout:g} s"
                ) from None

    def _page_ended(self, reason: str) -> None:
        if self.page is not None and self.page.crashed:
            set_status(self.info, pe.EGRESS_FAILED, f"url: {self.page.crashed}")
        self.end(reason)

    async def _disconnect(self) -> None:
        if self.page is not None:
            await self.page.close()
        await self.source.close()

    async def _resolve(self) -> Media:
        return Media(self._template_values({}), self.config.video, self.config.audio)

    def _make_inputs(self, t0: float, video: bool, audio: bool) -> tuple[Any, list[Any]]:
        source, audio_sources = super()._make_inputs(t0, video, audio)
        if self.page is not None:
            self.page.video_sink, self.page.audio_sink = self.video_input, self.audio_input
        return source, audio_sources

    def _route(self, participant: Any, pub: Any) -> str | None:
        return None  # no room tracks: the page is the source
