"""Audio of a room: per-participant inputs mixed (or split left/right), levels for the speaker."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .timeline import AudioInput

#: Peak the limiter keeps the mix under (int16 full scale is 32767).
_CEILING = 30000.0


def add_clipped(chunks: list[np.ndarray]) -> np.ndarray:
    """The sum of equally shaped int16 PCM chunks, clipped to int16 (one chunk: itself)."""
    if len(chunks) == 1:
        return chunks[0]
    total: np.ndarray = np.sum([c.astype(np.int32) for c in chunks], axis=0)
    mixed: np.ndarray = np.clip(total, -32768, 32767).astype(np.int16)
    return mixed


class Mixing(enum.Enum):
    """``audio_mixing`` of the room composite request."""

    DEFAULT = 0  # everyone in both channels
    DUAL_CHANNEL_AGENT = 1  # agents left, everyone else right
    DUAL_CHANNEL_ALTERNATE = 2  # participants alternate left / right in join order


@dataclass
class Voice:
    """One participant's audio on the timeline."""

    identity: str
    input: AudioInput
    agent: bool = False
    order: int = 0
    side: int | None = None  # routed to one channel (0 left, 1 right) whatever the mixing


class Mixer:
    """Reads every voice for a span of the timeline and mixes it, without clipping.

    Same ``read(start, count)`` interface as :class:`AudioInput`, so the pipeline treats a room
    like a single source. ``levels`` holds each voice's RMS of the last span (for speakers).
    Voices whose identity is in ``excluded`` are read (their buffer moves on) but neither mixed
    nor measured; with ``keep_voices`` the last span of every other voice stays in ``last``
    (per-speaker tracks).
    """

    def __init__(self, sample_rate: int, channels: int, t0: float, mixing: Mixing = Mixing.DEFAULT) -> None:
        self.sample_rate, self.channels, self.t0 = sample_rate, channels, t0
        self.mixing = mixing
        self.voices: dict[str, Voice] = {}
        self.levels: dict[str, float] = {}
        self._gain = 1.0
        self._joined = 0
        self.excluded: set[str] = set()
        self.keep_voices = False
        self.last: dict[str, np.ndarray] = {}

    def voice(self, identity: str, *, agent: bool = False, side: int | None = None) -> AudioInput:
        """The input of ``identity`` (created on first use, kept across republishes); ``side``
        puts it in one channel only (a media source's audio routes)."""
        v = self.voices.get(identity)
        if v is None:
            v = Voice(
                identity, AudioInput(self.sample_rate, self.channels, self.t0), agent, self._joined, side
            )
            self._joined += 1
            self.voices[identity] = v
        return v.input

    def remove(self, identity: str) -> None:
        """A participant left: their voice stops (what was buffered is dropped)."""
        self.voices.pop(identity, None)
        self.levels.pop(identity, None)

    def read(self, start: int, count: int) -> np.ndarray:
        """The mix for output samples ``[start, start+count)``, int16 (count, channels)."""
        mix = np.zeros((count, self.channels), np.float32)
        self.last = {}
        for v in list(self.voices.values()):
            raw = v.input.read(start, count)
            if v.identity in self.excluded:
                self.levels.pop(v.identity, None)
                continue
            if self.keep_voices:
                self.last[v.identity] = raw
            pcm = raw.astype(np.float32)
            self.levels[v.identity] = float(np.sqrt(np.mean(np.square(pcm)))) if count else 0.0
            side = self._side(v)
            if side is None:
                mix += pcm
            else:
                mix[:, side] += pcm.mean(axis=1)
        return self._limit(mix)

    def _side(self, v: Voice) -> int | None:
        if v.side is not None:
            return v.side
        if self.mixing is Mixing.DUAL_CHANNEL_AGENT:
            return 0 if v.agent else 1
        if self.mixing is Mixing.DUAL_CHANNEL_ALTERNATE:
            return v.order % 2
        return None

    def _limit(self, mix: np.ndarray) -> np.ndarray:
        """A smooth limiter: gain ramps down at once on peaks and recovers slowly, no clicks."""
        peak = float(np.max(np.abs(mix))) if mix.size else 0.0
        target = min(1.0, _CEILING / peak) if peak > 0 else 1.0
        new = target if target < self._gain else min(target, self._gain + (1.0 - self._gain) * 0.05)
        if new != 1.0 or self._gain != 1.0:
            ramp = np.linspace(self._gain, new, len(mix), dtype=np.float32)[:, None]
            mix = mix * np.minimum(ramp, target)
        self._gain = new
        out: np.ndarray = np.clip(mix, -32768, 32767).astype(np.int16)
        return out


class SpeakerTracker:
    """The active speaker, with hysteresis so the picture does not flicker between voices."""

    def __init__(self, hold: float = 1.0, threshold: float = 300.0, ratio: float = 1.5) -> None:
        self.hold, self.threshold, self.ratio = hold, threshold, ratio
        self.current: str | None = None
        self._candidate: str | None = None
        self._since = 0.0
        self._smooth: dict[str, float] = {}

    def update(self, levels: dict[str, float], now: float) -> str | None:
        """Feed the latest levels (RMS per identity) at timeline time ``now``."""
        levels = {k: 0.8 * self._smooth.get(k, v) + 0.2 * v for k, v in levels.items()}
        self._smooth = levels
        if self.current is not None and self.current not in levels:
            self.current = None
        if not levels:
            return self.current
        loudest = max(levels, key=lambda k: levels[k])
        level = levels[loudest]
        if level < self.threshold or loudest == self.current:
            self._candidate = None
            return self.current
        cur_level = levels.get(self.current, 0.0) if self.current else 0.0
        if self.current is not None and level < cur_level * self.ratio and cur_level >= self.threshold:
            self._candidate = None
            return self.current
        if loudest != self._candidate:
            self._candidate, self._since = loudest, now
        if self.current is None or now - self._since >= self.hold:
            self.current, self._candidate = loudest, None
        return self.current

    def set(self, identity: str | None) -> None:
        """Take the speaker from elsewhere (the room's active-speaker events)."""
        self.current = identity
