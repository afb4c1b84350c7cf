"""A LiveKit participant that publishes synthetic, self-describing camera and microphone tracks.

The picture is a moving test pattern (or a solid colour) and the audio a quiet tone. At every
``marker_interval`` seconds of wall clock (first at ``t0 + marker_interval``) the picture
flashes white and the audio beeps at the same instant, so a recording's A/V offset can be
measured with :func:`pyegress.testing.checks.av_offset`.

The frames are paced on a thread of their own (its own event loop), as a camera and a sound
card are: a recorder busy in the caller's loop (starting an egress blocks it 100 ms or more)
would otherwise make them late, and libwebrtc's timestamp aligner carries a late start into
the video's RTP clock for seconds (a drifting A/V offset that the sender, not the recorder, made).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

from livekit import api, rtc

from .signals import PatternGenerator, ToneGenerator

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

__all__ = ["Signal", "SignalPublisher", "SyntheticPublisher", "TrackKind", "join_token"]

logger = logging.getLogger(__name__)

TrackKind = Literal["video", "audio"]

SAMPLE_RATE = 48000
_AUDIO_FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms
# 0 = synchronous mode: each 10 ms frame goes straight to WebRTC (no pacer queue), so the
# wall-clock pacing below is the only timing and the source adds no latency.
_AUDIO_QUEUE_MS = 0
_START_LEAD = 0.05  # seconds between "tracks published" and t0
#: A frame due longer ago than this is not sent (the ones after it are): a stall, not jitter.
#: Later frames go out at once, stamped with when they were due (a camera's buffered frames).
MAX_LATE = 0.2


_P = TypeVar("_P", bound="SignalPublisher")


class Signal(TypedDict, total=False):
    """The keywords every test publisher takes, with the same meaning in each: where it joins
    without a ``token`` (``api_key``, ``api_secret``, ``room``, ``identity``, ``name``), the
    picture (``width`` x ``height`` at ``fps``; ``color``: a solid colour instead of the moving
    pattern), which tracks (``video``, ``audio``) and the markers (a flash and a ``beep_hz`` beep
    every ``marker_interval`` seconds over a ``tone_hz`` tone)."""

    api_key: str | None
    api_secret: str | None
    room: str | None
    identity: str | None
    name: str | None
    width: int
    height: int
    fps: float
    video: bool
    audio: bool
    color: tuple[int, int, int] | None
    marker_interval: float
    tone_hz: float
    beep_hz: float


class SignalPublisher(ABC):
    """What every test publisher takes and keeps: where it joins (``token``, or the four to make
    one) and the self-describing signal it sends (:class:`Signal`, defaults 640x360 at 30 fps,
    both tracks, a marker a second, a 440 Hz tone and 1 kHz beeps).
    :class:`SyntheticPublisher` and :class:`~pyegress.testing.browser_publisher.BrowserPublisher`
    take these keywords, so a test can swap one for the other."""

    def __init__(self, url: str, token: str | None = None, **signal: Unpack[Signal]) -> None:
        if unknown := sorted(set(signal) - Signal.__annotations__.keys()):
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument {', '.join(unknown)}")
        self.url = url
        self.token = token if token is not None else join_token(
            signal.get("api_key"), signal.get("api_secret"), signal.get("room"),
            signal.get("identity"), signal.get("name"),
        )  # fmt: skip
        self.width, self.height = signal.get("width", 640), signal.get("height", 360)
        self.fps = float(signal.get("fps", 30))
        self.video_enabled, self.audio_enabled = signal.get("video", True), signal.get("audio", True)
        self.color = signal.get("color")
        self.marker_interval = signal.get("marker_interval", 1.0)
        self.tone_hz, self.beep_hz = signal.get("tone_hz", 440.0), signal.get("beep_hz", 1000.0)
        self.pattern = PatternGenerator(
            self.width, self.height, self.fps, color=self.color, marker_interval=self.marker_interval
        )
        self._t0: float | None = None

    @property
    def t0(self) -> float | None:
        """``time.monotonic()`` value of signal time zero (markers at t0 + n * interval)."""
        return self._t0

    @abstractmethod
    async def start(self) -> None:
        """Join the room and publish the enabled tracks."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop publishing and leave the room."""

    async def __aenter__(self: _P) -> _P:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


#: The codecs the SDK encodes in software (H.265 needs a hardware encoder).
_CODECS = {"h264": rtc.VideoCodec.H264, "vp8": rtc.VideoCodec.VP8, "vp9": rtc.VideoCodec.VP9,
           "av1": rtc.VideoCodec.AV1}  # fmt: skip


class SyntheticPublisher(SignalPublisher):
    """Publishes a synthetic camera and/or microphone track to a LiveKit room: the signal's
    keywords (:class:`Signal`) and ``video_codec``, ``vfr`` (irregular frame gaps),
    ``simulcast``, ``max_bitrate`` and ``audio_burst`` (the microphone's chunks handed to the SDK
    in bursts this far apart: that moves the sender's own audio against its picture, about
    +23 ms at 0.2 s; a jittery network leaves the sender alone: ``pyegress.testing.relay``)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        video_codec: Literal["h264", "vp8", "vp9", "av1"] = "h264",
        vfr: bool = False,
        simulcast: bool = False,
        max_bitrate: int | None = None,
        audio_burst: float = 0.0,
        **signal: Unpack[Signal],
    ) -> None:
        if video_codec not in _CODECS:
            raise ValueError(f"unsupported video_codec {video_codec!r}")
        super().__init__(url, token, **signal)
        self.video_codec = video_codec
        self.vfr = vfr
        self.simulcast = simulcast
        self.audio_burst = audio_burst
        self.max_bitrate = (
            max_bitrate if max_bitrate is not None else _default_bitrate(self.width, self.height)
        )
        self.tone = ToneGenerator(
            SAMPLE_RATE, tone_hz=self.tone_hz, beep_hz=self.beep_hz, marker_interval=self.marker_interval
        )
        self._room = rtc.Room()
        self._video_source: rtc.VideoSource | None = None
        self._audio_source: rtc.AudioSource | None = None
        self._tracks: dict[TrackKind, rtc.LocalVideoTrack | rtc.LocalAudioTrack] = {}
        self._pubs: dict[TrackKind, rtc.LocalTrackPublication] = {}
        self._pacer = _Pacer()
        self.frames_sent = 0
        self.audio_frames_sent = 0

    # -- properties -------------------------------------------------------------------
    @property
    def room(self) -> rtc.Room:
        """The underlying :class:`livekit.rtc.Room`."""
        return self._room

    @property
    def identity(self) -> str:
        """This participant's identity (known once connected)."""
        return self._room.local_participant.identity

    @property
    def video_track_sid(self) -> str | None:
        """SID of the published camera track, or None."""
        pub = self._pubs.get("video")
        return pub.sid if pub is not None else None

    @property
    def audio_track_sid(self) -> str | None:
        """SID of the published microphone track, or None."""
        pub = self._pubs.get("audio")
        return pub.sid if pub is not None else None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, publish the enabled tracks and start the wall-clock pacers."""
        await self._room.connect(self.url, self.token, rtc.RoomOptions(auto_subscribe=False))
        try:
            if self.video_enabled:
                self._video_source = rtc.VideoSource(self.width, self.height)
                await self._publish("video")
            if self.audio_enabled:
                self._audio_source = rtc.AudioSource(
                    SAMPLE_RATE, 1, queue_size_ms=_AUDIO_QUEUE_MS, loop=self._pacer.loop
                )
                await self._publish("audio")
            self._t0 = time.monotonic() + _START_LEAD
            if self._video_source is not None:
                self._pacer.run(self._video_loop(self._video_source))
            if self._audio_source is not None:
                self._pacer.run(self._audio_loop(self._audio_source))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop pacing, unpublish everything and disconnect."""
        await asyncio.to_thread(self._pacer.close)
        connected = self._room.isconnected()  # a deleted room has already dropped us
        for kind in list(self._pubs) if connected else []:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.unpublish(kind), 5)
        self._pubs.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._room.disconnect(), 5)
        for src in (self._video_source, self._audio_source):
            if src is not None:
                with contextlib.suppress(Exception):
                    await src.aclose()
        self._video_source = self._audio_source = None

    # -- track control -------------------------------------------------------------------
    async def mute(self, kind: TrackKind) -> None:
        """Mute the published track of ``kind``."""
        self._track(kind).mute()

    async def unmute(self, kind: TrackKind) -> None:
        """Unmute the published track of ``kind``."""
        self._track(kind).unmute()

    async def unpublish(self, kind: TrackKind) -> None:
        """Unpublish the track of ``kind`` (pacing continues, so markers stay on schedule)."""
        pub = self._pubs.pop(kind, None)
        self._tracks.pop(kind, None)
        if pub is not None:
            await self._room.local_participant.unpublish_track(pub.sid)

    async def republish(self, kind: TrackKind) -> None:
        """Publish a new track of ``kind`` from the same source (after :meth:`unpublish`)."""
        if kind in self._pubs:
            return
        await self._publish(kind)

    # -- internals -----------------------------------------------------------------------
    def _track(self, kind: TrackKind) -> rtc.LocalVideoTrack | rtc.LocalAudioTrack:
        track = self._tracks.get(kind)
        if track is None:
            raise RuntimeError(f"no published {kind} track")
        return track

    async def _publish(self, kind: TrackKind) -> None:
        opts = rtc.TrackPublishOptions()
        track: rtc.LocalVideoTrack | rtc.LocalAudioTrack
        if kind == "video":
            if self._video_source is None:
                raise RuntimeError("video is disabled")
            track = rtc.LocalVideoTrack.create_video_track("camera", self._video_source)
            opts.source = rtc.TrackSource.SOURCE_CAMERA
            opts.video_codec = _CODECS[self.video_codec]
            opts.simulcast = self.simulcast
            opts.video_encoding.max_bitrate = self.max_bitrate
            opts.video_encoding.max_framerate = self.fps
        else:
            if self._audio_source is None:
                raise RuntimeError("audio is disabled")
            track = rtc.LocalAudioTrack.create_audio_track("microphone", self._audio_source)
            opts.source = rtc.TrackSource.SOURCE_MICROPHONE
            opts.dtx = False
        pub = await self._room.local_participant.publish_track(track, opts)
        self._tracks[kind] = track
        self._pubs[kind] = pub

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _video_loop(self, source: rtc.VideoSource) -> None:
        assert self._t0 is not None
        t0 = self._t0
        period = 1.0 / self.fps
        rng = random.Random()
        k = 0
        t_rel = 0.0
        while True:
            if self.vfr:
                await self._sleep_until(t0 + t_rel)
            else:
                t_rel = k * period
                await self._sleep_until(t0 + t_rel)
                late = time.monotonic() - (t0 + t_rel)
                if late > MAX_LATE:  # stalled: skip ahead instead of bursting
                    k += int(late / period)
                    continue
            data = self.pattern.frame_at(t_rel)
            frame = rtc.VideoFrame(self.width, self.height, rtc.VideoBufferType.I420, data.tobytes())
            # stamped with the instant it shows, as a camera stamps its frames: when this process
            # is busy the frame goes out late, but its RTP time says when it was due
            source.capture_frame(frame, timestamp_us=round((t0 + t_rel) * 1e6))
            self.frames_sent += 1
            k += 1
            if self.vfr:
                t_rel = self._next_vfr_time(t_rel, rng)

    def _next_vfr_time(self, t_rel: float, rng: random.Random) -> float:
        nxt = t_rel + rng.uniform(0.010, 0.120)
        iv = self.marker_interval
        if iv > 0:
            # Never skip over a marker onset: land exactly on it so every flash is visible.
            marker = (int(t_rel / iv + 1e-9) + 1) * iv
            if t_rel < marker < nxt:
                nxt = marker
        return nxt

    async def _audio_loop(self, source: rtc.AudioSource) -> None:
        assert self._t0 is not None
        t0 = self._t0
        n = 0
        burst = self.audio_burst
        while True:
            # Push the 10 ms chunk that starts at sample n when its first sample is due; with
            # ``audio_burst`` the chunks are held and sent together every ``audio_burst`` seconds
            # (the receiver's audio jitter buffer grows, the video's does not; the sender's own
            # audio moves against its picture too, as measured in the file written as sent).
            due = n / SAMPLE_RATE
            if burst > 0:
                due = math.ceil(due / burst - 1e-9) * burst
            await self._sleep_until(t0 + due)
            samples = self.tone.samples(n, _AUDIO_FRAME_SAMPLES)
            frame = rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, _AUDIO_FRAME_SAMPLES)
            await source.capture_frame(frame)
            self.audio_frames_sent += 1
            n += _AUDIO_FRAME_SAMPLES


class _Pacer:
    """A daemon thread running an event loop of its own, for the frame pacers (started lazily:
    a publisher that is never started costs no thread)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="pyegress-pacer", daemon=True)
            self._thread.start()
        return self._loop

    def run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the pacer loop until :meth:`close` (an error is logged)."""
        asyncio.run_coroutine_threadsafe(coro, self.loop).add_done_callback(_log_failure)

    def close(self) -> None:
        """Cancel the pacers, wait for them to end, stop the loop and its thread (blocking)."""
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_others(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()


async def _cancel_others() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _log_failure(fut: concurrent.futures.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.error("publisher: a frame pacer failed", exc_info=fut.exception())


def join_token(
    api_key: str | None,
    api_secret: str | None,
    room: str | None,
    identity: str | None,
    name: str | None = None,
) -> str:
    """A token that lets ``identity`` join ``room`` and publish (all four are required)."""
    if not (api_key and api_secret and room and identity):
        raise ValueError("pass token, or api_key + api_secret + room + identity")
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True)
    builder = api.AccessToken(api_key, api_secret).with_identity(identity).with_grants(grants)
    if name is not None:
        builder = builder.with_name(name)
    return builder.to_jwt()


def _default_bitrate(width: int, height: int) -> int:
    pixels = width * height
    return int(min(max(pixels * 6, 500_000), 8_000_000))  # ~1.4 Mbps at 640x360
