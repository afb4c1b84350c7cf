"""How much longer than on a clean network each subscribed track is held on its way in.

On a jittery network the receiver's audio jitter buffer (NetEq) grows to absorb the jitter, and
the video's grows by its own, different amount: audio then reaches pyegress later than the
video of the same instant (measured through a loopback server with the audio sent in bursts:
86 ms late at 100 ms of jitter, 173 ms at 200 ms). This module keeps each track's excess over
a clean network's, read from the SDK's WebRTC stats:

- **audio**: how late the sound being played is against the earliest its packets came
  (:class:`Lateness`). NetEq's counters say exactly how far the sound it played has been
  stretched (concealment, slowing down) or squeezed; with the packets received and the arrival
  of the newest, that is the audio's lateness from its first packets on. NetEq's stated target
  delay, followed before session 19, stays at its start value (80 ms) for a track's first
  second whatever the network does, so the first marker under 200 ms bursts was 187-226 ms
  off; and NetEq holds packets 10-55 ms beyond its target, which no other stat shows.
- **video**: what the jitter buffer aims to hold (``jitter_buffer_target_delay`` per emitted
  frame, over the last poll), once its first second is over.

A participant's audio and camera are lined up with them (``RoomSource.lag``): when the camera
is held longer, the audio is placed later by the difference; when the audio is, it is placed
earlier than it came, by up to ``MAX_ADVANCE`` (the output reads it ``pipeline.LATENCY``
after its instant), and the picture waits only for the rest. A picture that waits moves by
whole frames (a frame shown twice each 33 ms); audio moves by stretching a little, or by one
jump: on a machine that stalls, NetEq's target swings by tens of ms each poll, and following
it with the picture repeated frames in every recording (measured: 120 ms stalls every 1.5 s
made the audio lead by 118-160 ms, 10 repeats in 10 s; 4 with the picture left in place).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import statistics
import time

from livekit import rtc

log = logging.getLogger("pyegress.source")

#: Video jitter buffer target delay through a clean (loopback) network, seconds.
CLEAN_TARGET = 0.014
#: An audio track's lateness (:class:`Lateness`) through a clean (loopback) network once NetEq
#: has settled: 5-15 ms, the median of a reading's 10 ms spread (when in its output pull the
#: stats are read). ``room.AUDIO_PATH_DELAY`` was measured there.
CLEAN_LATENESS = 0.010
#: The sound each audio packet carries: Opus as every WebRTC sender frames it (libwebrtc's
#: default, the LiveKit SDKs, browsers). Where the packets say otherwise (silence not sent,
#: longer frames), the sound played so far bounds what was received (``Lateness.read``).
OPUS_FRAME = 0.020
#: Units of the SDK's stats (livekit 1.2): a report's time in microseconds, a packet's arrival
#: in milliseconds, both since the Unix epoch on libwebrtc's clock.
REPORT_TIME_UNIT, ARRIVAL_TIME_UNIT = 1e-6, 1e-3
#: The rate NetEq's sample counters count in: Opus's, LiveKit's only audio codec (RED carries
#: Opus too). Not ``total_samples_duration``, which counts the silence played before the first
#: packet (measured: a reading 60 ms short at 0.5 s, still 40 ms at 2 s).
SAMPLE_RATE = 48000
#: Packets this much later (seconds) than the line they came on come after a pause in sending
#: (a mute), not after a wait: longer than the network holds a packet here (200 ms bursts) and
#: than the spacing of Opus's packets in silence (DTX: 400 ms).
GAP = 0.5
#: The line an audio track's packets arrive on is the least of this many readings' (2 s apart
#: once a track's first seconds are over): a newest packet is seldom held (after a burst, the
#: last packet of it came at once).
LINE_READINGS = 5
#: An audio track's lateness is the median of its readings over this long (seconds): each is
#: off by up to one 10 ms output pull, and a slow poll's reading stands alone.
LATENESS_WINDOW = 0.3
#: Seconds between two readings of a track's stats; a track's first seconds are read more often
#: (every ``FAST_POLL`` for ``FAST_SECONDS``, an audio track every ``FAST_AUDIO_POLL`` for its
#: first ``FAST_AUDIO_SECONDS``): audio's lateness is known from its first packets on, in time
#: for a recording's first second, and jitter buffers settle within about a second. A reading
#: costs 0.4-1.0 ms of CPU (measured: 85 readings a second beside a recording): 9 more a track
#: than 0.25 s polls would take, under 0.5 % of a 20 s four-participant recording's CPU.
POLL_INTERVAL = 2.0
FAST_POLL = 0.25
FAST_SECONDS = 3.0
FAST_AUDIO_POLL = 0.1
FAST_AUDIO_SECONDS = 1.5
#: Readings of a video track's first second are not used: its jitter buffer starts high and
#: settles within it (NetEq's target, followed for audio before session 19, moved its partner's
#: picture by two frames and back in every recording). An audio track's are used only from
#: ``START_EXCESS`` on: NetEq slows its first half second's sound down by up to 40 ms and speeds
#: it back up, on any network; followed, that swing is real, but the audio input moves its
#: sound by 1 % a chunk (``media.timeline.SLEW``) and had moved it only half way by the first
#: marker, then too late the other way: clean-network markers 2-4 landed at -29..-14 ms in a
#: run whose later ones held -4. A network that holds the audio reads 170 ms and more then.
SETTLE_SECONDS = 1.0
START_EXCESS = 0.060
#: The most a reading may say (seconds): beyond it, something other than jitter is going on.
MAX_EXCESS = 1.0
#: The most a participant's audio and camera are moved apart to line up (seconds).
MAX_LAG = 0.3
#: The most audio is placed earlier than it came to line up with a camera held less (seconds):
#: with ``AUDIO_PATH_DELAY`` and a 40 ms chunk, within ``pipeline.LATENCY`` by 90 ms. The
#: camera waits for the rest (``MAX_LAG - MAX_ADVANCE`` at most: video inputs keep half a
#: second of frames, read ``pipeline.LATENCY`` behind).
MAX_ADVANCE = 0.1

_AUDIO = rtc.TrackKind.KIND_AUDIO


class Lateness:
    """How late an audio track's sound is played against the earliest its packets came.

    At each reading: the sound played so far, in the sender's time (samples output, less those
    NetEq made up by concealment or by slowing down, plus those it skipped by speeding up), and
    the sound sent up to the newest packet (``OPUS_FRAME`` a packet, the lost ones included). A
    packet's arrival less the sound up to it is least for a packet the network did not hold
    (the line); the report's time less the sound played is that line plus how late the sound
    now played is.

    A lost packet's concealment stands for its sound (played); the rest of the concealment is
    NetEq waiting for packets held on the way (later). Readings are taken only when packets
    came since the last, and a mute stops them (``JitterDelays.muted``), so a pause in sending
    is not read as a wait: after it, the line starts afresh if the packets come ``GAP`` or more
    later than it; a shorter pause, or a path that got slower, raises the line once
    ``LINE_READINGS`` readings are all above it. (A pause no one signals is read as a wait by a
    reading that sees its first concealment with the last packets, until packets come again.)"""

    def __init__(self) -> None:
        self._packets = 0
        self._sent = 0.0  # seconds of sound up to the start of the newest packet
        self._lines: collections.deque[float] = collections.deque(maxlen=LINE_READINGS)
        self._readings: collections.deque[tuple[float, float]] = collections.deque()

    def read(self, stats: rtc.stats.RtcStats) -> float | None:
        """Seconds the sound now played is late (the median over ``LATENESS_WINDOW``), from
        the track's ``inbound_rtp`` stats; None before its first sound was played."""
        ib, got = stats.inbound_rtp.inbound, stats.inbound_rtp.received
        lost = max(0, got.packets_lost)
        packets = got.packets_received + lost
        if got.packets_received <= 0 or ib.total_samples_received <= 0 or packets <= self._packets:
            return self._median()  # no packet since the last reading: nothing new to say
        now = stats.inbound_rtp.rtc.timestamp * REPORT_TIME_UNIT
        arrival = ib.last_packet_received_timestamp * ARRIVAL_TIME_UNIT
        waited = ib.concealed_samples - min(ib.concealed_samples, lost * OPUS_FRAME * SAMPLE_RATE)
        made_up = waited + ib.inserted_samples_for_deceleration
        played = (ib.total_samples_received - made_up + ib.removed_samples_for_acceleration) / SAMPLE_RATE
        self._sent += (packets - max(self._packets, 1)) * OPUS_FRAME
        self._sent = max(self._sent, played - OPUS_FRAME)  # silence not sent (DTX) was played
        self._packets = packets
        line = arrival - self._sent  # this reading's: how late the newest packet came
        if self._lines and line > min(self._lines) + GAP:  # the first packets after a pause
            self._lines.clear()
        self._lines.append(line)
        self._readings.append((now, now - played - min(self._lines)))
        while self._readings[0][0] < now - LATENESS_WINDOW:
            self._readings.popleft()
        return self._median()

    def restart(self) -> None:
        """Read afresh from the next packets on (after a mute: the sender's clock went on while
        nothing was sent, so neither the line nor the readings before it hold)."""
        self._lines.clear()
        self._readings.clear()

    def _median(self) -> float | None:
        return statistics.median(late for _, late in self._readings) if self._readings else None


class JitterDelays:
    """Polls the stats of the tracks it watches; ``excess(sid)`` is the latest extra delay."""

    def __init__(self, interval: float = POLL_INTERVAL) -> None:
        self.interval = interval
        self._tracks: dict[str, rtc.Track] = {}
        self._last: dict[str, tuple[float, int]] = {}  # sid -> (target delay sum, emitted count)
        self._lateness: dict[str, Lateness] = {}
        self._excess: dict[str, float] = {}
        self._since: dict[str, float] = {}  # when each track was first watched
        self._fast_since: dict[str, float] = {}  # when each track was watched, or unmuted
        self._due: dict[str, float] = {}  # when each track is read next
        self._paused: set[str] = set()  # muted tracks: not read, their excess stands
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # a track to read sooner than the poll asleep

    def watch(self, track: rtc.Track) -> None:
        """Start following ``track`` (a remote audio or video track being pumped)."""
        if track.sid not in self._tracks:
            now = time.monotonic()
            self._since[track.sid] = self._fast_since[track.sid] = self._due[track.sid] = now
        self._tracks[track.sid] = track
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pyegress-jitter")

    def forget(self, sid: str) -> None:
        """Stop following a track (unsubscribed, ended)."""
        for d in (self._tracks, self._last, self._lateness, self._excess, self._due):
            d.pop(sid, None)
        self._since.pop(sid, None)
        self._fast_since.pop(sid, None)
        self._paused.discard(sid)

    def muted(self, sid: str, muted: bool) -> None:
        """The sender of track ``sid`` muted it (its last excess stands: NetEq concealing a
        pause in sending is not a wait) or unmuted it (read afresh, often again for a while)."""
        if muted:
            if sid in self._tracks:
                self._paused.add(sid)
            return
        self._paused.discard(sid)
        if sid in self._lateness:
            self._lateness[sid].restart()
        if sid in self._tracks:  # read at once and often: the readings after it follow at once
            self._fast_since[sid] = self._due[sid] = time.monotonic()
            self._wake.set()

    def excess(self, sid: str) -> float:
        """Seconds the track is held beyond a clean network's (0 if unknown)."""
        return self._excess.get(sid, 0.0)

    async def close(self) -> None:
        """Stop polling and let go of the tracks (before their room disconnects: an SDK track
        released after that fails to drop its handle)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for sid in list(self._tracks):
            self.forget(sid)

    async def _run(self) -> None:
        while self._tracks:
            now = time.monotonic()
            for sid, track in list(self._tracks.items()):
                if self._due.get(sid, now) > now:
                    continue
                self._due[sid] = now + self._poll_interval(sid, track.kind, now)
                if sid in self._paused:
                    continue
                try:
                    stats = await track.get_stats()
                    if sid in self._tracks and sid not in self._paused:
                        self._update(sid, track.kind, stats)
                except Exception as e:  # the track went away meanwhile (or stats of another shape)
                    log.debug("no jitter reading for track %s: %s", sid, e)
            due = min(self._due.values(), default=now + self.interval)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - time.monotonic()))

    def _poll_interval(self, sid: str, kind: rtc.TrackKind.ValueType, now: float) -> float:
        age = now - self._fast_since.get(sid, now)
        if kind == _AUDIO and age < FAST_AUDIO_SECONDS:
            return FAST_AUDIO_POLL
        return FAST_POLL if age < FAST_SECONDS else self.interval

    def _update(self, sid: str, kind: rtc.TrackKind.ValueType, stats: list[rtc.stats.RtcStats]) -> None:
        for s in stats:
            if s.WhichOneof("stats") != "inbound_rtp":
                continue
            settled = time.monotonic() - self._since.get(sid, 0.0) >= SETTLE_SECONDS
            if kind == _AUDIO:
                late = self._lateness.setdefault(sid, Lateness()).read(s)
                if late is not None and (settled or late - CLEAN_LATENESS >= START_EXCESS):
                    self._set(sid, late - CLEAN_LATENESS)
                return
            ib = s.inbound_rtp.inbound
            total, count = ib.jitter_buffer_target_delay, ib.jitter_buffer_emitted_count
            last_total, last_count = self._last.get(sid, (0.0, 0))
            self._last[sid] = (total, count)
            if count > last_count and settled:
                self._set(sid, (total - last_total) / (count - last_count) - CLEAN_TARGET)
            return

    def _set(self, sid: str, excess: float) -> None:
        excess = min(MAX_EXCESS, max(0.0, excess))
        if abs(excess - self._excess.get(sid, 0.0)) >= 0.02:
            log.debug("track %s: held %.0f ms beyond a clean network", sid, excess * 1e3)
        self._excess[sid] = excess
