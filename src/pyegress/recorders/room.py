"""Recorders whose media comes from a LiveKit room through the rtc SDK.

:class:`RoomRecorder` joins the room as a hidden participant (or uses the application's own
``rtc.Room``), routes each publication to an input (subclasses say which), subscribes, and
follows unpublish / republish and participants leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from livekit import rtc

from ..config import EgressConfig
from ..ending import EndReason
from ..outputs import PcmOutput
from ..sources.room import RoomSource
from .base import Options, Recorder


class RoomRecorder(Recorder):
    """A recorder fed from a room: ``room`` (connected, the application's) or ``url`` /
    ``api_key`` / ``api_secret`` (default: ``LIVEKIT_URL`` / ``LIVEKIT_API_KEY`` /
    ``LIVEKIT_API_SECRET``) to join it hidden."""

    def __init__(
        self,
        request: Any = None,
        *,
        room: rtc.Room | None = None,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(request, **kw)
        self.source = RoomSource(
            self.config.room_name,
            room=room,
            url=url or os.environ.get("LIVEKIT_URL", ""),
            api_key=api_key or os.environ.get("LIVEKIT_API_KEY", ""),
            api_secret=api_secret or os.environ.get("LIVEKIT_API_SECRET", ""),
            identity=f"EG_{self.egress_id[3:]}",
        )

    @classmethod
    def from_config(cls, config: EgressConfig, options: Options) -> Recorder:
        return cls(config=config, **cls._options(options))

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        """The constructor's keywords taken from ``options`` (subclasses add theirs)."""
        return {
            "room": options.room,
            "url": options.url,
            "api_key": options.api_key,
            "api_secret": options.api_secret,
            "wait_timeout": options.wait_timeout,
            "egress_id": options.egress_id,
            "limits": options.limits,
        }

    # --- subclass hooks -----------------------------------------------------------------

    def _route(self, participant: rtc.RemoteParticipant, pub: rtc.RemoteTrackPublication) -> str | None:
        """Which input ("video", "audio" or None) this publication feeds."""
        raise NotImplementedError

    def _on_unpublished(self, participant: rtc.RemoteParticipant, pub: rtc.RemoteTrackPublication) -> None:
        """A routed track went away (default: keep recording, the timeline fills the gap)."""

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        """A participant left (subclasses end when theirs did)."""

    def _attach(
        self, kind: str, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        """Start feeding a subscribed track into its input (default: the single inputs)."""
        if kind == "video" and self.video_input is not None:
            self.source.pump_video(track, self.video_input)
        elif kind == "audio" and self.audio_input is not None:
            self.source.pump_audio(track, self.audio_input)

    # --- the room -----------------------------------------------------------------------

    async def _connect(self) -> None:
        await self.source.connect(self.wait_timeout)
        self.source.on("disconnected", lambda *_: self.end(EndReason.SOURCE_CLOSED, "room closed"))

    async def _disconnect(self) -> None:
        try:
            await self.source.close()
        finally:
            await super()._disconnect()

    async def _room_id(self) -> str:
        with contextlib.suppress(Exception):
            return await asyncio.wait_for(self.source.room.sid, 2.0)
        return ""

    def _on_active(self) -> None:
        for participant, pub in self.source.publications():
            self._published(pub, participant)
        self.source.on("track_published", self._published)
        self.source.on("track_subscribed", self._subscribed)
        self.source.on("track_unpublished", self._unpublished)
        self.source.on("participant_disconnected", self._on_participant_left)
        if any(isinstance(o, PcmOutput) for o in self.outputs):
            self.source.on("track_muted", lambda p, pub: self._pcm_muted(p, pub, True))
            self.source.on("track_unmuted", lambda p, pub: self._pcm_muted(p, pub, False))
            for participant, pub in self.source.publications():
                if pub.muted:
                    self._pcm_muted(participant, pub, True)

    async def _end_when_empty(self, timeout: float) -> None:
        """End the recording once the room has had no (visible) participant for ``timeout`` s."""
        empty_since: float | None = None
        with contextlib.suppress(asyncio.CancelledError):
            while not self._end.is_set():
                if self.source.room.remote_participants:
                    empty_since = None
                elif empty_since is None:
                    empty_since = time.monotonic()
                elif time.monotonic() - empty_since >= timeout:
                    self.end(EndReason.SOURCE_CLOSED, f"room empty for {timeout:g} s")
                    return
                await asyncio.sleep(0.25)

    def _published(self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if self._route(participant, pub) is None:
            return
        if pub.track is not None:
            self._subscribed(pub.track, pub, participant)
        else:
            self.source.subscribe(pub)

    def _subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        kind = self._route(participant, pub)
        if kind is not None:
            self._attach(kind, track, pub, participant)

    def _unpublished(self, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if self._route(participant, pub) is not None:
            self.source.stop_pump(pub.sid)
            self._on_unpublished(participant, pub)

    def _pcm_muted(self, participant: rtc.Participant, pub: rtc.TrackPublication, muted: bool) -> None:
        """Tell raw PCM receivers (WebSocket) when the recorded audio is muted or unmuted."""
        remote = isinstance(participant, rtc.RemoteParticipant) and isinstance(
            pub, rtc.RemoteTrackPublication
        )
        if remote and self._route(participant, pub) == "audio":  # type: ignore[arg-type]
            for o in self.outputs:
                if isinstance(o, PcmOutput):
                    o.set_muted(muted)
