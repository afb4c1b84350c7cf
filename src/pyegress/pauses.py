"""Pause and resume: which output ticks are paused, and how recorded media is cut around them.

While paused the pipeline keeps ticking on the wall clock but hands its encoders a slate (black,
or the last frame shown; silence) instead of the room. What each output makes of that:

- live outputs (RTMP, SRT, WebSocket) take the slate, so a viewer's player never stalls;
- recorded outputs (files, HLS, images) take it too when the pause's fill is ``"black"`` or
  ``"still"``; with ``"cut"`` (the default) the paused span is left out: its packets dropped,
  every later packet moved earlier by what was cut, so the timeline goes on seamlessly and audio
  and video stay in sync (both move by the same whole number of ticks). The video encoders make
  a key frame on the first tick after a cut, so a file continues and HLS starts a new segment
  (marked ``#EXT-X-DISCONTINUITY``) there.

Ticks are the pipeline's (``k / fps`` seconds of output time, wall time ``t0 + k / fps``). A pause
or resume takes effect on the first tick not yet handed out, so what the room did before the call
is kept and nothing after it is recorded.

A retry of the egress (a new pipeline, a new clock) goes on with the attempt before it
(:meth:`PauseClock.carry_on`): a pause it ended in goes on, and where the retry continues the
same file or playlist, its media times run on from where that media ended and the earlier
pauses stay listed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import InvalidRequestError
from .media.encoder import EncodedPacket

PauseFill = Literal["cut", "black", "still"]
FILLS: tuple[str, ...] = get_args(PauseFill)


def check_fill(fill: str) -> PauseFill:
    """``fill`` as a :data:`PauseFill`, or ``InvalidRequestError`` naming the field."""
    if fill not in FILLS:
        raise InvalidRequestError("fill", f"must be one of {', '.join(FILLS)}, not {fill!r}")
    return fill  # type: ignore[return-value]


@dataclass(frozen=True)
class Pause:
    """One pause: output ticks ``[start, end)`` (``end`` None while it lasts)."""

    start: int
    end: int | None
    fill: PauseFill


class PauseClock:
    """The pauses of one recording on the pipeline's ticks; read by the encode thread too (the
    tuple of pauses is replaced, never changed in place)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.t0 = 0.0  # monotonic time of tick 0 (set when the pipeline runs)
        self.wall0 = 0.0  # unix time of tick 0
        self.next_tick = 0  # the first tick not handed out yet (the pipeline keeps it)
        self.pauses: tuple[Pause, ...] = ()
        self.offset = 0.0  # media seconds before tick 0: what earlier attempts wrote (a retry)
        self.earlier: list[dict[str, object]] = []  # their pauses, on the same media clock

    def start(self, t0: float) -> None:
        """The clock runs: tick 0 is at monotonic ``t0``."""
        self.t0 = t0
        self.wall0 = time.time() - (time.monotonic() - t0)

    def carry_on(self, earlier: PauseClock, continued: float | None) -> None:
        """Go on from ``earlier``, the clock of the attempt before a retry (before this one
        starts): paused from tick 0 if it ended paused; when the retry continues its media,
        which ended ``continued`` seconds in, media times go on from there and its pauses stay
        listed."""
        if earlier.paused:
            self.pauses = (Pause(0, None, earlier.pauses[-1].fill),)
        if continued is not None:
            self.offset, self.earlier = continued, earlier.to_list()

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1].end is None

    def _tick_now(self) -> int:
        return max(self.next_tick, math.ceil((time.monotonic() - self.t0) * self.fps - 1e-9))

    def pause(self, fill: PauseFill = "cut") -> Pause:
        """Pause from the next tick on (idempotent: an ongoing pause is returned as it is)."""
        if self.paused:
            return self.pauses[-1]
        start = self._tick_now()
        if self.pauses and self.pauses[-1].end == start:  # resumed and paused on one tick
            self.pauses = self.pauses[:-1]
        self.pauses = (*self.pauses, Pause(start, None, fill))
        return self.pauses[-1]

    def resume(self) -> Pause | None:
        """Record again from the next tick on; the pause that ended (None when not paused)."""
        if not self.paused:
            return None
        last = self.pauses[-1]
        ended = dataclasses.replace(last, end=max(last.start, self._tick_now()))
        self.pauses = (*self.pauses[:-1], ended) if ended.end != ended.start else self.pauses[:-1]
        return ended

    # --- the pipeline --------------------------------------------------------------------

    def fill_at(self, k: int) -> PauseFill | None:
        """How tick ``k`` is filled (None: it records the room)."""
        for p in reversed(self.pauses):
            if p.start <= k and (p.end is None or k < p.end):
                return p.fill
            if p.end is not None and p.end <= k:
                return None
        return None

    def key_at(self, k: int) -> bool:
        """Whether tick ``k`` is the first after a cut (its video frame must be a key frame)."""
        return any(p.end == k and p.fill == "cut" for p in self.pauses)

    def cut_before(self, k: float) -> float:
        """Ticks cut out before tick ``k`` (whole ones, but for a fractional ``k`` inside a cut)."""
        total = 0.0
        for p in self.pauses:
            if p.fill != "cut" or p.start >= k:
                continue
            total += (k if p.end is None else min(p.end, k)) - p.start
        return total

    def in_cut(self, k: float) -> bool:
        return any(p.fill == "cut" and p.start <= k and (p.end is None or k < p.end) for p in self.pauses)

    def media_tick(self, k: int) -> int:
        """Tick ``k`` on the recorded outputs' timeline."""
        return k - round(self.cut_before(k))

    def cut(self, packet: EncodedPacket) -> EncodedPacket | None:
        """``packet`` as a recorded output takes it: None inside a cut, moved earlier after one."""
        if packet.pts is None or not self.pauses:
            return packet
        k = packet.start * self.fps + 1e-6
        if self.in_cut(k):
            return None
        cut = self.cut_before(k)
        if not cut:
            return packet
        d = round(cut / self.fps / packet.time_base)
        dts = packet.dts - d if packet.dts is not None else None
        return dataclasses.replace(packet, pts=packet.pts - d, dts=dts)

    # --- times ---------------------------------------------------------------------------

    def media_time(self, when: float) -> float:
        """Seconds on the recorded timeline of monotonic ``when`` (inside a cut: where it is)."""
        k = max(0.0, (when - self.t0) * self.fps)
        return self.offset + max(0.0, (k - self.cut_before(k)) / self.fps)

    def to_list(self) -> list[dict[str, object]]:
        """The pauses for manifests and sidecars (earlier attempts' first): wall time (unix ns)
        and media time (s)."""
        out = list(self.earlier)
        for p in self.pauses:
            end = p.end if p.end is not None else self.next_tick
            m0 = self.offset + (p.start - self.cut_before(p.start)) / self.fps
            m1 = m0 if p.fill == "cut" else m0 + (end - p.start) / self.fps
            out.append(
                {
                    "fill": p.fill,
                    "wall_start": int((self.wall0 + p.start / self.fps) * 1e9),
                    "wall_end": int((self.wall0 + end / self.fps) * 1e9),
                    "media_start": round(m0, 6),
                    "media_end": round(m1, 6),
                    "duration": round((end - p.start) / self.fps, 6),
                }
            )
        return out


class FrameCut:
    """Cuts paused spans out of a file of frames as sent (no ticks, no slate: only ``"cut"``).

    Times are seconds on the file's own timeline (one for all its streams, so they move
    together). A frame that arrives while ``clock`` is paused is dropped. The span cut runs from
    the end of what was written before the pause to the file time of the resume (the last frame
    seen while paused, moved on by the wall time until the resume), so the file continues
    without a gap; a video track that then waits for its key frame shows a short gap instead
    of losing its place. Frames older than the resume are dropped (another stream's late ones);
    video must then restart on a key frame (the caller's).
    """

    def __init__(self, clock: PauseClock) -> None:
        self.clock = clock
        self.cut = 0.0  # seconds left out so far
        self._paused_at: float | None = None
        self._seen: tuple[float, float] | None = None  # (file time, monotonic) of the last paused frame
        self._floor = -math.inf  # where the last cut ended: nothing older is written
        self._end = 0.0  # where what was written ends

    def place(self, t: float, end: float) -> float | None:
        """The file time of a frame spanning ``[t, end)``; None: dropped (paused, or cut)."""
        if self.clock.paused:
            if self._paused_at is None:
                self._paused_at = self._end
            self._seen = (t, time.monotonic())
            return None
        if self._paused_at is not None:
            resumed = min(t, self._resumed_at(t))
            resumed = max(resumed, self._paused_at)
            self.cut += resumed - self._paused_at
            self._floor, self._paused_at, self._seen = resumed, None, None
        if t < self._floor:
            return None
        self._end = max(self._end, end)
        return t - self.cut

    def _resumed_at(self, t: float) -> float:
        """The file time of the last resume (``t`` when it cannot be told)."""
        last = self.clock.pauses[-1] if self.clock.pauses else None
        if self._seen is None or last is None or last.end is None:
            return t
        seen, arrived = self._seen
        return seen + max(0.0, self.clock.t0 + last.end / self.clock.fps - arrived)
