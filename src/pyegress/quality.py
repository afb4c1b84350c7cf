"""The quality report of a recording: what each input received and how the timeline had to bend
it, and what each output's encoder made of it. It is how a user learns that a recording was bad
(judder, freezes, gaps, lip sync corrections) before a customer does; the manifest carries it
whole and ``EgressInfo.details`` a one-line summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .media.timeline import AudioInput, VideoInput


@dataclass
class LagRange:
    """The A/V lag corrections applied to one track (seconds added to its arrival times;
    negative: placed earlier than it came)."""

    min: float = 0.0
    max: float = 0.0
    last: float = 0.0
    changes: int = 0  # times the applied value changed
    count: int = 0  # frames or chunks it was applied to

    def add(self, lag: float) -> None:
        """Note the lag applied to one frame or chunk."""
        if self.count == 0:
            self.min = self.max = lag
        elif lag != self.last:
            self.changes += 1
        self.min, self.max, self.last = min(self.min, lag), max(self.max, lag), lag
        self.count += 1

    def merged(self, other: LagRange) -> LagRange:
        """Both ranges as one (an input fed by a track and, after a republish, its successor)."""
        if not other.count:
            return self
        if not self.count:
            return other
        return LagRange(min(self.min, other.min), max(self.max, other.max), other.last,
                        self.changes + other.changes, self.count + other.count)  # fmt: skip


@dataclass
class PictureSize:
    """A size an input's pictures came in from ``from_s`` seconds after its first frame on: a
    simulcast track starts on a lower layer and moves up (or down) as the server allows, which
    is why part of a recording can look soft or run at the lower layer's frame rate."""

    width: int
    height: int
    from_s: float


@dataclass
class VideoQuality:
    """One video input: frames received, output ticks that repeated a frame when the next was
    due, received frames never shown, the longest one frame stayed on screen, and the sizes its
    pictures came in (``size_changes`` counts them all, ``sizes`` lists the first 64)."""

    name: str
    frames_received: int
    frames_repeated: int
    frames_skipped: int
    longest_freeze_s: float
    lag: LagRange | None = None
    sizes: list[PictureSize] = field(default_factory=list)
    size_changes: int = 0


@dataclass
class AudioQuality:
    """One audio input, in samples at ``sample_rate``: received, silence read where nothing had
    come, samples added (stretched) or removed (squeezed) to follow the arrival times, samples
    that came too late, and the jumps the timeline re-anchored at."""

    name: str
    sample_rate: int
    samples_received: int
    silence_inserted: int
    samples_stretched: int
    samples_squeezed: int
    samples_dropped: int
    reanchors: int
    lag: LagRange | None = None


@dataclass
class OutputQuality:
    """What the encoders of one output produced."""

    name: str
    video_frames: int = 0
    video_bytes: int = 0
    audio_packets: int = 0
    audio_bytes: int = 0


@dataclass
class QualityReport:
    """Every input and output of a recording."""

    video: list[VideoQuality] = field(default_factory=list)
    audio: list[AudioQuality] = field(default_factory=list)
    outputs: list[OutputQuality] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``quality`` block."""
        return asdict(self)

    def summary(self) -> str:
        """One line for ``EgressInfo.details``."""
        parts = [
            f"video {v.name}: {v.frames_received} in, {v.frames_repeated} repeated, "
            f"{v.frames_skipped} skipped, longest freeze {v.longest_freeze_s:.2f} s{_lag(v.lag)}{_sizes(v)}"
            for v in self.video
        ]
        for a in self.audio:
            rate = a.sample_rate or 1
            parts.append(
                f"audio {a.name}: {a.silence_inserted / rate:.2f} s silence inserted, "
                f"{(a.samples_stretched + a.samples_squeezed) / rate * 1000:.0f} ms stretched, "
                f"{a.samples_dropped / rate * 1000:.0f} ms dropped{_lag(a.lag)}"
            )
        for o in self.outputs:
            parts.append(f"{o.name}: {o.video_frames} frames, {(o.video_bytes + o.audio_bytes) / 1e6:.2f} MB")
        return "quality: " + "; ".join(parts) if parts else ""


def _lag(lag: LagRange | None) -> str:
    """The lag corrections' range for the summary (nothing when none was applied)."""
    if lag is None or lag.min == lag.max == 0:
        return ""
    return f", lag {lag.min * 1000:.0f} to {lag.max * 1000:.0f} ms"


def _sizes(v: VideoQuality) -> str:
    """The sizes an input changed between, for the summary (nothing when it kept one)."""
    if v.size_changes < 2:
        return ""
    at = [f" at {s.from_s:.2f} s" if s.from_s else "" for s in v.sizes]
    sizes = ", ".join(f"{s.width}x{s.height}{when}" for s, when in zip(v.sizes, at, strict=True))
    more = f" and {v.size_changes - len(v.sizes)} more" if v.size_changes > len(v.sizes) else ""
    return f", sizes {sizes}{more}"


def video_quality(name: str, vi: VideoInput[Any], lag: LagRange | None = None) -> VideoQuality:
    """The report of one video input."""
    first = vi.sizes[0][0] if vi.sizes else 0.0
    sizes = [PictureSize(w, h, round(came - first, 3)) for came, w, h in vi.sizes]
    return VideoQuality(name, vi.frames_in, vi.repeats, vi.frames_skipped, round(vi.longest_freeze, 3), lag,
                        sizes, vi.size_changes)  # fmt: skip


def audio_quality(name: str, ai: AudioInput, lag: LagRange | None = None) -> AudioQuality:
    """The report of one audio input."""
    return AudioQuality(name, ai.sample_rate, ai.samples_in, ai.silence, ai.stretched, ai.squeezed,
                        ai.dropped, ai.reanchors, lag)  # fmt: skip


def with_details(details: str, report: QualityReport) -> str:
    """``details`` (the end reason stays first) with the report's summary appended."""
    summary = report.summary()
    if not summary:
        return details
    return f"{details}; {summary}" if details else summary


__all__ = [
    "AudioQuality",
    "LagRange",
    "OutputQuality",
    "PictureSize",
    "QualityReport",
    "VideoQuality",
    "audio_quality",
    "video_quality",
    "with_details",
]
