"""Image output: a JPEG of the canvas every ``capture_interval`` seconds, plus a manifest.

The pipeline hands over the canvas frame only on the ticks this output asks for, so the cost
is one scale and one JPEG encode per capture, on the encode thread. With a store,
each image is uploaded as it is written (by a worker, never on this thread).
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from livekit.protocol import egress as pe

from ..config import ImageSuffix
from ..config.paths import image_prefix
from ..filenames import timestamp_suffix
from ..media.encoding import VideoEncoding
from ..media.frames import fit_on_canvas, reformat
from ..storage.base import UploadResult
from ..storage.upload import Store
from .base import FrameOutput
from .manifest import manifest_path

__all__ = ["ImageOutput", "image_name", "image_prefix"]

_FF_QP2LAMBDA = 118
_JPEG_QUALITY = 3  # mjpeg qscale: 2 (best) .. 31


def image_name(prefix: str, suffix: ImageSuffix, index: int, wall: float) -> str:
    """``<prefix>_00003.jpeg``, ``<prefix>_20240131235959123.jpeg`` (UTC) or ``<prefix>.jpeg``."""
    if suffix is ImageSuffix.TIMESTAMP:
        return f"{prefix}_{timestamp_suffix(wall)}.jpeg"
    if suffix is ImageSuffix.NONE_OVERWRITE:
        return f"{prefix}.jpeg"
    return f"{prefix}_{index:05d}.jpeg"


@dataclass(frozen=True)
class Image:
    """One captured image."""

    path: Path
    t: float  # output time, seconds
    timestamp: int  # unix ns
    size: int
    upload: concurrent.futures.Future[UploadResult] | None = None


class ImageOutput(FrameOutput):
    """JPEG snapshots of the canvas at ``width`` x ``height`` (0: the canvas size), aspect kept."""

    def __init__(
        self,
        name: str,
        prefix: Path,
        *,
        canvas: VideoEncoding,
        interval: float,
        width: int = 0,
        height: int = 0,
        suffix: ImageSuffix = ImageSuffix.INDEX,
        manifest: bool = False,
        store: Store | None = None,
    ) -> None:
        super().__init__(name, canvas, store=store, manifest_path=manifest_path(prefix) if manifest else None)
        self.prefix = prefix
        self.interval = interval
        self.width = width or canvas.width
        self.height = height or canvas.height
        self.suffix = suffix
        self.images: list[Image] = []
        self._next = 0.0
        self._wall0 = 0.0
        self._ctx: av.VideoCodecContext | None = None
        self._result: pe.ImagesInfo | None = None

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        ctx = av.CodecContext.create("mjpeg", "w")
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuvj420p"
        ctx.time_base = Fraction(1, 1000)
        ctx.flags |= av.codec.context.Flags.qscale
        ctx.global_quality = _JPEG_QUALITY * _FF_QP2LAMBDA
        ctx.open()
        self._ctx = ctx
        self._wall0 = time.time()

    def wants_frame(self, t: float) -> bool:
        return t + 1e-6 >= self._next

    def write_frame(self, frame: av.VideoFrame, t: float) -> None:
        if self._ctx is None:
            return
        while self._next <= t + 1e-6:
            self._next += self.interval
        pic = reformat(fit_on_canvas(frame, self.width, self.height), format="yuvj420p")
        pic.pts = round(t * 1000)
        data = b"".join(bytes(p) for p in self._ctx.encode(pic))
        wall = self._wall0 + t
        path = self.prefix.with_name(image_name(self.prefix.name, self.suffix, len(self.images), wall))
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half an image (NONE_OVERWRITE rewrites in place)
        upload = None
        if self.store is not None:  # an overwritten image goes up as a snapshot
            upload = self.store.put(path, snapshot=self.suffix is ImageSuffix.NONE_OVERWRITE)
        self.images.append(Image(path, t, int(wall * 1e9), len(data), upload))
        self._track_end("video", t)
        self._changed()

    def close(self) -> None:
        self._ctx = None

    def _location(self, image: Image) -> str:
        """The image's object URL, or its local path when it was not uploaded."""
        return str(image.path) if self.store is None else self.store.where(image.path, image.upload)

    @property
    def size(self) -> int:
        return sum(i.size for i in list(self.images))

    def attach(self, info: pe.EgressInfo, started_at: int) -> None:
        self._result = info.image_results.add(filename_prefix=str(self.prefix), started_at=started_at)

    def refresh(self, ended_at: int | None = None) -> None:
        if self._result is None:
            return
        self._result.image_count = len(self.images)
        if ended_at is not None:
            self._result.ended_at = ended_at

    def manifest_entries(self) -> dict[str, object]:
        """Every image with its time, beside the egress info."""
        return {
            "images": [
                {
                    "filename": i.path.name,
                    "location": self._location(i),
                    "offset": round(i.t, 3),
                    "timestamp": i.timestamp,
                }
                for i in self.images
            ]
        }
