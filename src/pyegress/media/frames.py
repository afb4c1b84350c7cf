"""Video frame conversion: SDK I420 buffers to PyAV frames fitted on a canvas, aspect kept."""

from __future__ import annotations

import threading

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from livekit import rtc

# Y, U, V of black in limited-range BT.601.
BLACK_YUV = (16, 128, 128)

#: Y, U and V planes of an I420 picture as 2-D uint8 arrays (U and V half size each way).
Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


_local = threading.local()


def reformat(
    frame: av.VideoFrame, width: int | None = None, height: int | None = None, format: str = "yuv420p"
) -> av.VideoFrame:
    """``frame.reformat(...)`` with the swscale context kept, per thread and conversion.

    PyAV's ``VideoFrame.reformat`` sets up a new swscale context for every new frame (~0.4 ms
    for a 640x360 scale, more than the scaling itself); a kept ``VideoReformatter`` reuses it.
    """
    cache: dict[tuple[object, ...], VideoReformatter] | None = getattr(_local, "reformatters", None)
    if cache is None:
        cache = _local.reformatters = {}
    key = (frame.width, frame.height, frame.format.name, width, height, format)
    r = cache.get(key)
    if r is None:
        if len(cache) >= 32:  # sizes come and go (layout changes, simulcast): forget old ones
            cache.clear()
        r = cache[key] = VideoReformatter()
    return r.reformat(frame, width=width, height=height, format=format)


def fit(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int]:
    """The largest even size with the source's aspect ratio inside ``dst`` (letterbox)."""
    scale = min(dst_w / src_w, dst_h / src_h)
    w = max(2, min(dst_w, round(src_w * scale / 2) * 2))
    h = max(2, min(dst_h, round(src_h * scale / 2) * 2))
    return w, h


def solid_canvas(width: int, height: int, yuv: tuple[int, int, int] = BLACK_YUV) -> np.ndarray:
    """An I420 picture in PyAV's ``yuv420p`` ndarray layout (``height*3/2`` rows of ``width``)."""
    arr = np.empty((height * 3 // 2, width), np.uint8)
    fill(planes(arr, width, height), yuv)
    return arr


def region(pic: Planes, x: int, y: int, w: int, h: int) -> Planes:
    """Views of the ``w`` x ``h`` rectangle at even (x, y) of a picture's planes."""
    return (
        pic[0][y : y + h, x : x + w],
        pic[1][y // 2 : (y + h) // 2, x // 2 : (x + w) // 2],
        pic[2][y // 2 : (y + h) // 2, x // 2 : (x + w) // 2],
    )


def fill(dst: Planes, yuv: tuple[int, int, int], x: int = 0, y: int = 0, w: int = -1, h: int = -1) -> None:
    """Paint a rectangle of ``dst`` (all of it by default; even x, y, w, h) one colour."""
    w, h = dst[0].shape[1] if w < 0 else w, dst[0].shape[0] if h < 0 else h
    for plane, value in zip(region(dst, x, y, w, h), yuv, strict=True):
        plane[...] = value


def frame_planes(frame: av.VideoFrame) -> Planes:
    """Y, U, V views of a ``yuv420p`` PyAV frame's own memory (no copy; line padding cut off);
    writing into them draws on the frame."""
    views = [
        np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        for p in frame.planes
    ]
    return views[0], views[1], views[2]


def planes(arr: np.ndarray, width: int, height: int) -> Planes:
    """Writable Y, U, V views of a ``yuv420p`` ndarray (planes packed one after the other)."""
    flat = arr.reshape(-1)
    ys, cs = width * height, (width // 2) * (height // 2)
    y = flat[:ys].reshape(height, width)
    u = flat[ys : ys + cs].reshape(height // 2, width // 2)
    v = flat[ys + cs : ys + 2 * cs].reshape(height // 2, width // 2)
    return y, u, v


def to_av(frame: rtc.VideoFrame) -> av.VideoFrame:
    """A PyAV view of an SDK frame: I420 of even size is wrapped without a copy (the PyAV frame
    keeps the SDK buffer alive); other buffer types are converted, odd sizes cropped to even."""
    w, h = frame.width, frame.height
    if frame.type != rtc.VideoBufferType.I420:
        frame = frame.convert(rtc.VideoBufferType.I420)
    buf = np.frombuffer(frame.data, np.uint8)
    if w % 2 == 0 and h % 2 == 0:
        return av.VideoFrame.from_numpy_buffer(buf.reshape(h * 3 // 2, w), format="yuv420p")
    cw, ch = (w + 1) // 2, (h + 1) // 2
    ew, eh = w - w % 2, h - h % 2
    y = buf[: w * h].reshape(h, w)[:eh, :ew]
    u = buf[w * h : w * h + cw * ch].reshape(ch, cw)[: eh // 2, : ew // 2]
    v = buf[w * h + cw * ch : w * h + 2 * cw * ch].reshape(ch, cw)[: eh // 2, : ew // 2]
    out = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(eh * 3 // 2, ew)
    return av.VideoFrame.from_ndarray(out, format="yuv420p")


def fit_on_canvas(src: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """Scale ``src`` (swscale) into a ``width``x``height`` canvas, letterboxed, never stretched."""
    if (src.width, src.height) == (width, height) and src.format.name == "yuv420p":
        return src
    fw, fh = fit(src.width, src.height, width, height)
    scaled = reformat(src, fw, fh)
    if (fw, fh) == (width, height):
        return scaled
    canvas = av.VideoFrame(width, height, "yuv420p")
    dst = frame_planes(canvas)
    fill(dst, BLACK_YUV)
    paste(dst, frame_planes(scaled), (width - fw) // 2, (height - fh) // 2)
    return canvas


def paste(dst: Planes, src: Planes, x: int, y: int) -> None:
    """Copy the picture ``src`` into ``dst`` with its top left corner at (x, y) (made even)."""
    x, y = x - x % 2, y - y % 2
    for d, s in zip(region(dst, x, y, src[0].shape[1], src[0].shape[0]), src, strict=True):
        d[...] = s
