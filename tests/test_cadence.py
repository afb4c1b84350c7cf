"""``pyegress.testing.cadence`` on files encoded here with a known cadence (no server)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import pytest

from pyegress.testing import PatternGenerator, cadence


def _encode(
    path: Path,
    source_frames: Sequence[int],
    *,
    source_fps: float = 30,
    fps: int = 30,
    size: tuple[int, int] = (640, 360),
    marker_interval: float = 0.0,
) -> Path:
    """An H.264 file whose k-th frame shows source frame ``source_frames[k]`` of the pattern."""
    width, height = size  # the 640x360 pattern scaled to this, as a composite's tile is
    pattern = PatternGenerator(640, 360, source_fps, marker_interval=marker_interval)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        for k, n in enumerate(source_frames):
            frame = av.VideoFrame.from_ndarray(pattern.frame(n), format="yuv420p")
            frame = frame.reformat(width=width, height=height)
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_every_frame_once_is_perfect(tmp_path: Path) -> None:
    c = cadence(_encode(tmp_path / "a.mp4", range(90)))
    assert (c.judged, c.exact, c.share) == (89, 89, 1.0), c.summary()


def test_repeats_and_skips_are_counted(tmp_path: Path) -> None:
    frames = list(range(90))
    frames[10] = 9  # a repeat (source frame 10 never shown either: a repeat then a skip)
    frames[40:42] = [39, 39]  # held twice more, then 42 follows 39: frames 40, 41 skipped
    frames[70] = 71  # a skip then a repeat (71 twice)
    c = cadence(_encode(tmp_path / "b.mp4", frames))
    assert c.repeats == 4, c.summary()
    assert c.skips == 4, c.summary()
    assert c.judged - c.exact == 7, c.summary()


def test_half_rate_source_shows_each_frame_twice(tmp_path: Path) -> None:
    c = cadence(_encode(tmp_path / "c.mp4", [k // 2 for k in range(90)], source_fps=15), source_fps=15)
    assert c.ratio == 2 and c.share == 1.0, c.summary()
    uneven = [k // 2 for k in range(90)]
    uneven[20:23] = [10, 10, 10]  # source frame 10 three times, 11 once
    c = cadence(_encode(tmp_path / "d.mp4", uneven, source_fps=15), source_fps=15)
    assert (c.repeats, c.early) == (1, 1), c.summary()


def test_flashes_are_not_judged_and_a_tile_is_measured_in_its_box(tmp_path: Path) -> None:
    path = _encode(tmp_path / "e.mp4", range(120), marker_interval=1.0)
    c = cadence(path)
    assert c.share == 1.0 and c.judged < 119, c.summary()  # pairs touching the flashes left out
    half = _encode(tmp_path / "f.mp4", range(60), size=(320, 180))
    assert cadence(half, box=(0, 0, 320, 180)).share == 1.0


@pytest.mark.parametrize("fps", [30, 15])
def test_pattern_steps_evenly(fps: int) -> None:
    """The publisher's pattern moves the same number of pixels every frame (it is the ruler)."""
    pattern = PatternGenerator(640, 360, fps, marker_interval=0.0)
    first = pattern.frame(0)[0]
    shifts = set()
    for k in range(1, 300):
        row = pattern.frame(k)[0]
        shifts.add(next(s for s in range(640) if (row == __import__("numpy").roll(first, s)).all()))
        first = row
    assert shifts == {round(120 / fps)}
