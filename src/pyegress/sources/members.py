"""What a room recorder reads of a room's participants and tracks, whichever receive path feeds it.

The rtc SDK's ``RemoteParticipant`` / ``RemoteTrackPublication`` / ``Track`` satisfy these
protocols as they are; the encoded receive path (:mod:`pyegress.sources.encoded.room`) builds
its own from LiveKit's signaling. Enum values are the rtc SDK's (``rtc.TrackKind``,
``rtc.TrackSource``, ``rtc.ParticipantKind``), so the recorders compare against one set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from livekit import rtc

from ..media.inputs import Picture
from ..media.timeline import AudioInput, VideoInput
from ..quality import LagRange
from ..sidecars import Sidecars

T = TypeVar("T")


class Track(Protocol):
    """A subscribed track: what its media is pumped from."""

    @property
    def sid(self) -> str: ...


class Publication(Protocol):
    """A published track as the room describes it."""

    @property
    def sid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> rtc.TrackKind.ValueType: ...
    @property
    def source(self) -> rtc.TrackSource.ValueType: ...
    @property
    def muted(self) -> bool: ...
    @property
    def simulcasted(self) -> bool: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def mime_type(self) -> str: ...
    @property
    def subscribed(self) -> bool: ...
    @property
    def track(self) -> Track | None: ...


class Participant(Protocol):
    """A participant in the room (a remote one, or the recorder itself for its metadata)."""

    @property
    def sid(self) -> str: ...
    @property
    def identity(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> rtc.ParticipantKind.ValueType: ...
    @property
    def metadata(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, str]: ...
    @property
    def joined_at(self) -> datetime.datetime | None: ...
    @property
    def track_publications(self) -> Mapping[str, Publication]: ...


class RoomFeed(Protocol):
    """A room's events and media for one recorder (:class:`pyegress.sources.room.RoomSource`
    through the rtc SDK, :class:`pyegress.sources.encoded.room.EncodedRoomSource` encoded)."""

    room_name: str
    closed: bool
    #: every input fed, by id of its sink: (name, sink, track sids), for the quality report
    fed: dict[int, tuple[str, VideoInput[Picture] | AudioInput, set[str]]]
    #: the lag corrections applied, by track sid
    lags: dict[str, LagRange]

    @property
    def owns_room(self) -> bool: ...
    @property
    def identity(self) -> str: ...
    def on(self, event: Any, handler: Callable[..., Any]) -> None: ...
    async def connect(self, wait: float, *, patient: bool = False) -> None: ...
    async def wait_for(self, probe: Callable[[], T | None], timeout: float) -> T | None: ...
    def participants(self) -> Mapping[str, Participant]: ...
    def publications(self) -> Sequence[tuple[Participant, Publication]]: ...
    def subscribe(self, pub: Publication) -> None: ...
    def set_layer(self, pub: Publication, quality: int) -> None: ...
    def pump_video(self, track: Track, sink: VideoInput[Picture]) -> None: ...
    def pump_audio(self, track: Track, sink: AudioInput) -> None: ...
    def stop_pump(self, sid: str) -> None: ...
    async def room_sid(self) -> str: ...
    def follow(self, sidecars: Sidecars) -> None: ...
    async def close(self) -> None: ...


async def wait_for_change(
    changed: asyncio.Event,
    probe: Callable[[], T | None],
    timeout: float,
    gone: Callable[[], bool] = lambda: False,
) -> T | None:
    """Re-evaluate ``probe`` each time ``changed`` is set until it returns a value, time runs
    out or ``gone()`` (the room was left) says waiting is pointless."""
    deadline = time.monotonic() + timeout
    while True:
        changed.clear()
        found = probe()
        if found is not None or gone():
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), min(left, 0.5))


def feed_name(identity: str, source: rtc.TrackSource.ValueType) -> str:
    """An input's name in the quality report: ``identity/camera``, ``identity/microphone``..."""
    return f"{identity}/{rtc.TrackSource.Name(source).removeprefix('SOURCE_').lower()}"


def note_fed(
    fed: dict[int, tuple[str, VideoInput[Picture] | AudioInput, set[str]]],
    name: str,
    sink: VideoInput[Picture] | AudioInput,
    sid: str,
) -> None:
    """Remember that track ``sid`` (named ``identity/source``) feeds ``sink``, for the quality
    report (one entry per sink, with every track that fed it)."""
    _, _, sids = fed.get(id(sink), (name, sink, set()))
    fed[id(sink)] = (name, sink, sids | {sid})
