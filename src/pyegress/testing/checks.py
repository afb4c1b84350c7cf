"""Decode output files with PyAV and check what is in them (no ffprobe needed).

Everything here works on the signals made by :mod:`pyegress.testing.signals`: a moving
picture with white flashes at every marker and a quiet tone with loud beeps at the same
instants.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt

__all__ = [
    "AudioData",
    "AudioStreamInfo",
    "AvOffset",
    "MediaInfo",
    "VideoStreamInfo",
    "audio_samples",
    "audio_windows",
    "av_offset",
    "beep_onsets",
    "dominant_frequencies",
    "flash_onsets",
    "frame_at",
    "frame_timestamps",
    "luma_means",
    "mean_color",
    "moving_pairs",
    "picture_moves",
    "probe",
    "region_color",
    "tone_present",
]

PathLike = str | os.PathLike[str]
FloatArray = npt.NDArray[np.float64]
Box = tuple[int, int, int, int]


# ----------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class VideoStreamInfo:
    """Facts about the first video stream."""

    codec: str
    profile: str | None
    width: int
    height: int
    pix_fmt: str | None
    average_rate: float | None
    """The container's declared average frame rate (``stream.average_rate``)."""
    measured_fps: float | None
    """``(frame_count - 1) / (last_pts - first_pts)``, from the packets."""
    frame_count: int
    start_time: float | None
    duration: float
    """From the first frame's start to the last frame's end, in seconds."""


@dataclass(frozen=True)
class AudioStreamInfo:
    """Facts about the first audio stream."""

    codec: str
    profile: str | None
    sample_rate: int
    channels: int
    start_time: float | None
    duration: float
    packet_count: int


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` found in a file."""

    path: str
    format_name: str
    duration: float
    size: int
    """Bytes on disk."""
    bit_rate: int | None
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None

    def summary(self) -> str:
        """One line a person reads, e.g. ``8.0 s  1.9 MB  h264 1280x720@30 + aac 48 kHz``."""
        size = f"{self.size / 1e6:.1f} MB" if self.size >= 1e6 else f"{self.size / 1e3:.0f} kB"
        streams = []
        if self.video is not None:
            v = self.video
            fps = v.average_rate or v.measured_fps
            streams.append(f"{v.codec} {v.width}x{v.height}" + (f"@{fps:.0f}" if fps else ""))
        if self.audio is not None:
            streams.append(f"{self.audio.codec} {self.audio.sample_rate / 1000:g} kHz")
        return f"{self.duration:.1f} s  {size}  {' + '.join(streams) or 'no streams'}"


def _ftime(value: int | None, tb: Fraction | None) -> float | None:
    if value is None or tb is None:
        return None
    return float(value * tb)


def probe(path: PathLike) -> MediaInfo:
    """Describe a media file: container, and the first video and audio streams.

    Frame counts and durations come from demuxed packets (fast, no decoding).
    """
    with av.open(os.fspath(path)) as c:
        vs = c.streams.video[0] if c.streams.video else None
        as_ = c.streams.audio[0] if c.streams.audio else None
        wanted = [s for s in (vs, as_) if s is not None]
        v_pts: list[float] = []
        v_last_dur = 0.0
        a_start = math.inf
        a_end = -math.inf
        a_count = 0
        if wanted:
            for pkt in c.demux(*wanted):
                if pkt.pts is None or pkt.size == 0 or pkt.time_base is None:
                    continue
                t = float(pkt.pts * pkt.time_base)
                d = float(pkt.duration * pkt.time_base) if pkt.duration else 0.0
                if vs is not None and pkt.stream.index == vs.index:
                    v_pts.append(t)
                    v_last_dur = d
                else:
                    a_count += 1
                    a_start = min(a_start, t)
                    a_end = max(a_end, t + d)

        video: VideoStreamInfo | None = None
        if vs is not None:
            cc = vs.codec_context
            v_pts.sort()
            n = len(v_pts)
            span = v_pts[-1] - v_pts[0] if n > 1 else 0.0
            measured = (n - 1) / span if span > 0 else None
            avg = float(vs.average_rate) if vs.average_rate else None
            frame_dur = v_last_dur or (1.0 / measured if measured else (1.0 / avg if avg else 0.0))
            video = VideoStreamInfo(
                codec=cc.name,
                profile=cc.profile,
                width=cc.width,
                height=cc.height,
                pix_fmt=cc.pix_fmt,
                average_rate=avg,
                measured_fps=measured,
                frame_count=n,
                start_time=v_pts[0] if n else _ftime(vs.start_time, vs.time_base),
                duration=span + frame_dur if n else 0.0,
            )
        audio: AudioStreamInfo | None = None
        if as_ is not None:
            acc = as_.codec_context
            audio = AudioStreamInfo(
                codec=acc.name,
                profile=acc.profile,
                sample_rate=acc.sample_rate,
                channels=acc.layout.nb_channels,
                start_time=a_start if a_count else _ftime(as_.start_time, as_.time_base),
                duration=max(a_end - a_start, 0.0) if a_count else 0.0,
                packet_count=a_count,
            )

        if c.duration is not None:
            duration = c.duration / av.time_base
        else:
            duration = max([s.duration for s in (video, audio) if s is not None], default=0.0)
        return MediaInfo(
            path=os.fspath(path),
            format_name=c.format.name,
            duration=float(duration),
            size=os.path.getsize(path),
            bit_rate=c.bit_rate or None,
            video=video,
            audio=audio,
        )


# ----------------------------------------------------------------------------- video
def _iter_video(path: PathLike) -> Iterator[av.VideoFrame]:
    with av.open(os.fspath(path)) as c:
        if not c.streams.video:
            raise ValueError(f"{path}: no video stream")
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        yield from c.decode(s)


def _luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane (height x width) of a decoded frame, without colour conversion if possible."""
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12", "gray"):
        plane = frame.planes[0]
        buf = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        arr: npt.NDArray[np.uint8] = buf[: frame.height, : frame.width]
        return arr
    return np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)


def frame_timestamps(path: PathLike) -> list[float]:
    """Presentation times (seconds) of every decoded video frame, in decode output order."""
    return [float(f.time) for f in _iter_video(path) if f.time is not None]


def luma_means(path: PathLike) -> tuple[FloatArray, FloatArray]:
    """``(times, mean_luma)`` for every decoded video frame."""
    times: list[float] = []
    means: list[float] = []
    for f in _iter_video(path):
        if f.time is None:
            continue
        times.append(float(f.time))
        means.append(float(_luma(f).mean()))
    return np.asarray(times, np.float64), np.asarray(means, np.float64)


def _flash_mask(means: FloatArray, min_jump: float = 40.0) -> npt.NDArray[np.bool_]:
    if means.size == 0:
        return np.zeros(0, dtype=bool)
    base = float(np.median(means))
    peak = float(means.max())
    if peak - base < min_jump:
        return np.zeros(means.shape, dtype=bool)
    mask: npt.NDArray[np.bool_] = means > (base + peak) / 2.0
    return mask


def flash_onsets(path: PathLike) -> list[float]:
    """Times of the first frame of every white flash (a flash already on at frame 0 is ignored)."""
    times, means = luma_means(path)
    mask = _flash_mask(means)
    if mask.size < 2:
        return []
    idx = np.flatnonzero(mask[1:] & ~mask[:-1]) + 1
    return [float(times[i]) for i in idx]


def _changed(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16], threshold: int) -> float:
    """The fraction of pixels that differ by more than ``threshold``."""
    return float(np.count_nonzero(np.abs(a - b) > threshold)) / a.size


def picture_moves(
    path: PathLike,
    *,
    min_changed_fraction: float = 0.02,
    pixel_threshold: int = 10,
    min_moving_pairs: float = 0.5,
    max_frames: int = 600,
    from_first_motion: bool = False,
    after: float = 0.0,
) -> bool:
    """True if the picture is animated: at least ``min_moving_pairs`` of the pairs move
    (:func:`moving_pairs`; duplicated frames from a frame-rate conversion are tolerated that way)."""
    share = moving_pairs(
        path,
        min_changed_fraction=min_changed_fraction,
        pixel_threshold=pixel_threshold,
        max_frames=max_frames,
        from_first_motion=from_first_motion,
        after=after,
    )
    return share is not None and share >= min_moving_pairs


def moving_pairs(
    path: PathLike,
    *,
    min_changed_fraction: float = 0.02,
    pixel_threshold: int = 10,
    max_frames: int = 600,
    from_first_motion: bool = False,
    after: float = 0.0,
) -> float | None:
    """The share of consecutive frames that differ, None when there is no pair to compare.

    Consecutive non-flash frames are compared (luma, subsampled 2x); a pair "moves" when
    more than ``min_changed_fraction`` of pixels differ by more than ``pixel_threshold``.
    ``from_first_motion`` counts pairs from the first that moves on: a recording shows black
    (or a placeholder) until the sender's first frame comes, for however long that takes.
    ``after``: only frames from that many seconds on (a page's start-up, say, when its playout
    is measured elsewhere).
    """
    lumas: list[npt.NDArray[np.int16]] = []
    means: list[float] = []
    for f in _iter_video(path):
        if len(lumas) >= max_frames:
            break
        if f.time is not None and f.time < after:
            continue
        y = _luma(f)[::2, ::2].astype(np.int16)
        lumas.append(y)
        means.append(float(y.mean()))
    if from_first_motion:  # from the first frame that differs from the one before
        first = next(
            (
                i
                for i in range(1, len(lumas))
                if _changed(lumas[i], lumas[i - 1], pixel_threshold) >= min_changed_fraction
            ),
            len(lumas),
        )
        lumas, means = lumas[first:], means[first:]
    if len(lumas) < 2:
        return None
    flash = _flash_mask(np.asarray(means, np.float64))
    moving = 0
    pairs = 0
    for i in range(1, len(lumas)):
        if flash[i] or flash[i - 1] or lumas[i].shape != lumas[i - 1].shape:
            continue
        pairs += 1
        if _changed(lumas[i], lumas[i - 1], pixel_threshold) >= min_changed_fraction:
            moving += 1
    return moving / pairs if pairs else None


def frame_at(path: PathLike, t: float) -> av.VideoFrame:
    """The video frame being displayed at time ``t`` (last frame with pts <= t)."""
    with av.open(os.fspath(path)) as c:
        if not c.streams.video:
            raise ValueError(f"{path}: no video stream")
        s = c.streams.video[0]
        if s.time_base is not None and t > 1.0:
            c.seek(int((t - 1.0) / s.time_base), stream=s, backward=True, any_frame=False)
        chosen: av.VideoFrame | None = None
        for f in c.decode(s):
            if f.time is None:
                continue
            if chosen is not None and f.time > t + 1e-6:
                break
            chosen = f
            if f.time > t + 1e-6:
                break  # t is before the first frame: take the first one
        if chosen is None:
            raise ValueError(f"{path}: no frame at t={t}")
        return chosen


def mean_color(frame: av.VideoFrame | npt.NDArray[Any], box: Box | None = None) -> tuple[int, int, int]:
    """Mean RGB of ``box = (x0, y0, x1, y1)`` (exclusive end) of a frame or an HxWx3 array."""
    rgb = frame.to_ndarray(format="rgb24") if isinstance(frame, av.VideoFrame) else frame
    if box is not None:
        x0, y0, x1, y1 = box
        rgb = rgb[y0:y1, x0:x1]
    if rgb.size == 0:
        raise ValueError(f"empty region {box}")
    m = rgb.reshape(-1, rgb.shape[-1])[:, :3].mean(axis=0)
    return (round(float(m[0])), round(float(m[1])), round(float(m[2])))


def region_color(path: PathLike, t: float, box: Box | None = None) -> tuple[int, int, int]:
    """Mean RGB of a region of the frame shown at time ``t`` (whole frame if ``box`` is None)."""
    return mean_color(frame_at(path, t), box)


# ----------------------------------------------------------------------------- audio
@dataclass(frozen=True)
class AudioData:
    """Decoded mono audio: ``samples[i]`` is at ``start + i / sample_rate`` seconds."""

    samples: npt.NDArray[np.float32]
    sample_rate: int
    start: float


def _to_float(arr: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    if arr.dtype == np.int16:
        return (arr / 32768.0).astype(np.float32)
    if arr.dtype == np.int32:
        return (arr / 2147483648.0).astype(np.float32)
    if arr.dtype == np.uint8:
        return ((arr.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    return arr.astype(np.float32)


def _audio_frames(path: PathLike, stream: int = 0) -> Iterator[tuple[float, npt.NDArray[np.float32], int]]:
    """``(time, mono samples, sample rate)`` of each decoded frame of audio stream ``stream``."""
    with av.open(os.fspath(path)) as c:
        if len(c.streams.audio) <= stream:
            raise ValueError(f"{path}: no audio stream {stream}")
        s = c.streams.audio[stream]
        next_t: float | None = None
        for f in c.decode(s):
            sr = f.sample_rate
            arr = f.to_ndarray()
            ch = f.layout.nb_channels
            if f.format.is_planar:
                mono = _to_float(arr).mean(axis=0)
            else:
                mono = _to_float(arr.reshape(-1, ch)).mean(axis=1)
            t = float(f.time) if f.time is not None else (next_t or 0.0)
            yield t, mono.astype(np.float32), sr
            next_t = t + mono.size / sr


def _assemble(chunks: list[tuple[float, npt.NDArray[np.float32]]], sr: int) -> AudioData:
    """One signal of ``chunks``, each placed at its time (gaps = 0)."""
    start = chunks[0][0]
    offsets = [round((t - start) * sr) for t, _ in chunks]
    total = max(o + a.size for o, (_, a) in zip(offsets, chunks, strict=True))
    out = np.zeros(max(total, 0), np.float32)
    for o, (_, a) in zip(offsets, chunks, strict=True):
        if o < 0:
            a, o = a[-o:], 0
        out[o : o + a.size] = a
    return AudioData(out, sr, start)


def audio_samples(path: PathLike, stream: int = 0) -> AudioData:
    """Decode audio stream ``stream`` (the first by default) to mono float32, each frame placed
    at its pts (gaps = 0)."""
    chunks: list[tuple[float, npt.NDArray[np.float32]]] = []
    sr = 0
    for t, mono, rate in _audio_frames(path, stream):
        chunks.append((t, mono))
        sr = rate
    if not chunks:
        return AudioData(np.zeros(0, np.float32), sr or 48000, 0.0)
    return _assemble(chunks, sr)


def audio_windows(
    path: PathLike, seconds: float = 60.0, overlap: float = 1.0
) -> Iterator[tuple[float, float, AudioData]]:
    """The first audio stream in windows, so that an hour of audio never sits in memory at once.

    Yields ``(lo, hi, data)``: ``data`` covers ``[lo - overlap, hi + overlap]`` (what the file
    has of it), and the ranges ``[lo, hi)`` follow each other without gap (the first ``lo`` is
    ``-inf``, the last ``hi`` ``inf``). A file shorter than ``seconds + overlap`` is one window,
    the same signal as :func:`audio_samples`.
    """
    buf: list[tuple[float, npt.NDArray[np.float32]]] = []
    sr = 0
    lo: float | None = None  # where the current window's range starts
    shown = -math.inf  # what the caller is told for it (-inf for the first)
    for t, mono, sr in _audio_frames(path):
        lo = t if lo is None else lo
        buf.append((t, mono))
        while t + mono.size / sr >= lo + seconds + overlap:
            hi = lo + seconds
            yield shown, hi, _assemble([c for c in buf if c[0] < hi + overlap], sr)
            lo = shown = hi
            buf = [c for c in buf if c[0] + c[1].size / sr > lo - overlap]
    if buf:
        yield shown, math.inf, _assemble(buf, sr)


def _band_envelope(x: npt.NDArray[np.float32], sr: int, hz: float, window: int) -> FloatArray:
    """Amplitude of the ``hz`` component over a trailing window of ``window`` samples."""
    n = np.arange(x.size, dtype=np.float64)
    z = x.astype(np.complex64) * np.exp(-2j * np.pi * hz / sr * n).astype(np.complex64)
    c = np.concatenate([np.zeros(1, np.complex128), np.cumsum(z, dtype=np.complex128)])
    env = np.zeros(x.size, np.float64)
    if x.size >= window:
        env[window - 1 :] = 2.0 * np.abs(c[window:] - c[:-window]) / window
    return env


def beep_onsets(
    path: PathLike | AudioData,
    hz: float = 1000.0,
    *,
    window_s: float = 0.005,
    min_gap: float = 0.3,
) -> list[float]:
    """Onset times (seconds) of loud tone bursts at ``hz``.

    The band amplitude at ``hz`` is measured over a sliding ``window_s`` window; each burst's
    onset is where its envelope reaches half of that burst's plateau, minus half a window. A file
    is read in windows of a minute (:func:`audio_windows`), so hours of audio fit in memory.
    """
    if isinstance(path, AudioData):
        return _beep_onsets(path, hz, window_s, min_gap)
    onsets: list[float] = []
    for lo, hi, data in audio_windows(path):
        for t in _beep_onsets(data, hz, window_s, min_gap):
            if lo <= t < hi and t - (onsets[-1] if onsets else -math.inf) >= min_gap:
                onsets.append(t)
    return onsets


def _beep_onsets(data: AudioData, hz: float, window_s: float, min_gap: float) -> list[float]:
    x, sr = data.samples, data.sample_rate
    w = max(round(window_s * sr), 8)
    if x.size < 4 * w:
        return []
    env = _band_envelope(x, sr, hz, w)
    peak = float(np.percentile(env, 99.9))
    floor = float(np.median(env))
    if peak < 0.02 or peak < 4.0 * floor:
        return []
    above = env > 0.5 * peak
    edges = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    plateau_len = max(int(0.08 * sr), w)
    onsets: list[float] = []
    last = -math.inf
    for i in edges:
        if i < w:  # burst cut by the start of the file
            continue
        lo = max(int(i) - 2 * w, 0)
        plateau = float(env[i : i + plateau_len].max())
        # up to the plateau: a burst louder than the file's peak crosses half of it after i
        seg = env[lo : i + plateau_len]
        j = lo + int(np.argmax(seg >= 0.5 * plateau))
        t = data.start + (j - w / 2.0) / sr
        if t - last >= min_gap:
            onsets.append(t)
            last = t
    return onsets


@dataclass(frozen=True)
class AvOffset:
    """Result of :func:`av_offset`; positive offsets mean audio is later than video."""

    offsets: list[float]
    median: float
    flash_times: list[float]
    beep_times: list[float]
    paired_flashes: list[float]
    """The flash of each offset (``offsets[i]`` is the beep's time minus ``paired_flashes[i]``)."""

    @property
    def count(self) -> int:
        """Number of flash/beep pairs."""
        return len(self.offsets)

    @property
    def spread(self) -> float:
        """max - min of the per-marker offsets."""
        return max(self.offsets) - min(self.offsets) if self.offsets else 0.0


def av_offset(
    path: PathLike,
    marker_interval: float = 1.0,
    *,
    beep_hz: float = 1000.0,
    max_offset: float | None = None,
) -> AvOffset:
    """Measure audio-vs-video offset from the flash/beep markers.

    Each flash onset is paired with the nearest beep onset within ``max_offset`` (default
    0.4 * marker_interval). Raises ``ValueError`` if no pair is found.
    """
    limit = 0.4 * marker_interval if max_offset is None else max_offset
    flashes = flash_onsets(path)
    beeps = beep_onsets(path, beep_hz, min_gap=0.3 * marker_interval)
    offsets: list[float] = []
    paired: list[float] = []
    if beeps:
        b = np.asarray(beeps)
        for f in flashes:
            k = int(np.argmin(np.abs(b - f)))
            d = float(b[k] - f)
            if abs(d) <= limit:
                offsets.append(d)
                paired.append(f)
    if not offsets:
        raise ValueError(f"{path}: no flash/beep pairs (flashes={flashes[:10]}, beeps={beeps[:10]})")
    return AvOffset(offsets, float(np.median(offsets)), flashes, beeps, paired)


def _spectrum(
    path: PathLike | AudioData, start: float | None, end: float | None, nfft: int = 8192
) -> tuple[FloatArray, FloatArray]:
    data = path if isinstance(path, AudioData) else audio_samples(path)
    x, sr = data.samples, data.sample_rate
    i0 = 0 if start is None else max(int((start - data.start) * sr), 0)
    i1 = x.size if end is None else max(int((end - data.start) * sr), i0)
    x = x[i0:i1].astype(np.float64)
    freqs = np.asarray(np.fft.rfftfreq(nfft, 1.0 / sr), np.float64)
    if x.size < nfft:
        x = np.pad(x, (0, nfft - x.size))
    hop = nfft // 2
    nseg = 1 + (x.size - nfft) // hop
    idx = np.arange(nfft)[None, :] + hop * np.arange(nseg)[:, None]
    segs = x[idx] * np.hanning(nfft)[None, :]
    power = np.asarray((np.abs(np.fft.rfft(segs, axis=1)) ** 2).mean(axis=0), np.float64)
    return freqs, power


def dominant_frequencies(
    path: PathLike | AudioData,
    count: int = 3,
    *,
    start: float | None = None,
    end: float | None = None,
    min_separation_hz: float = 30.0,
) -> list[float]:
    """The ``count`` strongest spectral peaks (Hz), strongest first."""
    freqs, power = _spectrum(path, start, end)
    if not np.any(power > 0):
        return []
    is_peak = np.zeros(power.shape, dtype=bool)
    is_peak[1:-1] = (power[1:-1] >= power[:-2]) & (power[1:-1] > power[2:])
    order = np.flatnonzero(is_peak)[np.argsort(power[is_peak])[::-1]]
    out: list[float] = []
    for i in order:
        f = float(freqs[i])
        if all(abs(f - o) >= min_separation_hz for o in out):
            out.append(f)
            if len(out) >= count:
                break
    return out


def tone_present(
    path: PathLike | AudioData,
    hz: float,
    *,
    tolerance_hz: float = 15.0,
    min_relative_db: float = -30.0,
    min_snr_db: float = 20.0,
    start: float | None = None,
    end: float | None = None,
) -> bool:
    """True if a tone at ``hz`` is clearly present.

    Its peak must be within ``min_relative_db`` of the strongest peak and ``min_snr_db``
    above the median spectral level.
    """
    freqs, power = _spectrum(path, start, end)
    top = float(power.max()) if power.size else 0.0
    if top <= 0:
        return False
    band = np.abs(freqs - hz) <= tolerance_hz
    if not np.any(band):
        return False
    level = float(power[band].max())
    noise = max(float(np.median(power)), top * 1e-12)
    return bool(10 * np.log10(level / top) >= min_relative_db and 10 * np.log10(level / noise) >= min_snr_db)
