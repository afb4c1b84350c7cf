"""Motion cadence of a recording of the synthetic publisher's moving pattern.

The publisher's pattern moves :data:`~pyegress.testing.signals.PATTERN_SPEED` pixels to the
right per second of its own clock, so the horizontal shift between two output frames says how
many source frames apart they are. With an output rate ``r`` times the source's (1 when equal,
2 for 15 fps recorded at 30), a smooth recording shows each source frame on exactly ``r``
consecutive output frames; a repeat (a frame held longer) or a skip (a source frame never
shown) is judder the viewer sees. :func:`cadence` counts them.

How: each output frame is reduced to its column-mean luma profile inside ``box`` (rows
averaged, which also cancels the pattern's vertical gradient); the shift between consecutive
frames is the one under which their overlapping parts differ least. White marker flashes carry no pattern:
pairs that touch one are not judged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt

from .signals import PATTERN_SPEED

__all__ = ["Cadence", "cadence", "frame_shifts"]

Box = tuple[int, int, int, int]  # x, y, width, height in output pixels
FloatArray = npt.NDArray[np.float64]

#: A profile flatter than this (luma standard deviation) is a flash or a blank canvas.
_FLAT = 4.0


@dataclass(frozen=True)
class Cadence:
    """How evenly a recording advances through the source's frames.

    ``judged`` output frames were compared with the one before; ``exact`` of them advanced as
    the rates say (the next source frame, or the same one while it is due to be held);
    ``repeats`` held a source frame longer than due; ``skips`` counts source frames never
    shown; ``early`` left a source frame sooner than due (only when the output rate is a
    multiple of the source's); ``back`` went backwards. ``advances`` lists each judged frame's
    step in source frames, for a closer look.
    """

    judged: int
    exact: int
    repeats: int
    skips: int
    early: int
    back: int
    ratio: int
    advances: list[int] = field(repr=False)

    @property
    def share(self) -> float:
        """The fraction of judged output frames that advanced as due (1.0 is perfect)."""
        return self.exact / self.judged if self.judged else 0.0

    def summary(self) -> str:
        """One line for assertion messages."""
        return (
            f"cadence {self.share:.1%} of {self.judged} frames (x{self.ratio}): "
            f"{self.repeats} repeats, {self.skips} skipped source frames, {self.early} early, "
            f"{self.back} backwards"
        )


def _profile(frame: av.VideoFrame, box: Box | None) -> FloatArray:
    y = frame.to_ndarray(format="gray").astype(np.float64)
    if box is not None:
        x0, y0, w, h = box
        y = y[y0 : y0 + h, x0 : x0 + w]
    profile: FloatArray = y.mean(axis=0)
    return profile


def _shift(a: FloatArray, b: FloatArray) -> int:
    """How many pixels to the right ``b``'s content lies relative to ``a``: the shift whose
    overlap differs least (a tile cropped from a larger picture is not periodic, so the
    correlation is taken over the overlap only, never wrapped)."""
    width = a.size
    best, best_err = 0, float("inf")
    for s in range(-(width // 3), width // 3 + 1):
        diff = b[s:] - a[: width - s] if s >= 0 else b[: width + s] - a[-s:]
        err = float(np.mean(diff * diff))
        if err < best_err:
            best, best_err = s, err
    return best


def frame_shifts(path: str | os.PathLike[str], box: Box | None = None) -> list[int | None]:
    """Per decoded frame, its pattern shift in pixels from the frame before (None for the
    first frame and for pairs that touch a flash or a blank picture)."""
    shifts: list[int | None] = []
    prev: FloatArray | None = None
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            profile = _profile(frame, box)
            if profile.std() < _FLAT:
                shifts.append(None)
                prev = None
                continue
            shifts.append(_shift(prev, profile) if prev is not None else None)
            prev = profile
    return shifts


def _output_fps(path: str | os.PathLike[str]) -> float:
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise ValueError(f"{path}: the video stream has no frame rate")
        return float(rate)


def cadence(
    path: str | os.PathLike[str],
    *,
    source_fps: float = 30.0,
    box: Box | None = None,
    source_width: int = 640,
    scale: float | None = None,
    skip_seconds: float = 0.0,
) -> Cadence:
    """Measure the cadence of a recording of :class:`~pyegress.testing.SyntheticPublisher`'s
    moving pattern (sent at ``source_fps``, ``source_width`` pixels wide) inside ``box`` of
    the output picture (default: all of it; a tile of a composite otherwise). ``scale`` is
    output pixels per source pixel (default: the box's width over ``source_width``; a camera
    tile cropped to fill its cell is scaled by the larger of its two ratios).
    ``skip_seconds`` leaves out the start (before the publisher's first frame arrived)."""
    out_fps = _output_fps(path)
    ratio = max(1, round(out_fps / source_fps))
    width = box[2] if box is not None else None
    shifts = frame_shifts(path, box)
    if width is None:
        with av.open(os.fspath(path)) as container:
            width = container.streams.video[0].codec_context.width
    if scale is None:
        scale = width / source_width
    step = PATTERN_SPEED / source_fps * scale  # output pixels per source frame
    first = round(skip_seconds * out_fps)
    exact = repeats = skips = early = back = 0
    advances: list[int] = []
    run = 0  # output frames showing the current source frame so far
    for k, shift in enumerate(shifts):
        if shift is None:
            run = 1  # the first frame after a flash (or of the file) starts a run afresh
            continue
        advance = round(shift / step)
        if k < first:
            run = 1 if advance else run + 1
            continue
        advances.append(advance)
        if advance == 0:
            run += 1
            if run > ratio:
                repeats += 1
            else:
                exact += 1
        elif advance < 0:
            back += 1
            run = 1
        else:
            if advance > 1:
                skips += advance - 1
            elif run and run < ratio:
                early += 1
            else:
                exact += 1
            run = 1
    return Cadence(len(advances), exact, repeats, skips, early, back, ratio, advances)
