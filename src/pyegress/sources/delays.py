"""How much longer than on a clean network each subscribed track is held by its jitter buffer.

On a jittery network the receiver's audio jitter buffer (NetEq) grows to absorb the jitter, and
the video's grows by its own, different amount: audio then reaches pyegress later than the
video of the same instant (measured through a loopback server with the audio sent in bursts:
86 ms late at 100 ms of jitter, 173 ms at 200 ms). The SDK's WebRTC stats say how long each
jitter buffer is aiming to hold its media now (``jitter_buffer_target_delay`` per emitted
sample or frame, over the last poll); this module keeps each track's excess over a clean
network's. A participant's audio and camera are lined up with them (``RoomSource.lag``): when
the camera is held longer, the audio is placed later by the difference; when the audio is, it
is placed earlier than it came, by up to ``MAX_ADVANCE`` (the output reads it
``pipeline.LATENCY`` after its instant), and the picture waits only for the rest. A picture
that waits moves by whole frames (a frame shown twice each 33 ms); audio moves by stretching
a little, or by one jump: on a machine that stalls, NetEq's target swings by tens of ms each
poll, and following it with the picture repeated frames in every recording (measured: 120 ms
stalls every 1.5 s made the audio lead by 118-160 ms, 10 repeats in 10 s; 4 with the picture
left in place).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from livekit import rtc

log = logging.getLogger("pyegress.source")

#: Jitter buffer target delays through a clean (loopback) network, seconds: NetEq's floor for
#: 20 ms Opus packets, and the video jitter buffer's. ``AUDIO_PATH_DELAY`` was measured there.
CLEAN_TARGET = {rtc.TrackKind.KIND_AUDIO: 0.020, rtc.TrackKind.KIND_VIDEO: 0.014}
#: Seconds between two readings of a track's stats; the first seconds after a track is
#: watched are read more often (``FAST_POLL`` for ``FAST_SECONDS``): jitter buffers start high
#: and settle within about a second.
POLL_INTERVAL = 2.0
FAST_POLL = 0.25
FAST_SECONDS = 3.0
#: Readings of a track's first second are not used: a jitter buffer starts high (NetEq aims
#: for 60-80 ms on a clean network) and settles within it; followed, that start-up swing moved
#: its partner's picture by two frames and back (two repeats, two skips) in every recording.
SETTLE_SECONDS = 1.0
#: The most a reading may say (seconds): beyond it, something other than jitter is going on.
MAX_EXCESS = 1.0
#: The most a participant's audio and camera are moved apart to line up (seconds).
MAX_LAG = 0.3
#: The most audio is placed earlier than it came to line up with a camera held less (seconds):
#: with ``AUDIO_PATH_DELAY`` and a 40 ms chunk, within ``pipeline.LATENCY`` by 90 ms. The
#: camera waits for the rest (``MAX_LAG - MAX_ADVANCE`` at most: video inputs keep half a
#: second of frames, read ``pipeline.LATENCY`` behind).
MAX_ADVANCE = 0.1


class JitterDelays:
    """Polls the stats of the tracks it watches; ``excess(sid)`` is the latest extra delay."""

    def __init__(self, interval: float = POLL_INTERVAL) -> None:
        self.interval = interval
        self._tracks: dict[str, rtc.Track] = {}
        self._last: dict[str, tuple[float, int]] = {}  # sid -> (target delay sum, emitted count)
        self._excess: dict[str, float] = {}
        self._since: dict[str, float] = {}  # when each track was first watched
        self._task: asyncio.Task[None] | None = None
        self._fast_until = 0.0

    def watch(self, track: rtc.Track) -> None:
        """Start following ``track`` (a remote audio or video track being pumped)."""
        if track.sid not in self._tracks:
            self._since[track.sid] = time.monotonic()
        self._tracks[track.sid] = track
        self._fast_until = time.monotonic() + FAST_SECONDS
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pyegress-jitter")

    def forget(self, sid: str) -> None:
        """Stop following a track (unsubscribed, ended)."""
        self._tracks.pop(sid, None)
        self._last.pop(sid, None)
        self._excess.pop(sid, None)
        self._since.pop(sid, None)

    def excess(self, sid: str) -> float:
        """Seconds the track's jitter buffer holds media beyond a clean network's (0 if unknown)."""
        return self._excess.get(sid, 0.0)

    async def close(self) -> None:
        """Stop polling and let go of the tracks (before their room disconnects: an SDK track
        released after that fails to drop its handle)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._tracks.clear()
        self._last.clear()
        self._excess.clear()
        self._since.clear()

    async def _run(self) -> None:
        while self._tracks:
            for sid, track in list(self._tracks.items()):
                try:
                    stats = await track.get_stats()
                    if sid in self._tracks:
                        self._update(sid, track.kind, stats)
                except Exception as e:  # the track went away meanwhile (or stats of another shape)
                    log.debug("no jitter reading for track %s: %s", sid, e)
            await asyncio.sleep(FAST_POLL if time.monotonic() < self._fast_until else self.interval)

    def _update(self, sid: str, kind: rtc.TrackKind.ValueType, stats: list[rtc.stats.RtcStats]) -> None:
        for s in stats:
            if s.WhichOneof("stats") != "inbound_rtp":
                continue
            ib = s.inbound_rtp.inbound
            total, count = ib.jitter_buffer_target_delay, ib.jitter_buffer_emitted_count
            last_total, last_count = self._last.get(sid, (0.0, 0))
            self._last[sid] = (total, count)
            settled = time.monotonic() - self._since.get(sid, 0.0) >= SETTLE_SECONDS
            if count > last_count and settled:
                target = (total - last_total) / (count - last_count)
                excess = min(MAX_EXCESS, max(0.0, target - CLEAN_TARGET.get(kind, 0.0)))
                if abs(excess - self._excess.get(sid, 0.0)) >= 0.02:
                    log.debug("track %s: jitter buffer %.0f ms beyond a clean network's", sid, excess * 1e3)
                self._excess[sid] = excess
            return
