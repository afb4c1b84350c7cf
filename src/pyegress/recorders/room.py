"""Recorders whose media comes from a LiveKit room through the rtc SDK.

:class:`RoomRecorder` joins the room as a hidden participant (or uses the application's own
``rtc.Room``), routes each publication to an input (subclasses say which), subscribes, and
follows unpublish / republish and participants leaving.

A lost connection (livekit-server gone, network down) is ridden out: the rtc SDK reconnects by
itself (``reconnecting`` / ``reconnected``; after a server restart a full rejoin in which every
remote track comes back under a new sid, announced before ``reconnected`` and subscribed only
when asked again after it). Meanwhile the recording goes on, the timeline holding the last
frame and filling silence as for a muted track, and departures the SDK reports while it
rejoins are judged only once it is back (a participant gets ``wait_timeout`` to rejoin too).
When the SDK gives up (10 attempts, 13-23 s measured against a killed server) or
``reconnect_timeout`` passes, the recording ends early: FAILED with
:class:`~pyegress.errors.RoomConnectionLostError`, what was recorded finished and uploaded, and
the egress is retried. A room closed on purpose (deleted, closed, the recorder removed) ends
the recording normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from typing import Any

from livekit import rtc

from ..ending import EndReason
from ..errors import NotSupportedError, RoomConnectionLostError, SourceError
from ..media.timeline import AudioInput
from ..outputs import PcmOutput
from ..quality import AudioQuality, LagRange, VideoQuality, audio_quality, video_quality
from ..sources.members import Participant, Publication, RoomFeed, Track
from ..sources.room import RoomSource
from .base import RECONNECT_TIMEOUT, Options, Recorder

log = logging.getLogger("pyegress.recorder")

_Reason = rtc.DisconnectReason
#: Why the SDK left when that is a normal end: the room was closed, the recorder removed or left.
NORMAL_ENDS = frozenset(
    {_Reason.ROOM_DELETED, _Reason.ROOM_CLOSED, _Reason.PARTICIPANT_REMOVED, _Reason.CLIENT_INITIATED}
)


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
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        receive_path: str = "sdk",
        **kw: Any,
    ) -> None:
        super().__init__(request, **kw)
        self._join: dict[str, Any] = {
            "url": url or os.environ.get("LIVEKIT_URL", ""),
            "api_key": api_key or os.environ.get("LIVEKIT_API_KEY", ""),
            "api_secret": api_secret or os.environ.get("LIVEKIT_API_SECRET", ""),
            "identity": f"EG_{self.egress_id[3:]}",
        }
        if receive_path == "encoded" and room is not None:
            raise NotSupportedError("receive_path: the encoded receive path joins the room itself, not room=")
        self.receive_path = receive_path
        self.source: RoomFeed = self._make_source(room)
        self.reconnect_timeout = reconnect_timeout
        self._active = False
        self._reconnecting: asyncio.Task[None] | None = None  # the bound on a reconnection
        self._settling: asyncio.Task[None] | None = None
        self._away: dict[str, Participant] = {}  # left while the SDK rejoined
        self._gone: list[tuple[Participant, Publication]] = []

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        return {
            **super()._options(options),
            "room": options.room,
            "url": options.url,
            "api_key": options.api_key,
            "api_secret": options.api_secret,
            "reconnect_timeout": options.reconnect_timeout,
        }

    def _quality_inputs(self) -> tuple[list[VideoQuality], list[AudioQuality]]:
        """One report per input the room fed (a tile, a voice), named ``identity/source``,
        with the lag corrections applied to its tracks."""
        video: list[VideoQuality] = []
        audio: list[AudioQuality] = []
        for name, sink, sids in self.source.fed.values():
            lags = (self.source.lags.get(s, LagRange()) for s in sorted(sids))
            lag = functools.reduce(LagRange.merged, lags)
            if isinstance(sink, AudioInput):
                audio.append(audio_quality(name, sink, lag))
            else:
                video.append(video_quality(name, sink, lag))
        return video, audio

    def _make_source(self, room: rtc.Room | None = None) -> RoomFeed:
        """The room's events and media: through the rtc SDK, or kept encoded (``receive_path``)."""
        if self.receive_path == "encoded":
            from ..sources.encoded.room import EncodedRoomSource  # aiortc: only when used

            return EncodedRoomSource(self.config.room_name, **self._join)
        return RoomSource(self.config.room_name, room=room, **self._join)

    # --- subclass hooks -----------------------------------------------------------------

    def _route(self, participant: Participant, pub: Publication) -> str | None:
        """Which input ("video", "audio" or None) this publication feeds."""
        raise NotImplementedError

    def _on_unpublished(self, participant: Participant, pub: Publication) -> None:
        """A routed track went away (default: keep recording, the timeline fills the gap)."""

    def _on_participant_left(self, participant: Participant) -> None:
        """A participant left (subclasses end when theirs did)."""

    def _attach(self, kind: str, track: Track, pub: Publication, participant: Participant) -> None:
        """Start feeding a subscribed track into its input (default: the single inputs)."""
        if kind == "video" and self.video_input is not None:
            self.source.pump_video(track, self.video_input)
        elif kind == "audio" and self.audio_input is not None:
            self.source.pump_audio(track, self.audio_input)

    # --- the room -----------------------------------------------------------------------

    async def _connect(self) -> None:
        if self.source.closed:  # a retry: join again, hidden as before
            if not self.source.owns_room:
                raise SourceError("room: the application's rtc.Room was lost; it cannot be rejoined")
            self.source = self._make_source()
            self._active = False
        await self.source.connect(self.wait_timeout, patient=self.info.retry_count > 0)
        self.source.on("disconnected", self._disconnected)
        self.source.on("reconnecting", self._on_reconnecting)
        self.source.on("reconnected", self._on_reconnected)

    async def _disconnect(self) -> None:
        for task in (self._reconnecting, self._settling):
            if task is not None:
                task.cancel()
        self._reconnecting = self._settling = None
        try:
            await self.source.close()
        finally:
            await super()._disconnect()

    async def _room_id(self) -> str:
        with contextlib.suppress(Exception):
            return await asyncio.wait_for(self.source.room_sid(), 2.0)
        return ""

    def _on_active(self) -> None:
        for participant, pub in self.source.publications():
            self._published(pub, participant)
        self.source.on("track_published", self._published)
        self.source.on("track_subscribed", self._subscribed)
        self.source.on("track_unpublished", self._unpublished)
        self.source.on("participant_disconnected", self._participant_left)
        self._active = True
        if self.sidecars is not None:
            self.source.follow(self.sidecars)
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
                if self.source.participants() or self._reconnecting is not None:
                    empty_since = None
                elif empty_since is None:
                    empty_since = time.monotonic()
                elif time.monotonic() - empty_since >= timeout:
                    self.end(EndReason.SOURCE_CLOSED, f"room empty for {timeout:g} s")
                    return
                await asyncio.sleep(0.25)

    def _published(self, pub: Publication, participant: Participant) -> None:
        if self._route(participant, pub) is None:
            return
        if pub.track is not None:
            self._subscribed(pub.track, pub, participant)
        else:
            self.source.subscribe(pub)

    def _subscribed(self, track: Track, pub: Publication, participant: Participant) -> None:
        kind = self._route(participant, pub)
        if kind is not None:
            self._attach(kind, track, pub, participant)

    def _unpublished(self, pub: Publication, participant: Participant) -> None:
        if self._route(participant, pub) is not None:
            self.source.stop_pump(pub.sid)
            if self._reconnecting is not None or self._settling is not None:
                self._gone.append((participant, pub))
            else:
                self._on_unpublished(participant, pub)

    def _participant_left(self, participant: Participant) -> None:
        if self._reconnecting is not None or self._settling is not None:
            self._away[participant.identity] = participant
        else:
            self._on_participant_left(participant)

    # --- a lost connection ----------------------------------------------------------------

    def _disconnected(self, reason: int) -> None:
        name = _Reason.Name(reason)  # type: ignore[arg-type]
        if reason in NORMAL_ENDS:
            self.end(EndReason.SOURCE_CLOSED, f"room closed ({name})")
        elif reason == _Reason.DUPLICATE_IDENTITY:  # another recorder took over: not ours to retry
            self._end_error = SourceError("room: another participant joined with the recorder's identity")
            self.end(EndReason.FAILURE, str(self._end_error))
        else:
            self._lose(f"the SDK gave up reconnecting ({name})")

    def _lose(self, why: str) -> None:
        """End the recording early: it finishes, uploads, then fails (and is retried)."""
        if self._end.is_set():
            return  # already ending (a stop): nothing was lost
        room = self.config.room_name
        text = f"recording ended early: connection to room {room!r} lost and not regained: {why}"
        # an application's own rtc.Room cannot be rejoined by a retry: not transient for us
        self._end_error = RoomConnectionLostError(text) if self.source.owns_room else SourceError(text)
        self.end(EndReason.FAILURE, str(self._end_error))

    def _on_reconnecting(self) -> None:
        log.warning("egress %s: connection to the room lost, the SDK reconnects", self.egress_id)
        if self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._bound_reconnection())

    async def _bound_reconnection(self) -> None:
        await asyncio.sleep(self.reconnect_timeout)
        self._reconnecting = None
        self._lose(f"not back within reconnect_timeout ({self.reconnect_timeout:g} s)")

    def _on_reconnected(self) -> None:
        """Back in the room: ask again for every routed track (after a rejoin they all have new
        sids), then judge the departures seen meanwhile once participants had time to rejoin."""
        log.info("egress %s: reconnected to the room", self.egress_id)
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            self._reconnecting = None
        if not self._active:
            return
        for participant, pub in self.source.publications():
            self._published(pub, participant)
        if self._settling is None and (self._away or self._gone):
            self._settling = asyncio.get_running_loop().create_task(self._settle())

    async def _settle(self) -> None:
        await asyncio.sleep(self.wait_timeout)
        self._settling = None
        away, self._away = self._away, {}
        gone, self._gone = self._gone, []
        present = self.source.participants()
        for identity, participant in away.items():
            if identity not in present:
                self._on_participant_left(participant)
        routed = {(p.identity, self._route(p, pub)) for p, pub in self.source.publications()}
        for participant, pub in gone:
            back = (participant.identity, self._route(participant, pub)) in routed
            if participant.identity in present and not back:
                self._on_unpublished(participant, pub)

    def _pcm_muted(self, participant: Participant, pub: Publication, muted: bool) -> None:
        """Tell raw PCM receivers (WebSocket) when the recorded audio is muted or unmuted."""
        remote = participant.identity != self.source.identity  # not the recorder's own
        if remote and self._route(participant, pub) == "audio":
            self._tell_pcm_muted(muted)
