"""Image output: a JPEG of the canvas every ``capture_interval`` seconds, plus a manifest.

The pipeline hands over the canvas frame only on the ticks this output asks for, so the cost
is one scale and one JPEG encode per capture, on the encode thread. With a store
(``uploads``), each image is uploaded as it is written (by a worker, never on this thread).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from livekit.protocol import egress as pe

from ..config import ImageSuffix, ImageTarget
from ..errors import InvalidRequestError
from ..filenames import expand
from ..media.encoder import Packet
from ..media.encoding import VideoEncoding
from ..media.frames import fit_on_canvas, reformat
from ..storage.base import UploadResult
from ..storage.upload import LiveUploads
from .base import Output

_FF_QP2LAMBDA = 118
_JPEG_QUALITY = 3  # mjpeg qscale: 2 (best) .. 31


def image_prefix(target: ImageTarget, values: Mapping[str, str], output_dir: Path, default_stem: str) -> Path:
    """The path prefix of an image output (``filename_prefix`` expanded; empty or a folder: generated)."""
    raw = target.filename_prefix
    if not raw or raw.endswith("/"):
        raw += default_stem
    raw = expand(raw, values)
    for ext in (".jpeg", ".jpg"):
        raw = raw[: -len(ext)] if raw.lower().endswith(ext) else raw
    root = output_dir.resolve()
    full = (root / raw).resolve()
    if root not in full.parents:
        raise InvalidRequestError(
            f"{target.field}.filename_prefix", f"{target.filename_prefix!r} escapes {root}"
        )
    return full


def image_name(prefix: str, suffix: ImageSuffix, index: int, wall: float) -> str:
    """``<prefix>_00003.jpeg``, ``<prefix>_20240131235959123.jpeg`` (UTC) or ``<prefix>.jpeg``."""
    if suffix is ImageSuffix.TIMESTAMP:
        t = dt.datetime.fromtimestamp(wall, dt.timezone.utc)
        return f"{prefix}_{t:%Y%m%d%H%M%S}{t.microsecond // 1000:03d}.jpeg"
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


class ImageOutput(Output):
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
        manifest: Callable[[], dict[str, object]] | None = None,
        uploads: LiveUploads | None = None,
    ) -> None:
        super().__init__(name, None, None)
        self.uploads = uploads
        self.canvas = canvas
        self.prefix = prefix
        self.interval = interval
        self.width = width or canvas.width
        self.height = height or canvas.height
        self.suffix = suffix
        self.images: list[Image] = []
        self.manifest_path = prefix.with_name(prefix.name + ".json") if manifest else None
        self._manifest = manifest
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

    def write(self, packet: Packet, kind: str) -> None:
        """Images take canvas frames, not packets."""

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
        if self.uploads is not None:  # an overwritten image goes up as a snapshot
            upload = self.uploads.put(path, snapshot=self.suffix is ImageSuffix.NONE_OVERWRITE)
        self.images.append(Image(path, t, int(wall * 1e9), len(data), upload))
        self._end["video"] = t
        self._changed()

    def close(self) -> None:
        self._ctx = None

    async def finish(self) -> None:
        """Wait for the last uploads; a failed one fails this output (its images stay local)."""
        if self.uploads is not None:
            await self.uploads.close()
            if self.uploads.backup_used:
                self.fail(f"upload failed, images kept in {self.prefix.parent}: {self.uploads.error}")

    def _location(self, image: Image) -> str:
        """The image's object URL, or its local path when it was not uploaded."""
        up = image.upload
        if self.uploads is None or up is None or (up.done() and not up.result().ok):
            return str(image.path)
        return self.uploads.location(image.path)

    @property
    def size(self) -> int:
        return sum(i.size for i in list(self.images))

    def add_result(self, info: pe.EgressInfo, started_at: int) -> None:
        self._result = info.image_results.add(filename_prefix=str(self.prefix), started_at=started_at)

    def update_result(self, ended_at: int | None = None) -> None:
        if self._result is None:
            return
        self._result.image_count = len(self.images)
        if ended_at is not None:
            self._result.ended_at = ended_at

    def write_manifest(self) -> None:
        """``<prefix>.json``: the egress info plus every image with its time."""
        if self.manifest_path is None or self._manifest is None:
            return
        data = self._manifest()
        data["images"] = [
            {
                "filename": i.path.name,
                "location": self._location(i),
                "offset": round(i.t, 3),
                "timestamp": i.timestamp,
            }
            for i in self.images
        ]
        self.manifest_path.write_text(json.dumps(data, indent=2))
