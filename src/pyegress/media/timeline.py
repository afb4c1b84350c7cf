"""The clock: frames and samples placed on one output timeline that follows the wall clock.

Output time ``t`` corresponds to monotonic wall time ``t0 + t``. Video keeps a short history of
(arrival, frame) and each tick takes the newest frame that had arrived by then, so the output
is constant frame rate whatever the sender does (pauses, variable fps, mute). Audio is written
at the sample position its arrival implies: continuously, chunk after chunk; small, slow
differences between that position and the arrival (the receiver's jitter buffer settling, clock
drift) are absorbed by stretching or squeezing chunks by at most ``SLEW``; a large jump (a pause,
a new path) re-anchors at once. What is missing reads as silence.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

#: Most a chunk of audio is stretched or squeezed to follow its arrival times (1 %: 0.4 ms per
#: 40 ms chunk, a 17-cent pitch change while it lasts).
SLEW = 0.01
#: Differences smaller than this (seconds) are arrival jitter, left alone.
SLEW_DEADBAND = 0.004
#: A chunk arriving more than this many drift tolerances away from where it continues is out
#: of line (an outlier, or the first chunk after a jump).
JUMP_FACTOR = 3
#: Audio is followed by the earliest arrival over this many seconds, not each chunk's: a chunk is
#: noted when the event loop gets to it, never before it came, and on a busy machine that is up
#: to tens of milliseconds after; a source's own delay (a jitter buffer growing, clock drift)
#: shows in every chunk and is followed as before.
ARRIVAL_WINDOW = 1.0


def stretch(samples: np.ndarray, count: int) -> np.ndarray:
    """``samples`` (n, channels) resampled to ``count`` frames by linear interpolation, int16."""
    n = len(samples)
    if count == n or n < 2:
        return samples
    at = np.linspace(0.0, n - 1, count)
    cols = [np.interp(at, np.arange(n), samples[:, c]) for c in range(samples.shape[1])]
    out: np.ndarray = np.rint(np.stack(cols, axis=1)).astype(np.int16)
    return out


#: Recent frame intervals the source's rate is judged on.
RATE_WINDOW = 15
#: A source is steady when its mean frame interval is within this share of a whole number of
#: output periods (30 fps or 15 fps into 30; not 24) and its intervals stray from that by less
#: than ``RATE_SPREAD`` periods in the median (not a variable-rate sender); once steady, twice
#: as much is allowed before it is not (a lost frame or a burst does not end the schedule).
RATE_TOLERANCE = 0.15
RATE_SPREAD = 0.25
#: Weight of each frame in the smoothed difference between where frames come and their slots
#: (small: one frame 40 ms late must not move the schedule; a lost frame does, in 4 frames).
SLOT_GAIN = 0.1
#: A schedule starts with its frame shown from the tick nearest to when it came (it is placed
#: mid-slot before that tick, so frames come half a period after their slots on average, and
#: the picture is neither late nor early on average: the sound, placed where it comes, stays
#: in step). It moves by a whole slot when frames come, smoothed, this many periods away from
#: that (more than half: a source on the ticks' phase would otherwise move back and forth).
SLOT_MOVE = 0.75
#: A frame this far (seconds) from its slot is a new start (a pause, a new path): re-anchored.
SLOT_JUMP = 0.25
#: Picture size changes an input keeps for its quality report (a sender that rescales all day
#: would otherwise grow the list without end); later ones are counted only.
SIZES_KEPT = 64


class Intervals:
    """The last ``RATE_WINDOW`` intervals between the times a source's frames came."""

    def __init__(self) -> None:
        self._last: float | None = None
        self.recent: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW)

    def add(self, when: float) -> None:
        """Note a frame that came at ``when``."""
        if self._last is not None:
            self.recent.append(when - self._last)
        self._last = when

    def shift(self, delta: float) -> None:
        """The frames from now on are noted ``delta`` seconds later on purpose: the interval
        to the next one is its source's, not the change (which read as one 120 ms interval
        made a steady source unsteady for half a second, placed as it came, a frame off)."""
        if self._last is not None:
            self._last += delta

    def mean(self) -> float:
        """The mean recent interval (0 before two frames)."""
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    def median(self) -> float:
        """The median recent interval (0 before two frames)."""
        return sorted(self.recent)[len(self.recent) // 2] if self.recent else 0.0


@dataclass(frozen=True)
class Ticks:
    """The output's sampling instants: ``origin + k / fps`` (monotonic seconds)."""

    origin: float
    fps: float

    @property
    def period(self) -> float:
        """Seconds between two ticks."""
        return 1.0 / self.fps


class FrameSlots:
    """Gives each frame of a steady source its own output slots, in order.

    Placed where they arrive, frames of a 30 fps source sampled by 30 fps ticks land on either
    side of a tick with a millisecond of jitter: the output shows one frame twice and skips the
    next, visible judder. Here a steady source (its mean interval a whole number ``k`` of
    output periods) is scheduled instead: each frame takes the ``k`` slots after the previous
    one's, and is placed mid-slot, so it is shown exactly ``k`` times even when it comes up to
    half a period early or up to the pipeline's latency late. Where frames come stays the
    reference: when the smoothed difference reaches ``SLOT_MOVE`` periods (a frame lost on the
    way, two clocks drifting apart) the schedule moves by a whole slot (one skip or one hold,
    as due); a frame ``SLOT_JUMP`` away re-anchors it. Lip sync moves by at most that much.
    A source ``on_grid`` (a page painted by a display refreshing at the output's rate, only
    when it changes) is scheduled the same way, each frame in the slot of the refresh it was
    painted on, however many periods after the previous one: its paints are as the page showed
    them, where a steady rate inferred from them would misplace a late paint or a stretch of
    paints one period apart.
    A source with no steady rate (variable, 24 fps into 30) is placed as it comes, half a period
    earlier: each frame is shown from the tick nearest to it, as a schedule starts (a source
    that turns steady keeps its phase, no frame skipped).
    """

    def __init__(self, ticks: Ticks, intervals: Intervals, on_grid: bool = False) -> None:
        self.ticks = ticks
        self.intervals = intervals  # the source's, noted by its owner as frames come
        self.on_grid = on_grid
        self._slot: float | None = None  # the time the previous frame was placed at
        self._error = 0.0  # smoothed (arrival - slot), seconds
        self.moves = 0  # whole-slot corrections so far

    def _steps(self) -> int:
        """Output periods per source frame (0: no steady rate)."""
        recent = self.intervals.recent
        if len(recent) < 3:
            return 0
        period = self.ticks.period
        mean = self.intervals.mean()
        k = round(mean / period)
        if k < 1:
            return 0
        spread = sorted(abs(d - k * period) for d in recent)[len(recent) // 2]
        slack = 2.0 if self._slot is not None else 1.0
        close = abs(mean - k * period) <= slack * RATE_TOLERANCE * period
        return k if close and spread <= slack * RATE_SPREAD * period else 0

    def _periods_since(self, previous: float, when: float) -> int:
        """Output periods between the previous frame and this one of a source on the output's
        grid, judged against where frames have been coming relative to their slots (smoothed),
        not by their raw interval: each frame's jitter counts once, not twice."""
        return max(0, round((when - previous - self._error) / self.ticks.period))

    def shift(self, delta: float) -> None:
        """The frames from now on come ``delta`` seconds later than the ones before on purpose
        (the lag that lines them up with their sound changed): from half a period on, the
        schedule moves with them at once, to the tick nearest their new time. Followed slot by
        slot as if a clock drifted, an 80 ms change took half a second, the picture up to two
        frames early meanwhile (measured under 200 ms audio bursts). A smaller change joins the
        smoothed difference (a lag wobbling by a millisecond moves nothing)."""
        if self._slot is None:
            return
        period = self.ticks.period
        self._error += delta
        if abs(delta) >= period / 2:
            move = round((self._error - period / 2) / period)
            self._slot += move * period
            self._error -= move * period

    def place(self, when: float) -> float:
        """The time at which a frame that came (or is due) at ``when`` is shown (``when``
        already noted in ``intervals``)."""
        period = self.ticks.period
        if self.on_grid:
            k = self._periods_since(self._slot, when) if self._slot is not None else 0
        elif not (k := self._steps()):  # shown from the tick nearest to when it came
            self._slot = None
            return when - period / 2
        slot = None if self._slot is None else self._slot + k * period
        if slot is None or abs(when - slot) > SLOT_JUMP:
            origin = self.ticks.origin
            mid = round((when - origin) / period) - 0.5  # shown from the tick nearest to when
            self._slot = origin + mid * period
            self._error = when - self._slot
            return self._slot
        self._error += SLOT_GAIN * (when - slot - self._error)
        off = self._error - period / 2
        if abs(off) >= SLOT_MOVE * period:
            move = round(off / period)
            slot += move * period
            self._error -= move * period
            self.moves += 1
        self._slot = slot
        return slot


class VideoInput(Generic[T]):
    """Latest-frame holder with a short arrival history (thread-safe). With the output's
    ``ticks``, a steady source's frames get their own slots (:class:`FrameSlots`).

    ``frames_skipped`` counts frames received after the first one shown that were never shown:
    a newer one had arrived by the next output frame (the frame came late, or faster than the
    output frame rate), what GStreamer's ``videorate`` counts as dropped.
    """

    def __init__(self, ticks: Ticks | None = None, history: float = 0.5, on_grid: bool = False) -> None:
        #: (placed arrival, the frame's own arrival, frame): ticks take frames by the first,
        #: the delay they are shown after is measured from the second.
        self._frames: collections.deque[tuple[float, float, T]] = collections.deque()
        self.shown_after = 0.0  # smoothed: how long after its own time a frame is first shown
        self._history = history
        self._lock = threading.Lock()
        self.intervals = Intervals()  # where frames came: the source's rate
        self.slots = FrameSlots(ticks, self.intervals, on_grid) if ticks is not None else None
        self.frames_in = 0
        self.frames_skipped = 0
        self._shown = -1  # index (in arrival order) of the newest frame handed out
        # quality counters (pyegress.quality): see _count_shown
        self.repeats = 0  # ticks that showed a frame again when the next one was due
        self.longest_freeze = 0.0  # longest time (s) one frame stayed on screen before a newer one
        self._shown_due = 0.0  # when the frame on screen was due
        self._shown_since = 0.0  # the first tick that showed it
        self._held = 0  # its repeats so far (counted once a newer frame ends the run)
        #: (arrival, width, height) of each frame that came in a new size (a simulcast layer
        #: switch, a sender's rescaling), the first :data:`SIZES_KEPT`; ``size_changes`` all
        self.sizes: list[tuple[float, int, int]] = []
        self.size_changes = 0
        self._size: tuple[int, int] | None = None

    def push(self, frame: T, arrival: float) -> None:
        """Add a frame received at monotonic time ``arrival`` (never before the previous one's:
        when arrival times are corrected, frames skip ahead or hold, never go back)."""
        with self._lock:
            self.intervals.add(arrival)
            came = arrival
            if self.slots is not None:
                arrival = self.slots.place(arrival)
            if self._frames:
                arrival = max(arrival, self._frames[-1][0])
            self._frames.append((arrival, came, frame))
            self.frames_in += 1
            self._note_size(frame, came)
            # keep at least one frame older than the history window (the one on screen)
            while len(self._frames) > 2 and self._frames[1][0] < arrival - self._history:
                self._frames.popleft()

    def shift(self, delta: float) -> None:
        """Frames from now on are pushed ``delta`` seconds later than before on purpose (a
        changed lip-sync lag): a steady source's schedule moves with them at once."""
        with self._lock:
            self.intervals.shift(delta)
            if self.slots is not None:
                self.slots.shift(delta)

    def _note_size(self, frame: T, came: float) -> None:
        """Note a frame whose size differs from the one before (a picture drawn on demand has
        none: nothing is noted)."""
        width, height = getattr(frame, "width", None), getattr(frame, "height", None)
        if not isinstance(width, int) or not isinstance(height, int):
            return
        if self._size != (width, height):
            self._size = (width, height)
            self.size_changes += 1
            if len(self.sizes) < SIZES_KEPT:
                self.sizes.append((came, width, height))

    def at(self, when: float) -> T | None:
        """The newest frame that had arrived by monotonic time ``when`` (None before the first)."""
        with self._lock:
            chosen, pos, due, came = None, -1, 0.0, 0.0
            for arrival, frame_came, frame in self._frames:
                if arrival > when:
                    break
                chosen, pos, due, came = frame, pos + 1, arrival, frame_came
            index = self.frames_in - len(self._frames) + pos
            if pos >= 0:
                if index > self._shown:
                    self._note_delay(when - came)
                self._count_shown(index, when, due)
            if pos >= 0 and index > self._shown:
                if self._shown >= 0:
                    self.frames_skipped += index - self._shown - 1
                self._shown = index
            return chosen

    def _note_delay(self, delay: float) -> None:
        """Follow how long after their own time frames are first shown: the output's ticks
        sample them up to a period late, or (a steady source's slots) at the tick nearest to
        their time, half a period either way: a phase that the paired audio follows
        (``RoomSource.lag``) instead of landing up to half a period off."""
        if abs(delay) > SLOT_JUMP:  # a re-anchor or a stalled tick, not the phase
            return
        first = self._shown < 0
        self.shown_after = delay if first else self.shown_after + SLOT_GAIN * (delay - self.shown_after)

    def _count_shown(self, index: int, when: float, due: float) -> None:
        """Quality counters of a tick at ``when`` showing frame ``index`` (due at ``due``).

        A tick repeats the frame on screen when the next one was due by then (one source
        interval, the median of the recent ones, after it was due): a 15 fps source at 30 fps
        shows each frame twice without a repeat. Repeats and freezes count once a newer frame
        ends the run, so the last frame held after a track ends is neither."""
        if index > self._shown:
            if self._shown >= 0:
                self.repeats += self._held
                self.longest_freeze = max(self.longest_freeze, when - self._shown_since)
            self._shown_due, self._shown_since, self._held = due, when, 0
        elif index == self._shown and self.intervals.recent:
            due_next = self._shown_due + self.intervals.median()
            if when >= due_next:
                self._held += 1


class AudioInput:
    """A sample ring on the output timeline (int16, interleaved), silence where nothing arrived."""

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        t0: float,
        *,
        capacity: float = 10.0,
        drift_tolerance: float = 0.02,
    ) -> None:
        self.sample_rate, self.channels, self.t0 = sample_rate, channels, t0
        self._size = int(capacity * sample_rate)
        self._ring = np.zeros((self._size, channels), np.int16)
        self._read_pos = -(2**62)  # nothing played out yet
        self._write_pos: int | None = None
        self._offset = 0.0  # smoothed (arrival position - continuous position), samples
        self._tolerance = drift_tolerance * sample_rate
        self._deadband = SLEW_DEADBAND * sample_rate
        self._jumps = 0  # consecutive chunks far out of line
        # recent (arrival position - continuous position + moved): the earliest is followed
        self._early: collections.deque[tuple[float, int]] = collections.deque()
        self._moved = 0  # samples the continuous position was moved by so far (slew, jumps)
        self._lock = threading.Lock()
        self.samples_in = 0
        self.reanchors = 0
        self.slewed = 0  # samples added (+) or removed (-) by stretching, in total
        # quality counters (pyegress.quality)
        self.stretched = 0  # samples added by stretching
        self.squeezed = 0  # samples removed by squeezing
        self.dropped = 0  # samples that came after their place had been played out
        self.silence = 0  # samples read that nothing wrote, since the first sample came
        self._filled = np.zeros(self._size, bool)  # ring slots written since last read
        self._first: int | None = None  # timeline position of the first sample written

    def reset(self) -> None:
        """Forget continuity (a new track); the next chunk anchors by its arrival."""
        with self._lock:
            self._write_pos = None
            self._offset = 0.0
            self._jumps = 0
            self._early.clear()

    def push(self, samples: np.ndarray, arrival: float) -> None:
        """Write ``samples`` (n, channels) that finished arriving at monotonic ``arrival``."""
        n = len(samples)
        expected = round((arrival - self.t0) * self.sample_rate) - n
        with self._lock:
            if self._write_pos is None:
                self._write_pos = expected
                self._early.clear()
            elif abs(expected - self._write_pos) > JUMP_FACTOR * self._tolerance:
                # far out of line: one such chunk is an outlier (written in sequence, not averaged
                # in); two in a row are a jump (a pause, a new path): re-anchor where they arrive
                self._jumps += 1
                if self._jumps >= 2:
                    self._write_pos, self._offset, self._jumps = expected, 0.0, 0
                    self._early.clear()
                    self.reanchors += 1
            else:
                self._jumps = 0
                self._offset = 0.9 * self._offset + 0.1 * self._earliest(arrival, expected - self._write_pos)
                if abs(self._offset) > self._tolerance:
                    self._write_pos += int(self._offset)
                    self._moved += int(self._offset)
                    self._offset = 0.0
                    self.reanchors += 1
                elif abs(self._offset) > self._deadband:  # follow slowly: stretch or squeeze
                    limit = max(1, int(n * SLEW))
                    k = int(max(-limit, min(limit, round(self._offset))))
                    samples = stretch(samples, n + k)
                    n += k
                    self._offset -= k  # the write position moves by k: so does the difference
                    self._moved += k
                    self.slewed += k
                    self.stretched, self.squeezed = self.stretched + max(k, 0), self.squeezed - min(k, 0)
            start = self._write_pos
            self._write_pos += n
            self.samples_in += n
            late = self._read_pos - start  # already played out: those samples are dropped
            if self._first is None:
                self._first = start
            if late >= n:
                self.dropped += n
                return
            if late > 0:
                samples, start, n = samples[late:], self._read_pos, n - late
                self.dropped += late
            for lo, hi, a, b in self._spans(start, n):
                self._ring[lo:hi] = samples[a:b]
                self._filled[lo:hi] = True

    def _earliest(self, arrival: float, diff: int) -> int:
        """The earliest of the last ``ARRIVAL_WINDOW`` seconds' differences between where chunks
        came and where they continue (``diff`` this chunk's), as if measured now."""
        self._early.append((arrival, diff + self._moved))
        while self._early[0][0] < arrival - ARRIVAL_WINDOW:
            self._early.popleft()
        return min(d for _, d in self._early) - self._moved

    def _spans(self, start: int, count: int) -> list[tuple[int, int, int, int]]:
        """Ring slices ``[lo:hi]`` holding timeline positions ``start+a .. start+b`` (1 or 2)."""
        lo = start % self._size
        first = min(count, self._size - lo)
        spans = [(lo, lo + first, 0, first)]
        if first < count:
            spans.append((0, count - first, first, count))
        return spans

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples for output positions ``[start, start+count)``; silence where nothing arrived."""
        out = np.empty((count, self.channels), np.int16)
        with self._lock:
            for lo, hi, a, b in self._spans(start, count):
                out[a:b] = self._ring[lo:hi]
                self._ring[lo:hi] = 0  # consumed: the ring slot is silence until written again
                if self._first is not None:  # silence inserted: read, never written
                    after = min(b - a, max(0, start + b - self._first))  # the span's last ones
                    self.silence += after - int(np.count_nonzero(self._filled[hi - after : hi]))
                self._filled[lo:hi] = False
            self._read_pos = max(self._read_pos, start + count)
        return out
