"""PassthroughMuxRecorder: participant and track composite egress with the ``PASSTHROUGH``
preset: the camera and microphone as sent, in one file (H.264 + Opus → MP4, VP8 + Opus →
WebM, Opus alone → Ogg), which LiveKit's egress does not offer (its issue #655).

Each track keeps its sender's RTP clock (no jitter, no drift by construction); the tracks are
placed against each other by when their frames arrive: over a track's first second, the least
delay from its RTP time to the arrival of the frame's last packet, less how long after its RTP
time it can be sent (a packet for audio, sent once its last sample is captured; nothing for
video). The RTCP sender reports are not
used: the marker publisher's (libwebrtc through the rtc SDK) stamp its audio at encode time and
put it 27-81 ms late, varying per session (32-36 ms once the publisher paced its frames on a
thread of its own), while the arrival figure was within 5 ms in every run (measured). The
file's time 0 is its first video key frame. A muted, unpublished or republished track leaves a
gap in its stream, never a broken file.

A lost connection (livekit-server restarted, network down) is ridden out: the room is joined
again as a new session until ``reconnect_timeout`` has passed, and the tracks it hands over
(under new sids after a server restart) are taken as a republish. Then the recording ends
early, FAILED with :class:`~pyegress.errors.RoomConnectionLostError` and retried, what was
recorded kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from ..config import Kind
from ..ending import EndReason
from ..errors import SourceError
from ..info import now_ns
from ..media.encoded import EncodedFrame
from ..outputs.passthrough import PASSTHROUGH_CODECS
from ..outputs.passthrough_mux import PassthroughMuxFile
from ..pauses import FrameCut, PauseClock
from ..quality import with_details
from ..sources.encoded import EncodedSubscriber, RemoteTrack
from ..sources.encoded.decode import sent_after
from .base import Media, require_found
from .track_passthrough import PAUSE_TICKS, PassthroughTrackRecorder, _soon, frame_length

log = logging.getLogger("pyegress.recorder")

#: How long the file waits, after the first frame came, for every track it records to be
#: placed (a second each); then it opens with what came (a file's streams are fixed).
OPEN_WAIT = 5.0
#: Seconds of a track's first frames whose least arrival delay places its clock.
ANCHOR_WINDOW = 1.0
#: How long the start waits for the second of camera and microphone once the first is there.
SECOND_TRACK_WAIT = 3.0

_VIDEO = {False: pm.TrackSource.CAMERA, True: pm.TrackSource.SCREEN_SHARE}
_AUDIO = {False: pm.TrackSource.MICROPHONE, True: pm.TrackSource.SCREEN_SHARE_AUDIO}


@dataclass
class _Placed:
    """One subscribed track's place on the file's timeline (monotonic seconds)."""

    track: RemoteTrack
    kind: str
    first_rtp: int | None = None
    last_rtp: int = 0
    least: float = math.inf  # least (arrival - RTP time) over the window
    steps: list[float] = field(default_factory=list)  # seconds between frames (video) or packets
    offset: float | None = None  # monotonic time of RTP time 0, once placed
    held: list[EncodedFrame] = field(default_factory=list)  # frames before it is placed

    def offer(self, frame: EncodedFrame, arrived: float) -> bool:
        """Take a frame's arrival into the window; True once the track is placed."""
        rate = frame.clock_rate
        if self.first_rtp is None:
            self.first_rtp = frame.rtp
        elif frame.rtp > self.last_rtp:
            self.steps.append((frame.rtp - self.last_rtp) / rate)
        self.last_rtp = max(self.last_rtp, frame.rtp)
        self.least = min(self.least, arrived - frame.rtp / rate)
        if (frame.rtp - self.first_rtp) / rate >= ANCHOR_WINDOW:
            self.place()
        return self.offset is not None

    def place(self) -> None:
        """Fix the track's clock: the least delay less how long after its time a frame is sent."""
        step = statistics.median(self.steps) if self.steps else 0.0
        self.offset = self.least - sent_after(self.kind, step)

    def time_of(self, frame: EncodedFrame) -> float:
        assert self.offset is not None
        return self.offset + frame.rtp / frame.clock_rate


class PassthroughMuxRecorder(PassthroughTrackRecorder):
    """Follows mute, unpublish and republish of the recorded sources and rides out a lost
    connection; ends when their participant leaves."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._placed: dict[str, _Placed] = {}  # by track sid
        self._owners: dict[str, tuple[str, int]] = {}  # track composite: sid -> (identity, source)
        self._codecs: dict[str, str] = {}  # kind -> the codec its stream holds
        self._files: list[PassthroughMuxFile] = []
        self._pending: list[tuple[float, str, EncodedFrame]] = []  # placed before the file opened
        self._first_at = 0.0  # monotonic time the first frame came
        self._origin: float | None = None  # the sender time of the file's time 0
        self._cut = FrameCut(self.pauses)
        self._live = False  # recording: a lost connection is ridden out from then on
        self._following: asyncio.Task[None] | None = None
        self._rejoining: asyncio.Task[None] | None = None
        self._settling: asyncio.Task[None] | None = None
        self._lost_at: float | None = None  # when the connection was lost, until media is back

    # --- what to record -------------------------------------------------------------------

    def _route(self, track: RemoteTrack) -> str | None:
        """The kind ("video", "audio") ``track`` is recorded as, or None."""
        cfg, info = self.config, track.info
        kind = track.kind
        if cfg.kind is Kind.PARTICIPANT:
            if track.participant != cfg.identity:
                return None
            share = cfg.screen_share
            if kind == "video":
                return kind if info.source == _VIDEO[share] else None
            sources = {_AUDIO[share]} | ({pm.TrackSource.UNKNOWN} if not share else set())
            return kind if info.source in sources else None
        wanted = cfg.video_track_id if kind == "video" else cfg.audio_track_id
        if not wanted:
            return None
        if track.sid == wanted:
            self._owners[track.sid] = (track.participant, info.source)
            return kind
        # a republish: the same participant's same source as the requested track
        return kind if self._owners.get(wanted) == (track.participant, info.source) else None

    def _routed(self) -> dict[str, RemoteTrack]:
        assert self.subscriber is not None
        found: dict[str, RemoteTrack] = {}
        for t in self.subscriber.tracks():
            kind = self._route(t)
            if kind is not None and kind not in found:
                found[kind] = t
        return found

    def _wanted(self) -> set[str]:
        cfg = self.config
        if cfg.kind is Kind.PARTICIPANT:
            return {"video", "audio"}
        return {k for k, sid in (("video", cfg.video_track_id), ("audio", cfg.audio_track_id)) if sid}

    async def _resolve(self) -> Media:
        routed, field_name = await self._find_routed()
        for kind, track in routed.items():
            codec = track.codec
            if codec not in PASSTHROUGH_CODECS or (kind == "audio") != (codec == "opus"):
                why = f"track {track.sid} has codec {track.info.mime_type!r}, which cannot be written as sent"
                raise SourceError(f"{field_name}: {why} (H.264, VP8 and Opus can be)", code=400)
            self._codecs[kind] = codec
        video = routed.get("video")
        ext = PASSTHROUGH_CODECS[self._codecs["video"]][0] if video is not None else ".ogg"
        values = self._source_values(routed, {"extension": ext})
        return Media(values, self.config.video if video else None, self.config.audio)

    def _source_values(self, routed: dict[str, RemoteTrack], extra: dict[str, str]) -> dict[str, str]:
        """Template values of the first routed track (the camera when there is one), which
        becomes ``self.track``."""
        first = routed.get("video") or routed["audio"]
        self.track = first
        return self._template_values({
            "publisher_identity": first.participant,
            "track_id": first.sid,
            "track_type": first.kind,
            "track_source": pm.TrackSource.Name(first.info.source).lower(),
            **extra,
        })  # fmt: skip

    async def _find_routed(self) -> tuple[dict[str, RemoteTrack], str]:
        """Wait (bounded) for the participant and the tracks to record: every wanted kind, or
        what came within ``SECOND_TRACK_WAIT`` of the first; and the request field they answer."""
        assert self.subscriber is not None
        sub, cfg, wanted = self.subscriber, self.config, self._wanted()
        if cfg.kind is Kind.PARTICIPANT:
            who = await sub.wait_for(
                lambda: next((p for p in sub.participants.values() if p.identity == cfg.identity), None),
                self.wait_timeout,
            )
            require_found(who, f"identity: participant {cfg.identity!r} not in room {cfg.room_name!r} "
                               f"after {self.wait_timeout:g} s")  # fmt: skip
        field_name = "identity" if cfg.kind is Kind.PARTICIPANT else "video_track_id/audio_track_id"
        some = await sub.wait_for(lambda: self._routed() or None, self.wait_timeout)
        require_found(some, f"{field_name}: no camera or microphone to record in room "
                            f"{cfg.room_name!r} after {self.wait_timeout:g} s")  # fmt: skip
        routed = await sub.wait_for(
            lambda: found if set(found := self._routed()) >= wanted else None,
            min(self.wait_timeout, SECOND_TRACK_WAIT),
        ) or self._routed()  # fmt: skip
        return routed, field_name

    async def _prepare(self, previous: dict[str, Any]) -> None:
        self._files = await self._files_as(PassthroughMuxFile)
        self.outputs = list(self._files)

    # --- recording ------------------------------------------------------------------------

    async def _record(self) -> None:
        assert self.subscriber is not None
        with self.owner.edit() as info:
            info.room_id = self.info.room_id or await self._room_id()
        self._t0 = time.monotonic()
        self.pauses = PauseClock(PAUSE_TICKS)
        self.pauses.start(self._t0)
        self._cut = FrameCut(self.pauses)
        started = now_ns()
        loop = asyncio.get_running_loop()
        for o in self._files:
            o.attach(self.info, started)
            o.notify = lambda: _soon(loop, self._sync_results)
        self._start_following()
        with self.owner.edit() as info:
            info.started_at = info.started_at or started
            self._mirror_legacy()
        self.owner.set_status(pe.EGRESS_ACTIVE)
        try:
            await self._end.wait()
        finally:
            await self._finish_recording()

    async def _finish_recording(self) -> None:
        self._t1 = time.monotonic()
        self.pauses.next_tick = math.ceil((self._t1 - self.pauses.t0) * PAUSE_TICKS)
        await self._disconnect()  # no frame after the file is closed
        self._place_held()
        if self._origin is None and self._pending:
            self._open(force=True)
        for o in self._files:
            o.close()
        with self.owner.edit() as info:
            info.details = with_details(info.details, self.quality())
        log.info("egress %s: %d frames written as sent", self.egress_id, sum(o.frames for o in self._files))
        self.owner.set_status(pe.EGRESS_ENDING)
        for o in self._files:
            await o.finish()
        self._finish_results()

    def _subscribe(self, track: RemoteTrack) -> None:
        kind = self._route(track)
        if kind is None or track.sid in self._placed or self.subscriber is None:
            return
        if self._codecs.get(kind) != track.codec:
            log.warning("egress %s: %s track %s is %s, not the file's %s: left out", self.egress_id, kind,
                        track.sid, track.info.mime_type, self._codecs.get(kind))  # fmt: skip
            self._placed[track.sid] = _Placed(track, "")  # seen; never written
            return
        placed = self._placed[track.sid] = _Placed(track, kind)
        self.subscriber.subscribe(track, lambda frame: self._frame(placed, frame))

    def _start_following(self) -> None:
        """Subscribe to the recorded tracks now in the room, and to each published later."""
        self._live = True
        for track in self._routed().values():
            self._subscribe(track)
        self._following = asyncio.get_running_loop().create_task(
            self._follow(), name=f"pyegress-follow-{self.egress_id}"
        )

    async def _stop_following(self) -> None:
        """Once the end is set or the subscriber closed, the follower ends by itself (a cancel
        inside the subscriber's wait_for can be lost on 3.11); else it is cancelled."""
        task, self._following = self._following, None
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            task.cancel()

    async def _follow(self) -> None:
        """Subscribe to each track the recorded sources publish later (a republish)."""
        assert self.subscriber is not None
        sub = self.subscriber

        def new() -> list[RemoteTrack] | None:
            if self._end.is_set():
                return []  # the end: wait_for answers within its half-second poll
            found = [t for t in sub.tracks() if not self._taken(t.sid) and self._route(t)]
            return found or None

        while found := await sub.wait_for(new, 3600.0):
            for track in found:
                self._subscribe(track)

    def _taken(self, sid: str) -> bool:
        """Whether track ``sid`` was subscribed to (or seen and left out)."""
        return sid in self._placed

    # --- frames onto the file's timeline ---------------------------------------------------

    def _frame(self, placed: _Placed, frame: EncodedFrame) -> None:
        now = frame.arrived or time.monotonic()
        if not self._first_at:
            self._first_at = now
        if placed.offset is None:
            placed.held.append(frame)
            if placed.offer(frame, now):
                held, placed.held = placed.held, []
                for f in held:
                    self._place(placed, f, placed.time_of(f))
            return
        self._place(placed, frame, placed.time_of(frame))

    def _place_held(self) -> None:
        """At the end, a track still in its first second is placed by what it saw."""
        for placed in self._placed.values():
            if placed.held and placed.offset is None:
                placed.place()
                held, placed.held = placed.held, []
                for f in held:
                    self._place(placed, f, placed.time_of(f))

    def _place(self, placed: _Placed, frame: EncodedFrame, at: float) -> None:
        if self._origin is None:
            self._pending.append((at, placed.kind, frame))
            self._open()
            return
        self._write(placed, frame, at)

    def _write(self, placed: _Placed | None, frame: EncodedFrame, at: float) -> None:
        assert self._origin is not None
        kind = placed.kind if placed is not None else ("audio" if frame.codec == "opus" else "video")
        t = at - self._origin
        if t < 0:
            return
        where = self._cut.place(t, t + frame_length(frame))
        if where is None:
            if placed is not None and not self.pauses.paused:
                self._want_key(placed)  # older than the resume: video restarts on a key frame
            return
        for o in self._files:
            o.write_at(kind, frame, where)
        if self._files and all(o.failed for o in self._files):
            self.end(EndReason.FAILURE, "every output failed")

    def _open(self, force: bool = False) -> None:
        """Open the files once every recorded track placed a first frame (or waited enough):
        time 0 is the first video frame (a key frame); earlier audio is left out."""
        kinds = {kind for _, kind, _ in self._pending}
        routed = {p.kind for p in self._placed.values() if p.kind}
        late = time.monotonic() - self._first_at > OPEN_WAIT
        if not (kinds >= routed or late or force) or self.pauses.paused:
            if self.pauses.paused:
                self._pending.clear()  # nothing starts the file while paused
            return
        pending = sorted(self._pending, key=lambda p: p[0])
        self._pending = []
        firsts: dict[str, EncodedFrame] = {}
        for _, kind, frame in pending:
            firsts.setdefault(kind, frame)
        if "video" in firsts:
            self._origin = next(at for at, kind, _ in pending if kind == "video")
        else:
            self._origin = pending[0][0]
        if "audio" in self._codecs and "audio" not in firsts:  # an Opus stream needs no frame
            firsts["audio"] = EncodedFrame("opus", b"", 0, 48000, True, None)
        if not self.pauses.pauses:  # the pause clock's 0: when the file's first frame came
            self.pauses.start(time.monotonic() - (pending[-1][0] - self._origin))
        for o in self._files:
            o.start(firsts)
        for at, _, frame in pending:
            self._write(None, frame, at)

    def _want_key(self, placed: _Placed) -> None:
        if placed.kind == "video" and self.subscriber is not None:
            self.subscriber.want_keyframe(placed.track.sid)

    def _want_keyframes(self) -> None:
        for placed in self._placed.values():
            self._want_key(placed)

    # --- the room ---------------------------------------------------------------------------

    def _unpublished(self, track: RemoteTrack) -> None:
        placed = self._placed.pop(track.sid, None)
        if placed is not None:
            log.info("egress %s: %s track %s unpublished: a gap until it is back", self.egress_id,
                     placed.kind, track.sid)  # fmt: skip

    def _owner_identities(self) -> set[str]:
        cfg = self.config
        return {cfg.identity} if cfg.kind is Kind.PARTICIPANT else {i for i, _ in self._owners.values()}

    def _participant_left(self, participant: pm.ParticipantInfo) -> None:
        owners = self._owner_identities()
        if participant.identity in owners and not any(
            p.identity in owners for p in self._present() if p.sid != participant.sid
        ):
            self.end(EndReason.SOURCE_CLOSED, f"participant {participant.identity} left")

    def _present(self) -> list[pm.ParticipantInfo]:
        return list(self.subscriber.participants.values()) if self.subscriber is not None else []

    # --- a lost connection: ridden out -------------------------------------------------------

    async def _connect(self) -> None:
        self._live, self._lost_at = False, None  # a retry starts afresh
        await super()._connect()

    def _connection_lost(self, why: str) -> None:
        if not self._live or self._end.is_set():
            super()._connection_lost(why)
        elif self._rejoining is None:
            log.warning("egress %s: connection to the room lost (%s): joining again", self.egress_id, why)
            self._lost_at = self._lost_at or time.monotonic()
            self._rejoining = asyncio.get_running_loop().create_task(
                self._rejoin(why), name=f"pyegress-rejoin-{self.egress_id}"
            )

    async def _rejoin(self, why: str) -> None:
        """Join the room again as a new session until ``reconnect_timeout`` from the loss has
        passed. The server hands every track over again (after its restart under new sids,
        once their publishers are back): each is routed and subscribed as a republish, the
        recording going on meanwhile (a held picture and silence, or a gap in a file as sent)."""
        old, self.subscriber = self.subscriber, None
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None
        if old is not None:
            await old.close()
        await self._stop_following()
        self._forget()
        assert self._lost_at is not None
        delay = 0.25
        while not self._end.is_set():
            left = self._lost_at + self.reconnect_timeout - time.monotonic()
            if left <= 0:
                self._rejoining = None
                self._lose(f"lost and not regained within reconnect_timeout ({self.reconnect_timeout:g} s): "
                           f"{why}")  # fmt: skip
                return
            try:
                sub = await self._join(min(left, self.wait_timeout))
            except Exception as e:  # unreachable, refused for now, or broken: tried again until the bound
                why = str(e) or repr(e)
            else:
                if not sub.closed:
                    log.info("egress %s: back in the room", self.egress_id)
                    self.subscriber, self._rejoining = sub, None
                    self._start_following()
                    self._settling = asyncio.get_running_loop().create_task(self._settle(sub))
                    return
                await sub.close()
                why = "the connection was lost again while joining"
            await asyncio.sleep(min(delay, max(left, 0.0)))
            delay = min(2 * delay, 2.0)
        self._rejoining = None

    async def _settle(self, sub: EncodedSubscriber) -> None:
        """Back in the room: the recorded participant gets ``wait_timeout`` to be back too (it
        rejoins after a server restart), and the media connection the rest of
        ``reconnect_timeout`` to come up; else the recording ends (saying which)."""
        owners = self._owner_identities()
        back = await sub.wait_for(
            lambda: True if any(p.identity in owners for p in sub.participants.values()) else None,
            self.wait_timeout,
        )
        if sub.closed or self._end.is_set():
            return
        if back is None:
            who = ", ".join(sorted(owners))
            self.end(EndReason.SOURCE_CLOSED, f"participant {who} not back after the connection was lost")
            return
        assert self._lost_at is not None
        left = self._lost_at + self.reconnect_timeout - time.monotonic()
        up = await sub.wait_for(lambda: True if sub.connected else None, max(left, 0.0))
        if sub.closed or self._end.is_set():
            return
        self._settling = None
        if up is None:
            self._lose(f"lost and not regained within reconnect_timeout ({self.reconnect_timeout:g} s): "
                       "the media connection did not come up again")  # fmt: skip
        else:
            self._lost_at = None

    def _forget(self) -> None:
        """The tracks of a lost session: each comes again in the next (placed anew)."""
        self._placed.clear()

    async def _disconnect(self) -> None:
        for task in (self._rejoining, self._settling):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._rejoining = self._settling = None
        await self._stop_following()
        await super()._disconnect()

    def receiving(self) -> list[str]:
        """The sids of the recorded tracks whose frames come now (for tests and diagnostics)."""
        sub = self.subscriber
        if sub is None or not sub.connected:
            return []
        return [sid for sid in self._subscribed_sids() if sub.stats(sid)[0] > 0]

    def _subscribed_sids(self) -> list[str]:
        return [sid for sid, p in self._placed.items() if p.kind]
