"""PassthroughTrackRecorder: a track egress that writes the sender's bitstream, as LiveKit's
track egress does (H.264 → MP4, VP8 → WebM, Opus → Ogg), through the encoded receive path
(:mod:`pyegress.sources.encoded`): no decode, no encode."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import Any, TypeVar

from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from ..ending import EndReason
from ..errors import InvalidRequestError, NotSupportedError, RoomConnectionLostError, SourceError
from ..info import now_ns, snapshot
from ..media.encoding import AudioEncoding, VideoEncoding
from ..outputs import FileOutput, build_outputs
from ..outputs.passthrough import PASSTHROUGH_CODECS, PassthroughFile, opus_samples
from ..pauses import FrameCut, PauseClock, PauseFill, check_fill
from ..quality import with_details
from ..sources.encoded import EncodedFrame, EncodedSubscriber, RemoteTrack
from ..sources.encoded.subscriber import join_until_media
from ..sources.room import recorder_token, wait_for_room
from .base import RECONNECT_TIMEOUT, Media, Options, Recorder, require_found

log = logging.getLogger("pyegress.recorder")

#: Ticks per second of a passthrough egress's pause clock (no frame rate of its own: 1 ms).
PAUSE_TICKS = 1000
#: How long a video frame is taken to last where a cut begins (the next one is not known yet).
VIDEO_FRAME = 1 / 30


_F = TypeVar("_F", bound=FileOutput)


class PassthroughTrackRecorder(Recorder):
    """Ends by itself when its track is unpublished or its participant leaves; a lost
    connection ends it early (the file stays playable) with a ``RoomConnectionLostError``."""

    def __init__(
        self,
        request: Any = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        **kw: Any,
    ) -> None:
        super().__init__(request, **kw)
        self.reconnect_timeout = reconnect_timeout  # how long the mux recorders rejoin for
        self._url = url or os.environ.get("LIVEKIT_URL", "")
        self._key = api_key or os.environ.get("LIVEKIT_API_KEY", "")
        self._secret = api_secret or os.environ.get("LIVEKIT_API_SECRET", "")
        self.subscriber: EncodedSubscriber | None = None
        self.track: RemoteTrack | None = None
        self._file: PassthroughFile | None = None
        self.pauses = PauseClock(PAUSE_TICKS)
        self._rtp0: int | None = None  # the RTP time of the file's first frame

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        return {**super()._options(options), "url": options.url, "api_key": options.api_key,
                "api_secret": options.api_secret, "reconnect_timeout": options.reconnect_timeout}  # fmt: skip

    async def _connect(self) -> None:
        if not (self._url and self._key and self._secret):
            raise SourceError("url/api_key/api_secret: needed to join the room", code=400)
        room = self.config.room_name
        await wait_for_room(self._url, self._key, self._secret, room, self.wait_timeout,
                            self.info.retry_count > 0)  # fmt: skip
        self.subscriber = await self._join(self.wait_timeout)

    async def _join(self, timeout: float) -> EncodedSubscriber:
        """A new session in the room offered a media candidate it can use, on a fresh token (a
        rejoin may come hours later)."""
        return await join_until_media(self._session, timeout, f"egress {self.egress_id}")

    async def _session(self, timeout: float) -> EncodedSubscriber:
        token = recorder_token(self._key, self._secret, f"EG_{self.egress_id[3:]}", self.config.room_name)

        # a session's losses are the recording's once it is the recorder's (join_until_media
        # handles those of a session offered no usable candidate)
        def disconnected(normal: bool, why: str) -> None:
            if sub is self.subscriber:
                self._disconnected(normal, why)

        sub = EncodedSubscriber(self._url, token, disconnected)
        try:
            await sub.connect(timeout)
        except BaseException:
            await sub.close()
            raise
        self._hook(sub)
        return sub

    def _hook(self, sub: EncodedSubscriber) -> None:
        sub.on_unpublished = self._unpublished
        sub.on_participant_left = self._participant_left

    async def _disconnect(self) -> None:
        if self.subscriber is not None:
            sub, self.subscriber = self.subscriber, None
            await sub.close()

    async def _room_id(self) -> str:
        return self.subscriber.room.sid if self.subscriber is not None else ""

    async def _resolve(self) -> Media:
        assert self.subscriber is not None
        sid, sub = self.config.track_id, self.subscriber
        track = await sub.wait_for(lambda: sub.track(sid), self.wait_timeout)
        require_found(
            track,
            f"track_id: track {sid!r} not in room {self.config.room_name!r} after {self.wait_timeout:g} s",
        )
        assert track is not None
        self.track = track
        codec = track.codec
        if codec not in PASSTHROUGH_CODECS:
            raise SourceError(f"track_id: track {sid} has codec {track.info.mime_type!r}, which track "
                              f"egress cannot write (H.264, VP8 and Opus can be)", code=400)  # fmt: skip
        ext = PASSTHROUGH_CODECS[codec][0]
        video: VideoEncoding | None = None
        audio: AudioEncoding | None = None
        if track.kind == "video":
            w, h = track.size
            video = VideoEncoding(width=max(16, w or 1280), height=max(16, h or 720), fps=30, codec=codec)
        else:
            audio = AudioEncoding(sample_rate=48000, codec="opus")
        values = self._template_values({
            "publisher_identity": track.participant,
            "track_id": sid,
            "track_type": track.kind,
            "track_source": pm.TrackSource.Name(track.info.source).lower(),
            "extension": ext,
        })  # fmt: skip
        return Media(values, video, audio)

    async def _prepare(self, previous: dict[str, Any]) -> None:
        self.outputs = list(await self._files_as(PassthroughFile))

    async def _files_as(self, cls: type[_F]) -> list[_F]:
        """Connect, find the track(s), and make each file output a ``cls`` writing them as sent
        (a passthrough egress writes files only: there is no encoder for anything else)."""
        await self._connect()
        media = await self._resolve()
        outputs = build_outputs(self.config, media.values, media.video, media.audio)
        if not all(isinstance(o, FileOutput) for o in outputs):
            raise SourceError("file: a passthrough egress writes files only", code=400)
        return [
            cls(
                o.name,
                o.path,
                video=o.video,
                audio=o.audio,
                manifest=o.manifest_path is not None,
                store=o.store,
            )
            for o in outputs
            if isinstance(o, FileOutput)
        ]

    async def _record(self) -> None:
        assert self.subscriber is not None and self.track is not None
        files = [o for o in self.outputs if isinstance(o, PassthroughFile)]
        with self.owner.edit() as info:
            info.room_id = self.info.room_id or await self._room_id()
        self._t0 = time.monotonic()
        self.pauses, self._rtp0 = PauseClock(PAUSE_TICKS), None
        self.pauses.start(self._t0)
        started = now_ns()
        loop = asyncio.get_running_loop()
        for o in files:
            o.attach(self.info, started)
            o.notify = lambda: _soon(loop, self._sync_results)
        cut, track, first = FrameCut(self.pauses), self.track, self._first_frame

        def write(frame: EncodedFrame) -> None:
            t = first(frame)
            if t is None:
                return
            at = cut.place(t, t + frame_length(frame))
            if at is None:
                if not self.pauses.paused and self.subscriber is not None:
                    self.subscriber.want_keyframe(track.sid)  # restart on a key frame after a cut
                return
            for o in files:
                o.write_frame(frame, round((t - at) * frame.clock_rate))
            if all(o.failed for o in files):
                self.end(EndReason.FAILURE, "every output failed")

        self.subscriber.subscribe(self.track, write)
        with self.owner.edit() as info:
            info.started_at = info.started_at or started
            self._mirror_legacy()
        self.owner.set_status(pe.EGRESS_ACTIVE)
        try:
            await self._end.wait()
        finally:
            self._t1 = time.monotonic()
            self.pauses.next_tick = math.ceil((self._t1 - self.pauses.t0) * PAUSE_TICKS)
            await self._disconnect()  # no frame after the file is closed
            for o in files:
                o.close()
            frames, skipped = sum(getattr(o, "frames", 0) for o in files), 0
            with self.owner.edit() as info:
                info.details = with_details(info.details, self.quality())
            log.info("egress %s: %d frames written as sent (%d skipped waiting for a key frame)",
                     self.egress_id, frames, skipped)  # fmt: skip
            self.owner.set_status(pe.EGRESS_ENDING)
            for o in files:
                await o.finish()
            self._finish_results()

    # --- pause: the paused span is cut out of the file (pyegress.pauses.FrameCut) ------------

    def _first_frame(self, frame: EncodedFrame) -> float | None:
        """Seconds of ``frame`` on the file's timeline (its first frame at 0); None before the
        file starts (nothing starts it while paused). Tick 0 of the pause clock moves to it."""
        if self._rtp0 is None:
            if self.pauses.paused:
                return None
            self._rtp0 = frame.rtp
            if not self.pauses.pauses:
                self.pauses.start(time.monotonic())
        return (frame.rtp - self._rtp0) / frame.clock_rate

    def _active(self) -> None:
        if self.info.status != pe.EGRESS_ACTIVE:
            raise InvalidRequestError("egress_id", f"egress {self.egress_id} is not active")

    def pause(self, fill: PauseFill | str = "cut") -> pe.EgressInfo:
        """Leave the room out of the file from now on: the paused span is cut (the sender's
        frames cannot show a slate without an encode)."""
        if check_fill(fill) != "cut":
            raise NotSupportedError(f"fill: a passthrough egress writes the senders' frames, so it can "
                                    f"only cut a pause, not fill it with {fill!r}")  # fmt: skip
        self._active()
        if not self.pauses.paused:
            self.pauses.pause("cut")
            self.note("paused", fill="cut")
        return snapshot(self.info)

    def resume(self) -> pe.EgressInfo:
        """Record again from the next frame (video from its next key frame, asked for now)."""
        self._active()
        if self.pauses.resume() is not None:
            self.note("resumed")
            self._want_keyframes()
        return snapshot(self.info)

    def _want_keyframes(self) -> None:
        if self.subscriber is not None and self.track is not None:
            self.subscriber.want_keyframe(self.track.sid)

    def _pause_clock(self) -> PauseClock | None:
        return self.pauses

    # --- the room ---------------------------------------------------------------------------

    def _unpublished(self, track: RemoteTrack) -> None:
        if self.track is not None and track.sid == self.track.sid:
            self.end(EndReason.SOURCE_CLOSED, f"track {track.sid} unpublished")

    def _participant_left(self, participant: pm.ParticipantInfo) -> None:
        if self.track is not None and participant.identity == self.track.participant:
            self.end(EndReason.SOURCE_CLOSED, f"participant {participant.identity} left")

    def _disconnected(self, normal: bool, why: str) -> None:
        sub = self.subscriber
        if normal:
            self.end(EndReason.SOURCE_CLOSED, f"room closed ({why})")
        elif sub is not None and sub.left_reason == pm.DisconnectReason.DUPLICATE_IDENTITY:
            # another recorder took over: not ours to retry (nor to take back)
            self._end_error = SourceError("room: another participant joined with the recorder's identity")
            self.end(EndReason.FAILURE, str(self._end_error))
        else:
            self._connection_lost(why)

    def _connection_lost(self, why: str) -> None:
        """The connection dropped (not a normal leave, not taken over): the recording ends early."""
        self._lose(f"lost: {why}")

    def _lose(self, what: str) -> None:
        """End the recording early (it finishes, uploads, then fails and is retried)."""
        if not self._end.is_set():
            text = f"recording ended early: connection to room {self.config.room_name!r} {what}"
            self._end_error = RoomConnectionLostError(text)
            self.end(EndReason.FAILURE, text)


def frame_length(frame: EncodedFrame) -> float:
    """Seconds a frame lasts: an Opus packet's own, a video frame's taken as :data:`VIDEO_FRAME`."""
    return opus_samples(frame.data) / 48000 if frame.codec == "opus" else VIDEO_FRAME


def _soon(loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    loop.call_soon_threadsafe(fn)
