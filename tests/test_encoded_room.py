"""The encoded room source's view of a room, from LiveKit's signaling messages (no server).

A room composite is written against the rtc SDK's events; on the encoded path they come from
``EncodedRoomSource``, which turns the server's ``ParticipantInfo`` updates into them. Here
the updates are fed to a subscriber that never connects (its peer connection is made, not
used): what a server sends is built with livekit-protocol's own messages.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from livekit import rtc
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

if sys.version_info < (3, 11):  # aiortc 1.16 needs Python 3.11; on 3.10 there is no encoded path
    pytest.skip("aiortc 1.16 is installed on Python 3.11 and later only", allow_module_level=True)

from pyegress.selection import Rule, Selection
from pyegress.sources.encoded.room import EncodedRoomSource
from pyegress.sources.encoded.subscriber import EncodedSubscriber
from pyegress.sources.members import Participant, Publication


def _track(sid: str, *, video: bool = True, muted: bool = False, screen: bool = False) -> pm.TrackInfo:
    source = (
        pm.TrackSource.SCREEN_SHARE
        if screen
        else (pm.TrackSource.CAMERA if video else pm.TrackSource.MICROPHONE)
    )
    return pm.TrackInfo(
        sid=sid,
        type=pm.TrackType.VIDEO if video else pm.TrackType.AUDIO,
        source=source,
        muted=muted,
        mime_type="video/H264" if video else "audio/red",
        width=640 if video else 0,
        height=360 if video else 0,
        simulcast=video,
        layers=[
            pm.VideoLayer(quality=pm.VideoQuality.LOW, width=160, height=90),
            pm.VideoLayer(quality=pm.VideoQuality.HIGH, width=640, height=360),
        ]
        if video
        else [],
    )


def _person(identity: str, sid: str, version: int, *tracks: pm.TrackInfo, **kw: Any) -> pm.ParticipantInfo:
    return pm.ParticipantInfo(
        identity=identity, sid=sid, version=version, state=pm.ParticipantInfo.ACTIVE, tracks=tracks, **kw
    )


class _Room:
    """An encoded room source whose subscriber is handed the server's updates directly."""

    def __init__(self) -> None:
        self.source = EncodedRoomSource("room", url="ws://127.0.0.1:1", api_key="k", api_secret="s",
                                        identity="EG_me")  # fmt: skip
        sub = EncodedSubscriber("ws://127.0.0.1:1", "token", lambda normal, why: None)
        sub.me.CopyFrom(pm.ParticipantInfo(identity="EG_me", sid="PA_me"))
        self.source.subscriber = sub
        sub.on_change = self.source._sync  # as EncodedRoomSource._join hooks it
        self.seen: list[tuple[str, tuple[Any, ...]]] = []
        for event in ("participant_connected", "participant_disconnected", "track_published",
                      "track_unpublished", "track_muted", "track_unmuted", "participant_metadata_changed",
                      "participant_attributes_changed", "track_subscribed"):  # fmt: skip
            self.source.on(event, lambda *args, e=event: self.seen.append((e, args)))

    def send(self, *infos: pm.ParticipantInfo) -> None:
        sub = self.source.subscriber
        assert sub is not None
        sub._message(pr.SignalResponse(update=pr.ParticipantUpdate(participants=infos)))

    def names(self) -> list[str]:
        names = [e for e, _ in self.seen]
        self.seen.clear()
        return names

    async def close(self) -> None:
        await self.source.close()


async def test_updates_become_the_rtc_sdks_events_with_its_values() -> None:
    room = _Room()
    cam, mic = _track("TR_cam"), _track("TR_mic", video=False)
    room.send(_person("alice", "PA_a", 1, cam, mic, kind=pm.ParticipantInfo.AGENT, name="Alice"))
    assert room.names() == ["participant_connected", "track_published", "track_published"]
    alice = room.source.participants()["alice"]
    assert (alice.name, alice.kind) == ("Alice", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    pubs: dict[str, Publication] = dict(alice.track_publications)
    assert (
        pubs["TR_cam"].kind == rtc.TrackKind.KIND_VIDEO
        and pubs["TR_cam"].source == rtc.TrackSource.SOURCE_CAMERA
    )
    assert pubs["TR_mic"].kind == rtc.TrackKind.KIND_AUDIO
    assert pubs["TR_mic"].source == rtc.TrackSource.SOURCE_MICROPHONE
    assert (pubs["TR_cam"].width, pubs["TR_cam"].height, pubs["TR_cam"].simulcasted) == (640, 360, True)
    assert room.source.subscriber is not None and room.source.subscriber.track("TR_mic").codec == "opus"  # type: ignore[union-attr]

    # mute, metadata, attributes: one event each, with the rtc SDK's arguments
    room.send(_person("alice", "PA_a", 2, _track("TR_cam", muted=True), mic, kind=pm.ParticipantInfo.AGENT,
                      name="Alice", metadata="m1", attributes={"consent": "no"}))  # fmt: skip
    assert room.names() == ["participant_metadata_changed", "participant_attributes_changed", "track_muted"]
    assert room.source.participants()["alice"].attributes == {"consent": "no"}
    # an older version than the one held changes nothing
    room.send(_person("alice", "PA_a", 1, cam, mic))
    assert room.names() == []

    # a screen share published, the microphone unpublished
    screen = _track("TR_scr", screen=True)
    room.send(_person("alice", "PA_a", 3, _track("TR_cam", muted=True), screen, kind=pm.ParticipantInfo.AGENT,
                      name="Alice", metadata="m1", attributes={"consent": "no"}))  # fmt: skip
    assert room.names() == ["track_unpublished", "track_published"]
    assert room.source.participants()["alice"].track_publications["TR_scr"].source == (
        rtc.TrackSource.SOURCE_SCREENSHARE
    )

    # the same identity under a new sid (it left and came back): a departure, then a new arrival
    gone = pm.ParticipantInfo(identity="alice", sid="PA_a", version=4, state=pm.ParticipantInfo.DISCONNECTED)
    room.send(gone, _person("alice", "PA_a2", 1, cam))
    assert room.names() == [
        "track_unpublished", "track_unpublished", "participant_disconnected",
        "participant_connected", "track_published",
    ]  # fmt: skip
    # leaving
    room.send(
        pm.ParticipantInfo(identity="alice", sid="PA_a2", version=2, state=pm.ParticipantInfo.DISCONNECTED)
    )
    assert room.names() == ["track_unpublished", "participant_disconnected"]
    assert room.source.participants() == {}
    await room.close()


async def test_the_recorders_own_metadata_carries_update_layout() -> None:
    """``UpdateLayout`` through a LiveKit server sets the recorder's metadata: it is announced
    for the recorder itself (identity ``EG_me``), as the SDK's local participant's is."""
    room = _Room()
    room.send(pm.ParticipantInfo(identity="EG_me", sid="PA_me", version=3, metadata='{"layout": "speaker"}'))
    (event, (who, old, new)), *_ = room.seen
    assert event == "participant_metadata_changed" and who.identity == room.source.identity == "EG_me"
    assert (old, new) == ("", '{"layout": "speaker"}')
    assert room.source.participants() == {}  # never a tile of its own
    await room.close()


async def test_consent_rules_judge_encoded_participants() -> None:
    room = _Room()
    room.send(
        _person("bot", "PA_b", 1, kind=pm.ParticipantInfo.AGENT, attributes={"recording_consent": "false"})
    )
    bot: Participant = room.source.participants()["bot"]
    assert not Selection(exclude=(Rule.parse("kind:agent"),)).records(bot)
    assert not Selection(exclude=(Rule.parse("attribute:recording_consent=false"),)).records(bot)
    assert Selection(exclude=(Rule.parse("identity:alice"),)).records(bot)
    # a kind whose number differs between the signaling and the rtc SDK (CONNECTOR: 7 and 5)
    room.send(_person("conn", "PA_c", 1, kind=pm.ParticipantInfo.CONNECTOR))
    assert room.source.participants()["conn"].kind == rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR
    await room.close()


async def test_subscribing_announces_the_track_once() -> None:
    room = _Room()
    room.send(_person("alice", "PA_a", 1, _track("TR_cam")))
    room.names()
    pub = room.source.participants()["alice"].track_publications["TR_cam"]
    room.source.subscribe(pub)
    room.source.subscribe(pub)  # asked twice: announced once
    await asyncio.sleep(0)
    assert room.names() == ["track_subscribed"]
    assert pub.subscribed and pub.track is not None and pub.track.sid == "TR_cam"
    await room.close()
