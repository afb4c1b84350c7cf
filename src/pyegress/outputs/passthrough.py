"""A file of a track's frames as its sender encoded them: H.264 → fragmented MP4, VP8 → WebM,
Opus → Ogg. Nothing is decoded or encoded; timestamps are the sender's RTP clock, so the file
has neither jitter nor drift by construction."""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from typing import Any

import av

from ..media.encoded import EncodedFrame, h264_parameter_sets, picture_size
from .file import CONTAINER_FORMATS, FileOutput, container_options

#: The codec each container holds, and the codec name PyAV knows it by.
PASSTHROUGH_CODECS = {"h264": (".mp4", "h264"), "vp8": (".webm", "libvpx"), "opus": (".ogg", "libopus")}
#: Opus frame lengths (in 48 kHz samples) by TOC configuration (RFC 6716 section 3.1).
_OPUS_FRAME = [480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4


def opus_samples(packet: bytes) -> int:
    """The samples (48 kHz) one Opus packet holds, from its TOC byte."""
    if not packet:
        return 0
    toc = packet[0]
    count = {0: 1, 1: 2, 2: 2}.get(toc & 3)
    if count is None:
        count = packet[1] & 0x3F if len(packet) > 1 else 0
    return _OPUS_FRAME[toc >> 3] * count


class PassthroughFile(FileOutput):
    """One track's encoded frames into its container; opened on the first (key) frame."""

    _last: int | None = None  # the pts of the frame muxed last

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        """Nothing to do before the first frame (:meth:`write_frame` opens the file)."""

    def write_frame(self, frame: EncodedFrame, cut: int = 0) -> None:
        """Mux one frame, ``cut`` ticks of its clock earlier (paused spans left out); the first
        one opens the file (it is a key frame)."""
        if self.failed:
            return
        try:
            if self._container is None:
                self._open_for(frame)
            assert self._container is not None
            pts = frame.rtp - self._rtp0 - cut
            kind = "audio" if frame.codec == "opus" else "video"
            end, last = mux_frame(self._container, self._streams["media"], frame, pts, self._last)
            self._track_end(kind, end)
            self._last = last
            self.frames += 1
        except Exception as e:
            self.fail(f"cannot write {self.path.name}: {e}")

    def _open_for(self, frame: EncodedFrame) -> None:
        fmt = CONTAINER_FORMATS[self.path.suffix]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rtp0 = frame.rtp
        self._last = None
        self.frames = 0
        container = av.open(str(self.path), "w", format=fmt, options=container_options(fmt))
        self._streams["media"] = add_stream(container, frame)
        container.start_encoding()
        self._container = container


def add_stream(container: av.container.OutputContainer, frame: EncodedFrame) -> av.stream.Stream:
    """A stream of ``container`` for the track whose first frame (a key frame) is ``frame``."""
    name = PASSTHROUGH_CODECS[frame.codec][1]
    scratch = av.open("/dev/null", "w", format=container.format.name.split(",")[0])  # never opened
    try:
        template = scratch.add_stream(name, rate=48000) if frame.codec == "opus" else scratch.add_stream(name)
        stream = container.add_stream_from_template(template, opaque=False)
    finally:
        scratch.close()
    ctx: Any = stream.codec_context
    if frame.codec == "opus":
        ctx.sample_rate, ctx.layout = 48000, "stereo"
        # OpusHead (RFC 7845): version 1, 2 channels, no pre-skip, 48 kHz, no gain, family 0
        ctx.extradata = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, 48000, 0, 0)
    else:
        ctx.width, ctx.height = picture_size(frame)
        ctx.pix_fmt = "yuv420p"
        if frame.codec == "h264":
            ctx.extradata = h264_parameter_sets(frame.data)
    stream.time_base = Fraction(1, frame.clock_rate)
    return stream


def mux_frame(container: av.container.OutputContainer, stream: av.stream.Stream, frame: EncodedFrame,
              pts: int, last: int | None = None) -> tuple[float, int]:  # fmt: skip
    """Mux ``frame`` at ``pts`` (ticks of its clock), or one tick of the container's clock after
    ``last`` (the stream's previous frame) when it would not land later than that: a simulcast
    layer switch forwards the new layer's key frame 1-60 RTP ticks after the old layer's last
    frame, which a WebM's millisecond clock would put on the same instant. Returns where the
    frame ends, in seconds, and the pts it was muxed at."""
    if last is not None:
        tick = max(1, math.ceil(frame.clock_rate * stream.time_base)) if stream.time_base else 1
        pts = max(pts, last + tick)
    pkt = av.Packet(frame.data)
    pkt.pts = pkt.dts = pts
    pkt.time_base = Fraction(1, frame.clock_rate)
    if frame.codec == "opus":
        pkt.duration = opus_samples(frame.data) * frame.clock_rate // 48000
    pkt.is_keyframe = frame.keyframe
    pkt.stream = stream
    container.mux(pkt)
    return (pts + (pkt.duration or 0)) / frame.clock_rate, pts
