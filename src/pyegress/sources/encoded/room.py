"""A room through the encoded receive path, as a room recorder reads one (:class:`RoomFeed`).

:class:`EncodedRoomSource` joins hidden with an :class:`EncodedSubscriber` and keeps
participants and publications (:mod:`pyegress.sources.members`) in step with the server's
signaling, announcing each change with the rtc SDK's event names and arguments
(``participant_connected``, ``track_published``, ``track_muted``, ``active_speakers_changed``,
``participant_metadata_changed`` of the recorder itself for ``UpdateLayout``, ...). So the
room composite, written against those events, records from either path. Media is decoded by
PyAV and placed by its senders' RTP time (:mod:`.decode`): each tile keeps its own clock, and
a participant's voice lines up with their picture whatever the network does.

A lost connection is ridden out as the SDK rides it out: ``reconnecting``, a new session
joined with a fresh token (with backoff, until the recorder's ``reconnect_timeout`` gives up
by closing the source), then the room's state as it is now (tracks under new sids after a
server restart: unpublished, then published again) and ``reconnected``. A leave the server
asked for is ``disconnected`` with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from livekit import rtc
from livekit.protocol import models as pm

from ...errors import SourceError
from ...media.inputs import Picture
from ...media.timeline import AudioInput, VideoInput
from ...quality import LagRange
from ...redaction import remember
from ...sidecars import Sidecars
from ..members import Participant, Publication, Track, feed_name, note_fed, wait_for_change
from ..room import recorder_token, wait_for_room
from .decode import decoder_for
from .subscriber import (
    NORMAL_LEAVES,
    EncodedSubscriber,
    RemoteTrack,
    join_until_media,
    participant_fields,
    track_fields,
)

log = logging.getLogger("pyegress.source.encoded")

T = TypeVar("T")
#: Leave reasons the recorder handles as the end (not a loss to ride out): a normal close, or
#: another recorder that took over the identity.
_ENDS = NORMAL_LEAVES | {pm.DisconnectReason.DUPLICATE_IDENTITY}


@dataclass(frozen=True)
class _Track:
    """A subscribed track: its media is pumped by sid."""

    sid: str


class _Publication:
    """A track as the server describes it, with the rtc SDK's enum values."""

    def __init__(self, info: pm.TrackInfo, identity: str, participant_sid: str) -> None:
        self.remote = RemoteTrack(info.sid, identity, participant_sid, info)
        self.subscribed = False

    @property
    def info(self) -> pm.TrackInfo:
        return self.remote.info

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kind(self) -> rtc.TrackKind.ValueType:
        return rtc.TrackKind.KIND_VIDEO if self.remote.kind == "video" else rtc.TrackKind.KIND_AUDIO

    @property
    def source(self) -> rtc.TrackSource.ValueType:
        name = pm.TrackSource.Name(self.info.source).replace("_", "")  # SCREEN_SHARE: SCREENSHARE
        return rtc.TrackSource.Value(f"SOURCE_{name}")

    @property
    def muted(self) -> bool:
        return self.info.muted

    @property
    def simulcasted(self) -> bool:
        return self.info.simulcast or len(self.info.layers) > 1

    @property
    def width(self) -> int:
        return self.remote.size[0]

    @property
    def height(self) -> int:
        return self.remote.size[1]

    @property
    def mime_type(self) -> str:
        return self.info.mime_type

    @property
    def track(self) -> Track | None:
        return _Track(self.sid) if self.subscribed else None


class _Participant:
    """A participant as the server describes it, with the rtc SDK's enum values."""

    def __init__(self, info: pm.ParticipantInfo) -> None:
        self.info = info
        self.publications: dict[str, _Publication] = {}

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def identity(self) -> str:
        return self.info.identity

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kind(self) -> rtc.ParticipantKind.ValueType:
        return rtc.ParticipantKind.Value("PARTICIPANT_KIND_" + pm.ParticipantInfo.Kind.Name(self.info.kind))

    @property
    def metadata(self) -> str:
        return self.info.metadata

    @property
    def attributes(self) -> Mapping[str, str]:
        return dict(self.info.attributes)

    @property
    def joined_at(self) -> datetime.datetime | None:
        ms = self.info.joined_at_ms or self.info.joined_at * 1000
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc) if ms else None

    @property
    def track_publications(self) -> Mapping[str, Publication]:
        return self.publications


class EncodedRoomSource:
    """Events and decoded media of one room through the encoded receive path, for one recorder."""

    def __init__(self, room_name: str, *, url: str = "", api_key: str = "", api_secret: str = "",
                 identity: str = "") -> None:  # fmt: skip
        self.room_name = room_name
        self._url, self._key, self._secret = url, api_key, api_secret
        remember(self, api_secret)
        self._identity = identity or "EG_recorder"
        self.subscriber: EncodedSubscriber | None = None
        self.closed = False
        self.fed: dict[int, tuple[str, VideoInput[Picture] | AudioInput, set[str]]] = {}
        self.lags: dict[str, LagRange] = {}  # none: frames are placed by their RTP time
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._people: dict[str, _Participant] = {}  # by identity
        self._me = _Participant(pm.ParticipantInfo())
        self._sinks: dict[str, VideoInput[Picture] | AudioInput] = {}  # by track sid: what it feeds
        self._pumped: set[str] = set()  # subscribed with a decoder in this session
        self._changed = asyncio.Event()
        self._rejoining: asyncio.Task[None] | None = None
        self._sidecars: Sidecars | None = None

    @property
    def owns_room(self) -> bool:
        return True

    @property
    def identity(self) -> str:
        return self._identity

    def on(self, event: Any, handler: Callable[..., Any]) -> None:
        """Listen to a room event (the rtc SDK's name and arguments) until ``close``."""
        self._handlers.setdefault(str(event), []).append(handler)

    def _emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                handler(*args)
            except Exception:  # one listener's fault must not stop the room's state
                log.exception("room event %s", event)

    # --- joining ---------------------------------------------------------------------------

    async def connect(self, wait: float, *, patient: bool = False) -> None:
        """Join hidden (the room must exist within ``wait`` seconds); ``patient``: a retry."""
        await wait_for_room(self._url, self._key, self._secret, self.room_name, wait, patient)
        sub = await self._join(wait)
        self.subscriber = sub
        self._sync()

    async def _join(self, timeout: float) -> EncodedSubscriber:
        """A new session offered a media candidate it can use (its losses count once it is
        ``subscriber``)."""
        try:
            return await join_until_media(self._session, timeout, f"room {self.room_name}")
        except Exception as e:
            raise SourceError(f"room_name: cannot join {self.room_name!r} at {self._url}: {e}") from e

    async def _session(self, timeout: float) -> EncodedSubscriber:
        token = recorder_token(self._key, self._secret, self._identity, self.room_name)
        sub = EncodedSubscriber(self._url, token, lambda normal, why: self._left(sub, why))
        sub.on_change = lambda: self._sync() if sub is self.subscriber else None
        sub.on_event = lambda name, data: self._event(sub, name, data)
        try:
            await sub.connect(timeout)
        except BaseException:
            await sub.close()
            raise
        return sub

    def _left(self, sub: EncodedSubscriber, why: str) -> None:
        if sub is not self.subscriber or self.closed:
            return
        reason = sub.left_reason
        if reason is not None and reason in _ENDS:
            self._emit("disconnected", reason)
        elif self._rejoining is None:
            log.warning("room %s: connection lost (%s): joining again", self.room_name, why)
            self._emit("reconnecting")
            self._rejoining = asyncio.get_running_loop().create_task(self._rejoin(sub))

    async def _rejoin(self, old: EncodedSubscriber) -> None:
        """Join again until it works (the recorder bounds this by closing the source)."""
        self._pumped.clear()
        await old.close()
        delay = 0.25
        while not self.closed:
            try:
                sub = await self._join(10.0)
            except Exception as e:  # unreachable or refused for now: tried again
                log.info("room %s: not joined again yet: %s", self.room_name, e)
            else:
                if not sub.closed and not self.closed:
                    self.subscriber, self._rejoining = sub, None
                    self._sync()
                    for sid in list(self._sinks):  # the tracks of the last session still here
                        remote = sub.track(sid)
                        if remote is not None:
                            self._decode(remote, self._sinks[sid])
                    self._emit("reconnected")
                    return
                await sub.close()
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)

    # --- the room's state ------------------------------------------------------------------

    def participants(self) -> Mapping[str, Participant]:
        """The (visible) participants now in the room, by identity."""
        return self._people

    def publications(self) -> Sequence[tuple[Participant, Publication]]:
        return self._pairs()

    async def wait_for(self, probe: Callable[[], T | None], timeout: float) -> T | None:
        """Re-evaluate ``probe`` on every room change until it returns a value or time runs out."""
        return await wait_for_change(self._changed, probe, timeout, lambda: self.closed)

    async def room_sid(self) -> str:
        return self.subscriber.room.sid if self.subscriber is not None else ""

    def _sync(self) -> None:
        """Bring participants and publications in step with the subscriber's view, announcing
        each difference as the rtc SDK does."""
        sub = self.subscriber
        if sub is None or self.closed:
            return
        self._own(sub.me)
        # by identity; of two sessions of one identity (the server drops the older) the later
        joined = sorted(
            sub.participants.values(), key=lambda info: info.joined_at_ms or info.joined_at * 1000
        )
        now = {info.identity: info for info in joined}
        for identity in [i for i in self._people if i not in now]:
            self._gone(self._people.pop(identity))
        for identity, info in now.items():
            p = self._people.get(identity)
            if p is None or p.sid != info.sid:  # new, or the same identity joined again
                if p is not None:
                    self._gone(p)
                p = self._people[identity] = _Participant(pm.ParticipantInfo())
                p.info.CopyFrom(info)
                self._emit("participant_connected", p)
            else:
                self._changed_info(p, info)
            self._sync_tracks(p, info)
        self._changed.set()

    def _own(self, info: pm.ParticipantInfo) -> None:
        old = self._me.info.metadata
        self._me.info.CopyFrom(info)
        if info.metadata != old:
            self._emit("participant_metadata_changed", self._me, old, info.metadata)

    def _changed_info(self, p: _Participant, info: pm.ParticipantInfo) -> None:
        before = p.info
        p.info = pm.ParticipantInfo()
        p.info.CopyFrom(info)
        if before.metadata != info.metadata:
            self._emit("participant_metadata_changed", p, before.metadata, info.metadata)
        if before.name != info.name:
            self._emit("participant_name_changed", p, before.name, info.name)
        old, new = dict(before.attributes), dict(info.attributes)
        if old != new:
            changed = {k: v for k, v in new.items() if old.get(k) != v} | {k: "" for k in old if k not in new}
            self._emit("participant_attributes_changed", changed, p)

    def _sync_tracks(self, p: _Participant, info: pm.ParticipantInfo) -> None:
        tracks = {t.sid: t for t in info.tracks}
        for sid in [s for s in p.publications if s not in tracks]:
            self._unpublished(p, p.publications.pop(sid))
        for sid, t in tracks.items():
            pub = p.publications.get(sid)
            if pub is None:
                pub = p.publications[sid] = _Publication(t, info.identity, info.sid)
                self._emit("track_published", pub, p)
                continue
            muted = pub.muted
            pub.remote = RemoteTrack(sid, info.identity, info.sid, t)
            if t.muted != muted:
                self._emit("track_muted" if t.muted else "track_unmuted", p, pub)

    def _unpublished(self, p: _Participant, pub: _Publication) -> None:
        self._forget(pub.sid)
        self._emit("track_unpublished", pub, p)

    def _gone(self, p: _Participant) -> None:
        for pub in list(p.publications.values()):
            self._unpublished(p, pub)
        p.publications.clear()
        self._emit("participant_disconnected", p)

    def _event(self, sub: EncodedSubscriber, name: str, data: dict[str, Any]) -> None:
        """The subscriber's room events: active speakers for the recorder, every one for the
        events sidecar."""
        if sub is not self.subscriber:
            return
        if name == "active_speakers_changed":
            speakers = [self._people[i] for i in data["speakers"] if i in self._people]
            self._emit("active_speakers_changed", speakers)
        if self._sidecars is not None:
            self._sidecars.room_event(name, **data)

    def follow(self, sidecars: Sidecars) -> None:
        """Write the room's state now and its events from now on into ``sidecars``."""
        self._sidecars = sidecars
        for p in self._people.values():
            tracks = [track_fields(pub.info) for pub in p.publications.values()]
            sidecars.present(participant_fields(p.info), tracks)

    # --- media -------------------------------------------------------------------------------

    def subscribe(self, pub: Publication) -> None:
        """Ask for the track: ``track_subscribed`` follows (its media flows once pumped)."""
        found = next(((p, q) for p, q in self._pairs() if q.sid == pub.sid), None)
        if found is None or found[1].subscribed:
            return
        p, own = found
        own.subscribed = True
        track = own.track
        asyncio.get_running_loop().call_soon(
            lambda: self._emit("track_subscribed", track, own, p) if own.subscribed else None
        )

    def _pairs(self) -> list[tuple[_Participant, _Publication]]:
        return [(p, pub) for p in self._people.values() for pub in p.publications.values()]

    def set_layer(self, pub: Publication, quality: int) -> None:
        """Ask for simulcast layer ``quality`` (``rtc.VideoQuality``, the same values as the
        signaling's) of a subscribed video."""
        sub = self.subscriber
        remote = sub.track(pub.sid) if sub is not None else None
        if sub is not None and remote is not None:
            sub.set_layer(remote, quality)

    def pump_video(self, track: Track, sink: VideoInput[Picture]) -> None:
        """Decode ``track`` into ``sink`` until it goes (a no-op when it already feeds it)."""
        self._pump(track.sid, sink)

    def pump_audio(self, track: Track, sink: AudioInput) -> None:
        """Decode ``track``'s Opus into ``sink`` (the mixer's format) until it goes."""
        self._pump(track.sid, sink)

    def _pump(self, sid: str, sink: VideoInput[Picture] | AudioInput) -> None:
        sub = self.subscriber
        remote = sub.track(sid) if sub is not None else None
        if remote is None or (sid in self._pumped and self._sinks.get(sid) is sink):
            return
        self._sinks[sid] = sink
        p = self._people.get(remote.participant)
        name = feed_name(p.identity, p.publications[sid].source) if p and sid in p.publications else sid
        note_fed(self.fed, name, sink, sid)
        self._decode(remote, sink)

    def _decode(self, remote: RemoteTrack, sink: VideoInput[Picture] | AudioInput) -> None:
        sub = self.subscriber
        assert sub is not None
        sid = remote.sid
        decoder = decoder_for(remote.codec, sink, lambda: sub.want_keyframe(sid))
        if decoder is None:
            log.warning("track %s: codec %r is not decoded: not recorded", sid, remote.codec)
            return
        self._pumped.add(sid)
        sub.subscribe(remote, decoder, top_first=False)

    def receiving(self) -> list[str]:
        """The sids of the pumped tracks whose frames come now (for tests and diagnostics)."""
        sub = self.subscriber
        if sub is None or not sub.connected:
            return []
        return [sid for sid in self._pumped if sub.stats(sid)[0] > 0]

    def stop_pump(self, sid: str) -> None:
        """Stop feeding from track ``sid`` (unpublished, or not recorded any more)."""
        sub = self.subscriber
        remote = sub.track(sid) if sub is not None else None
        if sid in self._pumped and sub is not None and remote is not None:
            sub.unsubscribe(remote)
        self._forget(sid)

    def _forget(self, sid: str) -> None:
        self._pumped.discard(sid)
        self._sinks.pop(sid, None)

    async def close(self) -> None:
        """Leave the room."""
        self.closed = True
        self._changed.set()
        self._handlers.clear()
        self._sidecars = None
        if self._rejoining is not None:
            self._rejoining.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._rejoining
        sub, self.subscriber = self.subscriber, None
        if sub is not None:
            await sub.close()
