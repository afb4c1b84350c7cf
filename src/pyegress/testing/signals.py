"""Pure, deterministic generators for the synthetic test signals.

Both :class:`~pyegress.testing.publisher.SyntheticPublisher` and the tests that
encode reference files with PyAV use these, so the picture and the sound are the
same everywhere.

Markers: at every ``t = n * marker_interval`` (``n >= 1``) the picture is a full
white frame for :data:`MARKER_DURATION` seconds and the audio is a loud beep at
``beep_hz`` for the same time; otherwise the audio is a quiet continuous tone.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "BEEP_AMPLITUDE",
    "MARKER_DURATION",
    "PATTERN_SPEED",
    "TONE_AMPLITUDE",
    "PatternGenerator",
    "ToneGenerator",
    "in_marker",
    "rgb_to_yuv",
]

MARKER_DURATION = 0.1
"""Length of a flash / beep in seconds."""
TONE_AMPLITUDE = 0.05
"""Amplitude (fraction of full scale) of the continuous background tone."""
BEEP_AMPLITUDE = 0.6
"""Amplitude (fraction of full scale) of the marker beep."""

_WHITE_Y = 235  # limited-range (BT.601) white
PATTERN_SPEED = 120.0
"""How far the test pattern moves, in pixels per second (4 px per frame at 30 fps)."""


def in_marker(t: float, interval: float) -> bool:
    """True if wall-clock offset ``t`` (seconds since start) falls inside a marker."""
    if interval <= 0 or t < interval - 1e-9:
        return False
    phase = t - math.floor(t / interval + 1e-9) * interval
    return phase < MARKER_DURATION - 1e-9


def rgb_to_yuv(rgb: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Convert RGB (0..255, last axis = 3) to limited-range BT.601 Y, U, V floats."""
    a = np.asarray(rgb, dtype=np.float64) / 255.0
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b
    return np.stack([y, u, v], axis=-1)


class PatternGenerator:
    """Generates I420 frames: a moving test pattern (or a solid colour) plus marker flashes.

    Frames are returned as a ``(height * 3 // 2, width)`` ``uint8`` array laid out as
    contiguous Y, U, V planes: exactly the I420 buffer LiveKit expects and the
    ``yuv420p`` ndarray layout PyAV's ``VideoFrame.from_ndarray`` accepts.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 30.0,
        *,
        color: tuple[int, int, int] | None = None,
        marker_interval: float = 1.0,
    ) -> None:
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError("width and height must be positive and even")
        self.width = width
        self.height = height
        self.fps = float(fps)
        self.color = color
        self.marker_interval = marker_interval
        cw, ch = width // 2, height // 2

        if color is not None:
            y, u, v = (round(c) for c in rgb_to_yuv(color))
            self._y = np.full((height, width), y, np.uint8)
            self._u = np.full((ch, cw), u, np.uint8)
            self._v = np.full((ch, cw), v, np.uint8)
        else:
            # Eight muted colour bars, plus a luma ripple so that a shift changes most pixels.
            bars = np.array(
                [
                    [150, 150, 150],
                    [150, 150, 40],
                    [40, 150, 150],
                    [40, 150, 40],
                    [150, 40, 150],
                    [150, 40, 40],
                    [40, 40, 150],
                    [30, 30, 30],
                ],
                dtype=np.float64,
            )
            xs = np.arange(width)
            rgb_row = bars[(xs * len(bars)) // width]  # (width, 3)
            yuv_row = rgb_to_yuv(rgb_row)
            ripple = 25.0 * np.sin(2.0 * np.pi * xs / 48.0)
            vgrad = np.linspace(-20.0, 20.0, height)[:, None]
            y_img = yuv_row[None, :, 0] + ripple[None, :] + vgrad
            self._y = np.clip(np.rint(y_img), 16, 235).astype(np.uint8)
            uv = yuv_row[0::2]  # (cw, 3)
            self._u = np.repeat(np.rint(uv[None, :, 1]), ch, axis=0).astype(np.uint8)
            self._v = np.repeat(np.rint(uv[None, :, 2]), ch, axis=0).astype(np.uint8)

        self._flash = np.empty((height * 3 // 2, width), np.uint8)
        self._flash[:height] = _WHITE_Y
        self._flash[height:] = 128
        self._static: npt.NDArray[np.uint8] | None = None
        if color is not None:
            self._static = self._pack(self._y, self._u, self._v)

    def _pack(
        self,
        y: npt.NDArray[np.uint8],
        u: npt.NDArray[np.uint8],
        v: npt.NDArray[np.uint8],
    ) -> npt.NDArray[np.uint8]:
        out = np.empty((self.height * 3 // 2, self.width), np.uint8)
        out[: self.height] = y
        chroma = out[self.height :].reshape(-1)
        n = u.size
        chroma[:n] = u.reshape(-1)
        chroma[n:] = v.reshape(-1)
        return out

    def is_flash(self, t: float) -> bool:
        """True if the picture at ``t`` seconds is a marker flash."""
        return in_marker(t, self.marker_interval)

    def frame_at(self, t: float) -> npt.NDArray[np.uint8]:
        """The I420 picture shown ``t`` seconds after the start."""
        if self.is_flash(t):
            return np.copy(self._flash)
        if self._static is not None:
            return np.copy(self._static)
        # even, so chroma stays aligned; the epsilon keeps k / fps * speed on its integer (float
        # rounding made 4 of 300 frames at 30 fps step 2 or 6 px instead of 4)
        shift = 2 * (int(t * PATTERN_SPEED + 1e-6) // 2)
        return self._pack(
            np.roll(self._y, shift, axis=1),
            np.roll(self._u, shift // 2, axis=1),
            np.roll(self._v, shift // 2, axis=1),
        )

    def frame(self, k: int) -> npt.NDArray[np.uint8]:
        """Frame number ``k`` of a constant-frame-rate sequence (time ``k / fps``)."""
        return self.frame_at(k / self.fps)


class ToneGenerator:
    """Generates mono int16 audio: a quiet continuous tone plus loud marker beeps."""

    def __init__(
        self,
        sample_rate: int = 48000,
        *,
        tone_hz: float = 440.0,
        beep_hz: float = 1000.0,
        marker_interval: float = 1.0,
        tone_amplitude: float = TONE_AMPLITUDE,
        beep_amplitude: float = BEEP_AMPLITUDE,
    ) -> None:
        self.sample_rate = sample_rate
        self.tone_hz = tone_hz
        self.beep_hz = beep_hz
        self.marker_interval = marker_interval
        self.tone_amplitude = tone_amplitude
        self.beep_amplitude = beep_amplitude

    def samples(self, n0: int, count: int) -> npt.NDArray[np.int16]:
        """Samples ``n0 .. n0 + count - 1``; sample ``n`` belongs to time ``n / sample_rate``."""
        n = np.arange(n0, n0 + count, dtype=np.int64)
        t = n.astype(np.float64) / self.sample_rate
        if self.marker_interval > 0:
            # Integer sample arithmetic so marker edges are exact.
            period = round(self.marker_interval * self.sample_rate)
            length = round(MARKER_DURATION * self.sample_rate)
            beep = (n >= period) & ((n % period) < length)
        else:
            beep = np.zeros(count, dtype=bool)
        tone = self.tone_amplitude * np.sin(2.0 * np.pi * self.tone_hz * t)
        loud = self.beep_amplitude * np.sin(2.0 * np.pi * self.beep_hz * t)
        out = np.where(beep, loud, tone)
        return np.rint(out * 32767.0).astype(np.int16)
