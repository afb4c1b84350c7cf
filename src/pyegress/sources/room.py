"""The LiveKit side: join (hidden) or reuse a connected room, subscribe, pump frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from livekit import api, rtc

from ..compat.livekit import QueuedVideoStream
from ..errors import RoomConnectionLostError, SourceError
from ..media.inputs import Picture
from ..media.timeline import AudioInput, VideoInput
from ..quality import LagRange
from ..redaction import remember
from ..sidecars import Sidecars
from .delays import MAX_ADVANCE, MAX_LAG, JitterDelays
from .members import Publication, Track, feed_name, note_fed, wait_for_change

log = logging.getLogger("pyegress.source")

#: Frames smaller than this are end-of-track artefacts (the SDK hands over a 2x2 or 8x8 black
#: frame when a track ends), never real pictures.
MIN_FRAME_SIDE = 16

#: How much later than video the SDK delivers audio of the same instant, measured through a
#: loopback livekit-server (on a jittery network, ``delays.JitterDelays`` adds what the jitter
#: buffers hold beyond that): the SDK's track stats show an audio jitter buffer of ~30 ms (46 ms
#: in the first second) against ~13 ms for video, and a video frame waits 0-33 ms for its
#: output tick. Audio arrival times are moved earlier by this much so both land where they
#: were captured; it centres the A/V offsets the tests measure (medians -28..+25 ms over 12
#: runs, most within +-10 ms; 25 ms left them at -1..+30).
AUDIO_PATH_DELAY = 0.035

#: The SDK stamps each received video frame with the time libwebrtc means to render it
#: (``VideoFrameEvent.timestamp_us``: the receive jitter buffer's smoothed schedule, on
#: libwebrtc's monotonic clock, which on Linux is ``CLOCK_MONOTONIC`` like
#: ``time.monotonic()``; measured 8.7 ms ahead of the event reaching Python, 1 ms spread).
#: Unlike the moment the event is handled, it does not bunch when the event loop or the GIL is
#: busy (measured: a 2-tile room composite showed 30 repeated frames in 280 placed by handling
#: time). A stamp further than this from now is on another clock: handling time is used.
FRAME_TIME_SLACK = 0.5
#: The render time includes libwebrtc's fixed render delay (10 ms, ``kDefaultRenderDelayMs``):
#: taken off, a frame is due when it is decoded, as its arrival said before.
RENDER_DELAY = 0.010

#: Decoded frames the SDK's stream holds, on its native side and its Python side, while the
#: process or its event loop is busy: after a stall every frame that came meanwhile is handed
#: on at once, and with one native frame and two Python ones of slack the others were dropped
#: (skips, "native video stream queue overflow"). Each is placed by its own render
#: time, so one taken late still shows in its slot; eight (a quarter second at 30 fps) cover
#: the pipeline's latency. They hold memory only while the loop is behind.
VIDEO_QUEUE = 8

#: Audio arrives in chunks this long: fewer, larger chunks cost the SDK and the event loop less
#: (measured: about 0.07 of the track composite's CPU ratio against 10 ms chunks).
AUDIO_FRAME_MS = 40
T = TypeVar("T")


def video_stream(track: rtc.Track) -> rtc.VideoStream:
    """The decoded I420 frames of ``track`` as pyegress pulls them (``VIDEO_QUEUE`` frames of slack).

    Since livekit 1.2.1 a stream's queue gets only its own frame events (before, every stream
    woke up for every frame of every track; pyegress narrowed the SDK's queue itself).
    """
    return QueuedVideoStream(
        track, format=rtc.VideoBufferType.I420, capacity=VIDEO_QUEUE, native_queue=VIDEO_QUEUE
    )


def audio_stream(track: rtc.Track, sample_rate: int, channels: int) -> rtc.AudioStream:
    """The PCM of ``track`` as pyegress pulls it: resampled by the SDK, ``AUDIO_FRAME_MS`` chunks."""
    return rtc.AudioStream(
        track, sample_rate=sample_rate, num_channels=channels, frame_size_ms=AUDIO_FRAME_MS
    )


def recorder_token(
    api_key: str, api_secret: str, identity: str, room: str, *, name: str = "", metadata: str = ""
) -> str:
    """A join token for a recorder: kind egress, hidden, subscribe only."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        hidden=True,
        recorder=True,
        can_publish=False,
        can_publish_data=False,
        can_subscribe=True,
    )
    token = api.AccessToken(api_key, api_secret).with_identity(identity).with_kind("egress")
    if name:
        token = token.with_name(name)
    if metadata:
        token = token.with_metadata(metadata)
    return token.with_grants(grants).to_jwt()


def frame_time(timestamp_us: int) -> float:
    """The monotonic time a received video frame is due (see ``FRAME_TIME_SLACK``)."""
    now = time.monotonic()
    due = timestamp_us / 1e6 - RENDER_DELAY
    return due if abs(due - now) < FRAME_TIME_SLACK else now


async def wait_for_room(url: str, key: str, secret: str, room_name: str, wait: float, patient: bool) -> None:
    """Wait until ``room_name`` exists (a 404 ``SourceError`` after ``wait``); ``patient`` (a
    retry): a server that does not answer yet is waited for too (``RoomConnectionLostError``)."""
    deadline = time.monotonic() + wait
    async with api.LiveKitAPI(url, key, secret) as lk:
        while True:
            try:
                rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room_name]))
            except Exception as e:  # the server's answer (401 for bad credentials), else unreachable
                code = e.status if isinstance(e, api.TwirpError) else 503
                if not patient or code != 503:
                    raise SourceError(f"url: cannot reach LiveKit at {url}: {e}", code=code) from e
                if time.monotonic() >= deadline:
                    raise RoomConnectionLostError(
                        f"url: LiveKit at {url} did not answer for {wait:g} s: {e}"
                    ) from e
                await asyncio.sleep(0.5)
                continue
            if rooms.rooms:
                return
            if time.monotonic() >= deadline:
                raise SourceError(f"room_name: room {room_name!r} not found after {wait:g} s", code=404)
            await asyncio.sleep(0.25)


class RoomSource:
    """Frames and events of one room, for one recorder. Knows nothing about encoding."""

    def __init__(
        self,
        room_name: str,
        *,
        room: rtc.Room | None = None,
        url: str = "",
        api_key: str = "",
        api_secret: str = "",
        identity: str = "",
    ) -> None:
        self.room_name = room_name
        self._own = room is None
        self.room = room or rtc.Room()
        self._url, self._key, self._secret = url, api_key, api_secret
        remember(self, api_secret)
        self._identity = identity or "EG_recorder"
        self._handlers: list[tuple[rtc.room.EventTypes, Callable[..., Any]]] = []
        self.closed = False
        self._pumps: dict[str, tuple[asyncio.Task[None], Any]] = {}
        self._pumped: dict[str, rtc.Track] = {}
        self._video_sinks: dict[str, VideoInput[Picture]] = {}
        self.delays = JitterDelays()
        #: track sid -> the pumped track it syncs with, and whether the track is a video
        self._partners: dict[str, tuple[str | None, bool]] = {}
        self._changed = asyncio.Event()
        # quality report (pyegress.quality): every input fed, by sink, and the lags applied
        self.fed: dict[int, tuple[str, VideoInput[Picture] | AudioInput, set[str]]] = {}
        self.lags: dict[str, LagRange] = {}
        self.on("participant_connected", lambda *_: self._changed.set())
        self.on("participant_disconnected", lambda *_: self._changed.set())
        self.on("track_published", lambda *_: self._changed.set())
        self.on("track_subscribed", lambda *_: self._changed.set())
        self.on("track_muted", lambda _, pub: self.delays.muted(pub.sid, True))
        self.on("track_unmuted", lambda _, pub: self.delays.muted(pub.sid, False))

    @property
    def owns_room(self) -> bool:
        """True when the recorder joined by itself (not an application's ``rtc.Room``)."""
        return self._own

    def on(self, event: rtc.room.EventTypes, handler: Callable[..., Any]) -> None:
        """Listen to a room event until ``close``."""
        self.room.on(event, handler)
        self._handlers.append((event, handler))

    async def connect(self, wait: float, *, patient: bool = False) -> None:
        """Join hidden (room must exist within ``wait`` seconds), or check a given room.

        ``patient`` (a retry): a server that does not answer yet is waited for too, and not
        reaching it within ``wait`` is a :class:`RoomConnectionLostError` (worth a retry)."""
        if not self._own:
            if not self.room.isconnected():
                raise SourceError("room: the rtc.Room given to the recorder is not connected", code=412)
            if self.room.name != self.room_name:
                raise SourceError(
                    f"room_name: the given rtc.Room is {self.room.name!r}, not {self.room_name!r}", code=400
                )
            return
        if not (self._url and self._key and self._secret):
            raise SourceError(
                "url/api_key/api_secret: needed to join the room (or pass an rtc.Room)", code=400
            )
        await self._wait_for_room(wait, patient)
        token = recorder_token(self._key, self._secret, self._identity, self.room_name)
        try:
            await self.room.connect(self._url, token, rtc.RoomOptions(auto_subscribe=False))
        except Exception as e:
            raise SourceError(f"room_name: cannot join {self.room_name!r} at {self._url}: {e}") from e

    async def _wait_for_room(self, wait: float, patient: bool) -> None:
        await wait_for_room(self._url, self._key, self._secret, self.room_name, wait, patient)

    async def wait_for(self, probe: Callable[[], T | None], timeout: float) -> T | None:
        """Re-evaluate ``probe`` on every room change until it returns a value or time runs out."""
        return await wait_for_change(self._changed, probe, timeout)

    @property
    def identity(self) -> str:
        """The recorder's own identity in the room."""
        return self.room.local_participant.identity if not self._own else self._identity

    def participants(self) -> Mapping[str, rtc.RemoteParticipant]:
        """The remote participants now in the room, by identity."""
        return self.room.remote_participants

    def follow(self, sidecars: Sidecars) -> None:
        """Write the room's state now, its events and text streams from now on into ``sidecars``."""
        sidecars.attach(self.room)

    async def room_sid(self) -> str:
        """The room's sid (the server's, once it said)."""
        return await self.room.sid

    def publications(self) -> list[tuple[rtc.RemoteParticipant, rtc.RemoteTrackPublication]]:
        """Every remote (participant, publication) pair now in the room."""
        return [
            (p, pub) for p in self.room.remote_participants.values() for pub in p.track_publications.values()
        ]

    def subscribe(self, pub: Publication) -> None:
        """Ask for the track (a no-op when already subscribed)."""
        assert isinstance(pub, rtc.RemoteTrackPublication)  # from this room
        if not pub.subscribed:
            pub.set_subscribed(True)

    def set_layer(self, pub: Publication, quality: int) -> None:
        """Ask for simulcast layer ``quality`` (``rtc.VideoQuality``) of a subscribed video."""
        assert isinstance(pub, rtc.RemoteTrackPublication)
        pub.set_video_quality(quality)  # type: ignore[arg-type]

    def lag(self, sid: str) -> float:
        """How much later than its arrival media of track ``sid`` is placed (negative: earlier)
        so that it lines up with its partner (a participant's audio and camera): what the
        partner's jitter buffer holds beyond this track's. Audio held longer than its camera is
        placed earlier (``delays.MAX_ADVANCE`` at most) and the camera waits for the rest; a
        camera held longer makes its audio wait (``delays.MAX_LAG`` at most)."""
        if sid not in self._partners:
            self._partners[sid] = self._partner(sid)
        partner, is_video = self._partners[sid]
        lag = 0.0
        if partner is not None:
            held = self.delays.excess(partner) - self.delays.excess(sid)  # the partner's, beyond
            if is_video:  # it waits for what its audio cannot be advanced by
                lag = min(MAX_LAG - MAX_ADVANCE, max(0.0, held - MAX_ADVANCE))
            else:
                lag = min(MAX_LAG, max(-MAX_ADVANCE, held))
                video = self._video_sinks.get(partner)
                if video is not None:  # audio follows the phase at which its camera is shown
                    lag += video.shown_after
        self.lags.setdefault(sid, LagRange()).add(lag)
        return lag

    def _partner(self, sid: str) -> tuple[str | None, bool]:
        """The pumped track paired with ``sid`` for lip sync (a participant's audio with their
        camera, or their other video when no camera is pumped), and whether ``sid`` is a video."""
        for p in self.room.remote_participants.values():
            pubs = p.track_publications
            if sid in pubs:
                pumped = [pub for pub in pubs.values() if pub.sid in self._pumps and pub.sid != sid]
                if pubs[sid].kind == rtc.TrackKind.KIND_VIDEO:
                    audio = [pub for pub in pumped if pub.kind == rtc.TrackKind.KIND_AUDIO]
                    return (audio[0].sid if audio else None), True
                videos = [pub for pub in pumped if pub.kind == rtc.TrackKind.KIND_VIDEO]
                videos.sort(key=lambda pub: pub.source != rtc.TrackSource.SOURCE_CAMERA)
                return (videos[0].sid if videos else None), False
        return None, False

    def pump_video(self, track: Track, sink: VideoInput[Picture]) -> None:
        """Feed ``sink`` with decoded I420 frames of ``track`` until it ends."""
        assert isinstance(track, rtc.Track)  # from this room
        stream = video_stream(track)
        self._note_fed(track, sink)

        async def run() -> None:
            last: float | None = None
            async for ev in stream:
                if min(ev.frame.width, ev.frame.height) >= MIN_FRAME_SIDE:
                    lag = self.lag(track.sid)
                    if last is not None and lag != last:  # a new lag, not a late frame
                        sink.shift(lag - last)
                    last = lag
                    sink.push(ev.frame, frame_time(ev.timestamp_us) + lag)

        self._start(track, run(), stream)
        self._video_sinks[track.sid] = sink  # after _start: it lets go of the track's old pump

    def pump_audio(self, track: Track, sink: AudioInput, on_frame: Callable[[], None] | None = None) -> None:
        """Feed ``sink`` with PCM of ``track`` (resampled by the SDK to the sink's format)."""
        assert isinstance(track, rtc.Track)
        stream = audio_stream(track, sink.sample_rate, sink.channels)
        self._note_fed(track, sink)
        sink.reset()

        async def run() -> None:
            async for ev in stream:
                f = ev.frame
                pcm = np.frombuffer(f.data, np.int16).reshape(-1, f.num_channels)
                sink.push(pcm, time.monotonic() - AUDIO_PATH_DELAY + self.lag(track.sid))
                if on_frame is not None:
                    on_frame()

        self._start(track, run(), stream)

    def _note_fed(self, track: rtc.Track, sink: VideoInput[Picture] | AudioInput) -> None:
        """Remember ``sink`` for the quality report, named after the track's owner and source."""
        name = track.sid
        for p in self.room.remote_participants.values():
            pub = p.track_publications.get(track.sid)
            if pub is not None:
                name = feed_name(p.identity, pub.source)
        note_fed(self.fed, name, sink, track.sid)

    def _start(self, track: rtc.Track, coro: Any, stream: Any) -> None:
        sid = track.sid
        self.stop_pump(sid)
        task = asyncio.get_running_loop().create_task(coro, name=f"pyegress-pump-{sid}")
        self._pumps[sid] = (task, stream)
        self._pumped[sid] = track
        self._partners.clear()
        partner, _ = self._partner(sid)
        if partner is not None:  # only paired tracks need their jitter buffers read
            self.delays.watch(track)
            self.delays.watch(self._pumped[partner])

    def stop_pump(self, sid: str) -> None:
        """Stop feeding from track ``sid`` (unpublished, unsubscribed)."""
        entry = self._pumps.pop(sid, None)
        self._pumped.pop(sid, None)
        self._video_sinks.pop(sid, None)
        self._partners.clear()
        self.delays.forget(sid)
        if entry is not None:
            task, stream = entry
            task.cancel()
            asyncio.get_running_loop().create_task(stream.aclose())

    async def close(self) -> None:
        """Stop pumps, detach handlers, leave the room if we joined it."""
        self.closed = True
        await self.delays.close()
        self._pumped.clear()
        self._video_sinks.clear()
        for sid in list(self._pumps):
            task, stream = self._pumps.pop(sid)
            task.cancel()
            with contextlib.suppress(Exception):
                await stream.aclose()
        for event, handler in self._handlers:
            with contextlib.suppress(Exception):
                self.room.off(event, handler)
        self._handlers.clear()
        if self._own and self.room.isconnected():
            with contextlib.suppress(Exception):
                await self.room.disconnect()
