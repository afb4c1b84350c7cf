"""Layout geometry, tile drawing and the audio mixer, without a server."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pyegress.errors import InvalidRequestError
from pyegress.media.compositor import fit_tile
from pyegress.media.frames import planes
from pyegress.media.layout import Rect, grid, grid_shape, parse_layout, speaker
from pyegress.media.mixer import Mixer, Mixing, SpeakerTracker


def _overlap(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def _inside(r: Rect, w: int, h: int) -> bool:
    return r.x >= 0 and r.y >= 0 and r.x + r.w <= w and r.y + r.h <= h and r.w > 0 and r.h > 0


def test_layout_names() -> None:
    assert parse_layout("").name == "speaker"
    assert parse_layout("grid-light").light and parse_layout("grid-light").kind == "grid"
    assert parse_layout("single-speaker-dark").name == "single-speaker"
    with pytest.raises(InvalidRequestError, match="layout"):
        parse_layout("mosaic")


@pytest.mark.parametrize(("w", "h"), [(1280, 720), (1920, 1080), (720, 1280)])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9, 16])
def test_grid_cells_fit_and_never_overlap(n: int, w: int, h: int) -> None:
    cells = grid(n, w, h)
    assert len(cells) == n
    assert all(_inside(c, w, h) for c in cells)
    assert all(c.x % 2 == 0 and c.y % 2 == 0 and c.w % 2 == 0 and c.h % 2 == 0 for c in cells)
    assert not any(_overlap(a, b) for a, b in itertools.combinations(cells, 2))
    cols, rows = grid_shape(n, w, h)
    assert cols * rows >= n and (cols - 1) * rows < n  # balanced: no empty column


def test_grid_prefers_side_by_side_on_landscape() -> None:
    assert grid_shape(2, 1280, 720) == (2, 1)
    assert grid_shape(2, 720, 1280) == (1, 2)
    assert grid_shape(4, 1280, 720) == (2, 2)


@pytest.mark.parametrize(("w", "h"), [(1280, 720), (720, 1280)])
@pytest.mark.parametrize("others", [0, 1, 3, 8])
def test_speaker_main_area_and_strip(others: int, w: int, h: int) -> None:
    main, strip = speaker(others, w, h)
    assert len(strip) == others and _inside(main, w, h)
    assert all(_inside(r, w, h) and not _overlap(r, main) for r in strip)
    assert main.w * main.h >= 0.6 * w * h


def test_mixer_dual_channel_alternate_and_limiter() -> None:
    m = Mixer(48000, 2, 0.0, Mixing.DUAL_CHANNEL_ALTERNATE)
    loud = np.full((4800, 2), 30000, np.int16)
    for name in ("a", "b", "c"):
        m.voice(name).push(loud, 0.1)
    out = m.read(0, 4800)
    assert out.dtype == np.int16 and np.abs(out.astype(np.int32)).max() <= 30000  # limited, not clipped
    assert out[-1, 0] > 0 and out[-1, 1] > 0  # a, c on the left; b on the right
    quiet = Mixer(48000, 2, 0.0)
    quiet.voice("a").push(np.full((480, 2), 100, np.int16), 0.01)
    assert quiet.read(0, 480)[0, 0] == 100  # below the ceiling: untouched


def test_speaker_tracker_has_hysteresis() -> None:
    t = SpeakerTracker(hold=1.0)
    assert t.update({"a": 3000.0, "b": 100.0}, 0.0) == "a"
    # b louder for only half a second: no switch (no flicker)
    for i in range(5):
        assert t.update({"a": 100.0, "b": 5000.0}, 0.1 * (i + 1)) == "a"
    for i in range(15):
        t.update({"a": 50.0, "b": 5000.0}, 0.6 + 0.1 * i)
    assert t.current == "b"


def _ramp_frame(w: int, h: int) -> np.ndarray:
    """A yuv420p picture whose luma encodes the column (x % 200 + 20), chroma flat."""
    arr = np.full((h * 3 // 2, w), 128, np.uint8)
    arr[:h] = (np.arange(w) % 200 + 20).astype(np.uint8)[None, :]
    return arr


def _frame(arr: np.ndarray) -> object:
    import av

    return av.VideoFrame.from_ndarray(arr, format="yuv420p")


def test_slightly_larger_camera_is_cropped_not_scaled() -> None:
    """A 640x360 camera in a 628x348 cell: the exact centre, pixel for pixel (no resampling)."""
    src = _ramp_frame(640, 360)
    tile = fit_tile(_frame(src), 628, 348, cover=True)
    y, _, _ = planes(tile, 628, 348)
    assert np.array_equal(y, src[6 : 6 + 348, 6 : 6 + 628])


def test_smaller_or_much_larger_camera_is_scaled_to_fill() -> None:
    """Outside the crop slack the frame is scaled to fill the cell, its aspect kept."""
    for w, h in ((320, 180), (1280, 720)):
        src = np.full((h * 3 // 2, w), 128, np.uint8)
        src[:h] = 16
        side = h // 2
        src[h // 4 : h // 4 + side, (w - side) // 2 : (w + side) // 2] = 235  # a centred square
        tile = fit_tile(_frame(src), 628, 348, cover=True)
        y, _, _ = planes(tile, 628, 348)
        rows, cols = np.nonzero(y > 128)
        sq_h, sq_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        expected = side * max(628 / w, 348 / h)  # cover: the larger of the two scales
        assert abs(sq_h - expected) <= 3 and abs(sq_w - expected) <= 3, (w, sq_w, sq_h, expected)
        assert abs((cols.min() + cols.max()) / 2 - 314) <= 2 and abs((rows.min() + rows.max()) / 2 - 174) <= 2


def test_slightly_larger_screen_share_is_scaled_not_cropped() -> None:
    """Screen shares are letterboxed: every column stays visible, so no cropping even when close."""
    src = _ramp_frame(640, 360)
    src[:360, 0:4] = 235  # a white edge on the left that cropping would cut off
    tile = fit_tile(_frame(src), 628, 348, cover=False)
    y, _, _ = planes(tile, 628, 348)
    assert y[:, :12].max() > 200


def test_simulcast_layer_fits_the_tile() -> None:
    """The smallest of LiveKit's layers (full, half, quarter) that fills the tile; off screen: smallest."""
    from livekit import rtc

    from pyegress.recorders.room_composite import simulcast_layer

    q = rtc.VideoQuality
    assert simulcast_layer(1280, 720, (240, 136)) == q.VIDEO_QUALITY_LOW
    assert simulcast_layer(1280, 720, (628, 348)) == q.VIDEO_QUALITY_MEDIUM
    assert simulcast_layer(1280, 720, (628, 704)) == q.VIDEO_QUALITY_HIGH  # tall cell: height decides
    assert simulcast_layer(1280, 720, (1016, 720)) == q.VIDEO_QUALITY_HIGH
    assert simulcast_layer(1280, 720, None) == q.VIDEO_QUALITY_LOW
    assert simulcast_layer(0, 0, (100, 100)) == q.VIDEO_QUALITY_HIGH  # size unknown: do not guess
