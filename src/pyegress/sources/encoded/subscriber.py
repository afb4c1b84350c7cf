"""A hidden recorder in a room that receives tracks encoded, as their senders sent them.

It speaks LiveKit's signaling (:mod:`.signal`): the server's join answer lists the room, its
subscriber offers are answered by an aiortc peer connection (trickle ICE both ways), tracks are
asked for with ``UpdateSubscription`` (top simulcast layer, never paused, through
``UpdateTrackSettings``). Received frames are taken from aiortc's receivers before decoding
(:mod:`pyegress.compat.aiortc`) and handed on as :class:`EncodedFrame`. Video waits for a key
frame (asked for with a PLI) when a track starts and after loss, so what is handed on always
decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription, candidate_from_sdp, candidate_to_sdp
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from ...compat import aiortc as compat
from ...media.encoded import EncodedFrame, RtpUnwrapper, SenderClock, is_keyframe, picture_size
from ..members import wait_for_change
from .signal import SignalClient

log = logging.getLogger("pyegress.source.encoded")

T = TypeVar("T")
#: Least time between two key-frame requests for one track.
PLI_INTERVAL = 0.5
#: How long the start of a simulcast track waits for a key frame of its top layer: the server
#: forwards a lower layer first, until its estimate of the recorder's bandwidth allows the top
#: one (a browser's 640x360 key frame came 0-1.07 s after its first 320x180 one, measured). A
#: sender that never sends its top layer (its encoder scaled down) is recorded from the lower
#: layer's key frame it held meanwhile: nothing after that key frame is lost.
TOP_LAYER_WAIT = 2.5
#: How long the media connection may take to come up.
CONNECT_TIMEOUT = 15.0
#: Server leave reasons that end a recording normally (the room closed, the recorder removed).
NORMAL_LEAVES = frozenset(
    {pm.DisconnectReason.ROOM_DELETED, pm.DisconnectReason.ROOM_CLOSED,
     pm.DisconnectReason.PARTICIPANT_REMOVED, pm.DisconnectReason.CLIENT_INITIATED}
)  # fmt: skip

Sink = Callable[[EncodedFrame], None]
#: ``on_event(name, data)``: a room event in the events sidecar's words (``participant_joined``,
#: ``track_muted``, ``active_speakers_changed``, ...; :mod:`pyegress.sidecars`).
EventHook = Callable[[str, dict[str, Any]], None]


def participant_fields(info: pm.ParticipantInfo) -> dict[str, Any]:
    """A participant as the events sidecar names one."""
    kind = pm.ParticipantInfo.Kind.Name(info.kind).lower()
    return {"participant": info.identity, "participant_sid": info.sid, "participant_kind": kind}


def track_fields(info: pm.TrackInfo) -> dict[str, Any]:
    """A track as the events sidecar names one."""
    return {
        "track_sid": info.sid,
        "track_kind": "video" if info.type == pm.TrackType.VIDEO else "audio",
        "source": pm.TrackSource.Name(info.source).lower(),
        "muted": info.muted,
    }


@dataclass(frozen=True)
class RemoteTrack:
    """A published track as the server described it."""

    sid: str
    participant: str  # identity
    participant_sid: str
    info: pm.TrackInfo

    @property
    def kind(self) -> str:
        return "video" if self.info.type == pm.TrackType.VIDEO else "audio"

    @property
    def codec(self) -> str:
        """The codec its frames arrive in (the server turns a sender's RED into Opus for a
        subscriber that did not offer RED)."""
        codec = self.info.mime_type.split("/")[-1].lower()
        return "opus" if codec == "red" else codec

    @property
    def size(self) -> tuple[int, int]:
        """The largest picture the sender sends (its top simulcast layer)."""
        sizes = [(layer.width, layer.height) for layer in self.info.layers]
        sizes.append((self.info.width, self.info.height))
        return max(sizes, key=lambda s: s[0] * s[1])


class _Receiving:
    """One subscribed track's state: its sink, clocks and key-frame gate."""

    def __init__(self, sink: Sink, kind: str) -> None:
        self.sink = sink
        self.video = kind == "video"
        self.unwrap = RtpUnwrapper()
        self.clock = SenderClock()
        self.need_key = self.video
        self.top: tuple[int, int] | None = None  # a simulcast track's top layer
        self.first_key = 0.0  # when a lower layer's key frame came while one is needed
        # a lower layer's frames from its key frame on, held while waiting for the top layer's
        self.held: list[tuple[RTCRtpCodecParameters, bytes, int, float, bool]] = []
        self.last_pli = 0.0
        self.frames = 0
        self.skipped = 0  # frames dropped while waiting for a key frame
        #: when the track was unmuted: the first frame that came since says so (EncodedFrame.resumed);
        #: not the first handed on, which may be one aiortc held from before the mute
        self.resumed_at: float | None = None


async def join_until_media(join: Callable[[float], Awaitable[EncodedSubscriber]], timeout: float,
                           what: str) -> EncodedSubscriber:  # fmt: skip
    """A session (``join(seconds)``: signaling up) offered a media candidate it can use, joined
    again until ``timeout`` when one was not: a busy livekit-server can offer a session only its
    ICE-TCP candidate (4 of 100 subscribers joining at once, and once in a CI run), which aiortc
    cannot use, and a new session gets new candidates. A session the server closed (the room
    ended) is not joined again; a connection lost later is the recorder's to ride out."""
    deadline = time.monotonic() + timeout
    while True:
        sub = await join(max(deadline - time.monotonic(), 1.0))
        try:
            up = await sub.media_usable(CONNECT_TIMEOUT + 1.0)  # the session's own watch ends it first
        except BaseException:
            await sub.close()
            raise
        if up and not sub.closed:
            return sub
        why = sub.ended_why or f"no usable candidate within {CONNECT_TIMEOUT:g} s"
        normal = sub.left_reason is not None and sub.left_reason in NORMAL_LEAVES
        await sub.close()
        if normal or time.monotonic() >= deadline:
            raise ConnectionError(f"the media connection did not come up: {why}")
        log.warning("%s: the media connection did not come up (%s): joining again", what, why)
        await asyncio.sleep(0.25)


class EncodedSubscriber:
    """Joins with ``token`` (a hidden recorder's) and hands on frames of subscribed tracks.

    ``on_disconnected(normal, why)``: the room was left for good: ``normal`` when the server
    closed it or removed the recorder, else the connection was lost."""

    def __init__(self, url: str, token: str, on_disconnected: Callable[[bool, str], None]) -> None:
        compat.check()
        self._url, self._token = url, token
        self._on_disconnected = on_disconnected
        self._signal = SignalClient(self._message, self._lost)
        # max-bundle, as LiveKit bundles every m-line: under aiortc's default (balanced) the 2nd..nth
        # track of a kind in one offer takes the 1st's transport before bundling moves the 1st
        # to the shared one, so they stay on a transport that never starts and their packets
        # reach the 1st's receiver (8 tracks asked for at once: no frame from any)
        config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self._pc = RTCPeerConnection(config)
        self._pc.on("connectionstatechange", self._pc_state)
        self.room = pm.Room()
        self.me = pm.ParticipantInfo()
        self.participants: dict[str, pm.ParticipantInfo] = {}  # by sid
        self._mid_track: dict[str, str] = {}  # subscriber m-line mid -> track sid
        self._receiving: dict[str, _Receiving] = {}  # track sid -> state
        self._offers: asyncio.Queue[pr.SessionDescription] = asyncio.Queue()
        self._trickles: set[asyncio.Task[None]] = set()
        self._described = asyncio.Event()  # the first offer is set: candidates can be added
        self._connected = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._trickled = False
        self._server_udp = 0  # server candidates aiortc can use (it has no ICE-TCP)
        self.on_unpublished: Callable[[RemoteTrack], None] | None = None
        self.on_participant_left: Callable[[pm.ParticipantInfo], None] | None = None
        self.on_muted: Callable[[RemoteTrack, bool], None] | None = None  # (track, muted now)
        self.on_event: EventHook | None = None
        self.on_change: Callable[[], None] | None = None  # participants or tracks changed
        self._speaking: dict[str, float] = {}  # participant sid -> audio level, of active speakers
        self.left_reason: int | None = None  # the server's DisconnectReason when it asked to leave
        self.ended_why = ""  # why the session ended, when it ended on its own
        self.closed = False

    # --- the room ------------------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> None:
        """Join the room; the subscriber connection comes up with the server's first offer."""
        join = await self._signal.join(self._url, self._token, timeout)
        self.room.CopyFrom(join.room)
        self.me.CopyFrom(join.participant)
        for p in join.other_participants:
            self.participants[p.sid] = p
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="pyegress-subscriber")
        self._changed.set()

    def tracks(self) -> list[RemoteTrack]:
        """Every published track of every participant now in the room."""
        return [
            RemoteTrack(t.sid, p.identity, p.sid, t) for p in self.participants.values() for t in p.tracks
        ]

    @property
    def connected(self) -> bool:
        """The media connection came up."""
        return self._connected.is_set()

    async def media_usable(self, timeout: float) -> bool:
        """Wait until the server offered a candidate aiortc can use or the media connection is
        up (True), the session ended, or ``timeout``: the first offer comes right after the join,
        well before ICE completes (waiting for that put 0.2 s on every start)."""
        usable = lambda: True if self._server_udp or self.connected else None  # noqa: E731
        up = await wait_for_change(self._changed, usable, timeout, lambda: self.closed)
        return bool(up)

    def track(self, sid: str) -> RemoteTrack | None:
        return next((t for t in self.tracks() if t.sid == sid), None)

    async def wait_for(self, probe: Callable[[], T | None], timeout: float) -> T | None:
        """Re-evaluate ``probe`` on every room change until it returns a value or time runs out."""
        return await wait_for_change(self._changed, probe, timeout, lambda: self.closed)

    # --- subscriptions -----------------------------------------------------------------

    def subscribe(self, track: RemoteTrack, sink: Sink, *, top_first: bool = True) -> None:
        """Ask for ``track`` (its top layer, never paused) and hand its frames to ``sink``.

        ``top_first``: a simulcast video starts (and restarts after loss) on its top layer's key
        frame, a lower layer's frames held up to :data:`TOP_LAYER_WAIT` meanwhile, as a file
        written as sent must. A decoded recording passes False: it scales any layer to its
        picture, and a lower layer's frames shown at once beat a tile left waiting for seconds
        (a browser's grid tile stayed on its placeholder 2.6 s in a CI run)."""
        r = self._receiving[track.sid] = _Receiving(sink, track.kind)
        if r.video and top_first and (track.info.simulcast or len(track.info.layers) > 1):
            r.top = track.size
        pt = pm.ParticipantTracks(participant_sid=track.participant_sid, track_sids=[track.sid])
        self._signal.send(pr.SignalRequest(subscription=pr.UpdateSubscription(
            track_sids=[track.sid], subscribe=True, participant_tracks=[pt])))  # fmt: skip
        if track.kind == "video":
            w, h = track.size
            settings = pr.UpdateTrackSettings(
                track_sids=[track.sid], disabled=False, quality=pm.VideoQuality.HIGH, width=w, height=h
            )
            self._signal.send(pr.SignalRequest(track_setting=settings))

    def set_layer(self, track: RemoteTrack, quality: int) -> None:
        """Ask for simulcast layer ``quality`` (``VideoQuality``) of a subscribed video: a
        restart (after loss) waits for a key frame of that layer's size, not the top one's."""
        sizes = {layer.quality: (layer.width, layer.height) for layer in track.info.layers}
        w, h = sizes.get(quality, track.size)  # type: ignore[call-overload]
        r = self._receiving.get(track.sid)
        if r is not None and r.top is not None:
            r.top = (w, h)
        settings = pr.UpdateTrackSettings(track_sids=[track.sid], disabled=False, quality=quality,  # type: ignore[arg-type]
                                          width=w, height=h)  # fmt: skip
        self._signal.send(pr.SignalRequest(track_setting=settings))

    def unsubscribe(self, track: RemoteTrack) -> None:
        """Stop receiving ``track``."""
        self._receiving.pop(track.sid, None)
        pt = pm.ParticipantTracks(participant_sid=track.participant_sid, track_sids=[track.sid])
        self._signal.send(pr.SignalRequest(subscription=pr.UpdateSubscription(
            track_sids=[track.sid], subscribe=False, participant_tracks=[pt])))  # fmt: skip

    def want_keyframe(self, sid: str) -> None:
        """Hand on nothing of video track ``sid`` until its next key frame, asked for now."""
        r = self._receiving.get(sid)
        if r is not None and r.video:
            r.need_key, r.last_pli = True, 0.0

    def stats(self, sid: str) -> tuple[int, int]:
        """Frames handed on and frames skipped (waiting for a key frame) of track ``sid``."""
        r = self._receiving.get(sid)
        return (r.frames, r.skipped) if r is not None else (0, 0)

    # --- signaling -------------------------------------------------------------------------

    def _message(self, res: pr.SignalResponse) -> None:
        kind = res.WhichOneof("message")
        if kind == "offer":
            self._offers.put_nowait(res.offer)
        elif kind == "trickle":
            task = asyncio.get_running_loop().create_task(self._remote_candidate(res.trickle))
            self._trickles.add(task)
            task.add_done_callback(self._trickle_done)
        elif kind == "update":
            self._update(res.update.participants)
        elif kind == "track_unpublished":
            self._unpublished(res.track_unpublished.track_sid)
        elif kind == "room_update":
            self.room.CopyFrom(res.room_update.room)
        elif kind == "speakers_changed":
            self._speakers(res.speakers_changed.speakers)
        elif kind == "leave":
            leave = res.leave
            self.left_reason = leave.reason
            self._end(
                leave.reason in NORMAL_LEAVES,
                f"the server asked to leave ({pm.DisconnectReason.Name(leave.reason)})",
            )

    def _update(self, infos: Iterable[pm.ParticipantInfo]) -> None:
        for info in infos:
            if info.sid == self.me.sid or info.identity == self.me.identity:
                if not info.version or info.version >= self.me.version:  # its metadata: UpdateLayout
                    self.me.CopyFrom(info)
                continue
            old = self.participants.get(info.sid)
            if info.state == pm.ParticipantInfo.DISCONNECTED:
                if old is not None:
                    del self.participants[info.sid]
                    self._event("participant_left", participant_fields(old))
                    if self.on_participant_left is not None:
                        self.on_participant_left(old)
                continue
            if old is not None and info.version and old.version > info.version:
                continue  # an older state than the one held
            self.participants[info.sid] = info
            before = {t.sid: t for t in old.tracks} if old is not None else {}
            if old is None:
                self._event("participant_joined", participant_fields(info))
            for t in info.tracks:
                if t.sid not in before:
                    self._event("track_published", participant_fields(info) | track_fields(t))
                elif before[t.sid].muted != t.muted:
                    self._event("track_muted" if t.muted else "track_unmuted",
                                participant_fields(info) | track_fields(t))  # fmt: skip
                    r = self._receiving.get(t.sid)
                    if r is not None and not t.muted:
                        r.resumed_at = time.monotonic()
                    if self.on_muted is not None:
                        self.on_muted(RemoteTrack(t.sid, info.identity, info.sid, t), t.muted)
            now = {t.sid for t in info.tracks}
            for t in before.values():
                if t.sid not in now:
                    self._gone(RemoteTrack(t.sid, info.identity, info.sid, t))
        self._changes()

    def _speakers(self, speakers: Iterable[pm.SpeakerInfo]) -> None:
        """The server sends the speakers whose state changed: the active ones, loudest first."""
        for s in speakers:
            if s.active:
                self._speaking[s.sid] = s.level
            else:
                self._speaking.pop(s.sid, None)
        names = {p.sid: p.identity for p in self.participants.values()}
        loudest = sorted(self._speaking, key=lambda sid: -self._speaking[sid])
        self._event("active_speakers_changed", {"speakers": [names[s] for s in loudest if s in names]})

    def _event(self, name: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(name, data)

    def _unpublished(self, sid: str) -> None:
        track = self.track(sid)
        if track is None:
            return
        for p in self.participants.values():
            kept = [t for t in p.tracks if t.sid != sid]
            if len(kept) != len(p.tracks):
                del p.tracks[:]
                p.tracks.extend(kept)
        self._gone(track)
        self._changes()

    def _changes(self) -> None:
        """The room's state changed: wake the waiters, tell ``on_change``."""
        self._changed.set()
        if self.on_change is not None:
            self.on_change()

    def _gone(self, track: RemoteTrack) -> None:
        self._receiving.pop(track.sid, None)
        info = self.participants.get(track.participant_sid)
        if info is not None:
            self._event("track_unpublished", participant_fields(info) | track_fields(track.info))
        if self.on_unpublished is not None:
            self.on_unpublished(track)

    async def _work(self) -> None:
        """The server's offers, one at a time. aiortc starts a receiver only when its transport
        is connected at the time the answer is set, so a later offer waits for the connection
        the first one opened (else its tracks would never be received)."""
        while True:
            offer = await self._offers.get()
            try:
                if self._described.is_set():
                    await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT)
                await self._answer(offer)
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                self._lost(f"the media connection did not come up within {CONNECT_TIMEOUT:g} s")
            except Exception as e:
                log.exception("subscriber signaling")
                self._lost(f"cannot answer the server's offer: {e!r}")

    async def _answer(self, offer: pr.SessionDescription) -> None:
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        self._described.set()
        for media in SessionDescription.parse(offer.sdp).media:
            if media.rtp.muxId and media.msid:
                self._mid_track[media.rtp.muxId] = media.msid.split()[-1]
            self._server_udp += sum(c.protocol.lower() == "udp" for c in media.ice_candidates)
        if self._server_udp:
            self._changed.set()  # media_usable
        for tr in self._pc.getTransceivers():
            self._tap(tr)
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        sd = pr.SessionDescription(type="answer", sdp=self._pc.localDescription.sdp, id=offer.id)
        self._signal.send(pr.SignalRequest(answer=sd))
        if not self._trickled:
            self._trickled = True
            self._trickle_out()
            self._watch = asyncio.get_running_loop().create_task(self._watch_connect())

    async def _watch_connect(self) -> None:
        """Leave when the first answer's connection does not come up: ICE that never completes
        stays 'checking' in aiortc (seen for 4 of 100 subscribers joining at once), and an egress
        must fail saying so rather than record nothing as if all were well."""
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            self._lost(f"the media connection did not come up within {CONNECT_TIMEOUT:g} s{self._no_udp()}")

    def _no_udp(self) -> str:
        """Why, when the server gave no UDP candidate: a livekit-server whose rtc UDP port range
        is used up offers only its ICE-TCP candidate, which aiortc cannot use."""
        if self._server_udp:
            return ""
        return (" (the server offered no UDP candidate, only ICE-TCP, which aiortc lacks: "
                "its rtc UDP port range may be used up)")  # fmt: skip

    def _trickle_out(self) -> None:
        """Send our candidates (also in the answer) as trickles, as other clients do."""
        trs = self._pc.getTransceivers()
        if not trs:
            return
        mid = trs[0].mid
        gatherer = trs[0].receiver.transport.transport.iceGatherer
        for c in gatherer.getLocalCandidates():
            init = {"candidate": "candidate:" + candidate_to_sdp(c), "sdpMid": mid, "sdpMLineIndex": 0}
            self._signal.send(pr.SignalRequest(trickle=pr.TrickleRequest(
                candidateInit=json.dumps(init), target=pr.SUBSCRIBER)))  # fmt: skip

    def _trickle_done(self, task: asyncio.Task[None]) -> None:
        self._trickles.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("subscriber: the server's candidate was not added: %r", task.exception())

    async def _remote_candidate(self, trickle: pr.TrickleRequest) -> None:
        if trickle.target != pr.SUBSCRIBER:
            return  # nothing is published: the publisher connection is never opened
        init = json.loads(trickle.candidateInit or "{}")
        text = str(init.get("candidate", ""))
        await self._described.wait()  # also for the final trickle: after the candidates before it
        if text:
            c = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
            c.sdpMid = init.get("sdpMid")
            c.sdpMLineIndex = init.get("sdpMLineIndex")
            if c.protocol.lower() == "udp":
                self._server_udp += 1
                self._changed.set()  # media_usable
            await self._pc.addIceCandidate(c)
        if trickle.final and not self._server_udp and not self._connected.is_set():
            self._lost(f"the media connection cannot come up{self._no_udp()}")

    # --- media -----------------------------------------------------------------------------

    def _tap(self, tr: RTCRtpTransceiver) -> None:
        def on_frame(codec: RTCRtpCodecParameters, data: bytes, ts: int, came: float) -> None:
            sid = self._mid_track.get(tr.mid or "")
            r = self._receiving.get(sid or "")
            if r is not None:
                self._frame(tr, r, codec, data, ts, came)

        def on_report(ntp: int, rtp: int) -> None:
            r = self._receiving.get(self._mid_track.get(tr.mid or "", ""))
            if r is not None:
                r.clock.report(ntp, rtp)

        def on_loss() -> None:
            r = self._receiving.get(self._mid_track.get(tr.mid or "", ""))
            if r is not None and r.video:
                r.need_key = True

        if not compat.tap(tr.receiver, on_frame, on_report, on_loss):
            log.warning("subscriber: receiver of mid %s started untapped; its frames are lost", tr.mid)

    def _frame(self, tr: RTCRtpTransceiver, r: _Receiving, codec: RTCRtpCodecParameters, data: bytes,
               ts: int, came: float) -> None:  # fmt: skip
        """A frame whose last packet came at ``came``, handed on now."""
        name, now = codec.name.lower(), time.monotonic()
        key = is_keyframe(name, data)
        if r.need_key and r.top is not None and (key or r.held):
            # a simulcast track (re)starts on its top layer's key frame: from a lower layer's key
            # frame on, its frames are held for TOP_LAYER_WAIT, then handed on if none came
            top = key and not self._below_top(r, name, data)
            if not top:
                if key:  # a lower layer's key frame: the hold starts (again) from it
                    r.held.clear()
                    r.first_key = r.first_key or now
                r.held.append((codec, data, ts, came, key))
                if now - r.first_key < TOP_LAYER_WAIT:
                    return
                log.info("subscriber: no %dx%d key frame in %g s: a lower layer", *r.top, TOP_LAYER_WAIT)
            held, r.held = ([] if top else r.held), []
            r.need_key, r.first_key = False, 0.0
            for c, d, t, at, k in held:  # this frame is the last of them
                self._emit(r, c, d, t, at, k)
            if not top:
                return
        if r.need_key and not key:
            r.skipped += 1
            if now - r.last_pli >= PLI_INTERVAL:
                r.last_pli = now
                compat.request_keyframe(tr.receiver)
            return
        r.need_key = False
        self._emit(r, codec, data, ts, came, key)

    @staticmethod
    def _emit(r: _Receiving, codec: RTCRtpCodecParameters, data: bytes, ts: int, came: float,
              key: bool) -> None:  # fmt: skip
        r.frames += 1
        rate, sent = codec.clockRate, r.clock.time_of(ts, codec.clockRate)
        resumed = r.resumed_at is not None and came >= r.resumed_at
        r.sink(EncodedFrame(codec.name.lower(), data, r.unwrap(ts), rate, key, sent, came, resumed))
        if resumed:
            r.resumed_at = None

    @staticmethod
    def _below_top(r: _Receiving, codec: str, data: bytes) -> bool:
        """Whether a key frame's picture is smaller than the track's top layer."""
        assert r.top is not None
        try:
            w, h = picture_size(EncodedFrame(codec, data, 0, 0, True, None))
        except Exception:  # undecodable: not a frame to start on
            return True
        return w * h < r.top[0] * r.top[1]

    # --- the end -------------------------------------------------------------------------

    def _pc_state(self) -> None:
        if self._pc.connectionState == "connected":
            self._connected.set()
            self._changed.set()  # media_usable
        if self._pc.connectionState == "failed":
            self._lost("the media connection failed")

    def _lost(self, why: str) -> None:
        self._end(False, why)

    def _end(self, normal: bool, why: str) -> None:
        if self.closed:
            return
        self.closed, self.ended_why = True, why
        self._changed.set()
        log.warning("subscriber left the room: %s", why) if not normal else log.info("room left: %s", why)
        self._on_disconnected(normal, why)

    async def close(self) -> None:
        """Leave the room and close the connections."""
        self.closed = True
        self._changed.set()
        for task in (self._worker, self._watch):
            if task is not None:
                task.cancel()
        for t in list(self._trickles):
            t.cancel()
        await self._signal.close(leave=True)
        with contextlib.suppress(Exception):
            await self._pc.close()
