"""Encoders shared by every output that uses the same encoding.

Each encoder is a PyAV stream in a never-written ``null`` container: its codec context does
the encoding, and outputs create their own streams from it as a template
(``add_stream_from_template``), then mux the packets it produces.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import av
import numpy as np
from av.video.frame import PictureType

from .encoding import AudioEncoding, VideoEncoding

if TYPE_CHECKING:
    Packet = av.Packet[Any]
else:  # PyAV's Packet is generic only in its stubs
    Packet = av.Packet

_H264_PROFILES = {"baseline": "Constrained Baseline", "main": "Main", "high": "High"}
_AAC_PRIMING = 1024
_AUDIO_CODECS = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame"}


class VideoEncoder:
    """Encodes canvas-sized ``yuv420p`` frames with pts in ticks of ``1/fps``."""

    def __init__(self, enc: VideoEncoding) -> None:
        self.encoding = enc
        box = av.open(io.BytesIO(), "w", format="null")
        if enc.codec == "h264":
            stream = box.add_stream(
                "libx264",
                rate=enc.fps,
                # no scene-cut key frames: a fixed GOP keeps HLS segments and RTMP ingest aligned
                options={"preset": "veryfast", "tune": "zerolatency", "threads": "2", "sc_threshold": "0"},
            )
            stream.profile = _H264_PROFILES[enc.profile]
        elif enc.codec == "vp8":
            stream = box.add_stream(
                "libvpx",
                rate=enc.fps,
                options={"deadline": "realtime", "cpu-used": "8", "threads": "2", "lag-in-frames": "0"},
            )
        else:
            raise ValueError(f"unsupported video codec {enc.codec}")
        stream.width, stream.height = enc.width, enc.height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = enc.bitrate_kbps * 1000
        ctx = stream.codec_context
        ctx.time_base = Fraction(1, enc.fps)
        ctx.framerate = Fraction(enc.fps, 1)
        ctx.gop_size = enc.gop
        ctx.flags |= av.codec.context.Flags.global_header
        ctx.open()
        box.start_encoding()  # fills the stream parameters outputs copy (extradata)
        self._box: av.container.OutputContainer | None = box
        self.stream = stream
        self.frames = 0
        self.packets_out = self.bytes_out = 0  # what came out (the quality report)

    def encode(self, frame: av.VideoFrame | None, pts: int = 0, *, key: bool = False) -> list[Packet]:
        """Encode one frame at ``pts`` (ticks), a key frame when ``key``; ``None`` flushes."""
        if frame is not None:
            frame.pict_type = PictureType.I if key else PictureType.NONE  # frames are reused
            frame.pts = pts
            frame.time_base = self.stream.codec_context.time_base
            self.frames += 1
        return _counted(self, list(self.stream.encode(frame)))

    def close(self) -> None:
        """Free the codec context (idempotent); the encoder cannot be used after."""
        box, self._box = self._box, None
        if box is not None:
            with contextlib.suppress(Exception):
                box.close()


class AudioEncoder:
    """Encodes interleaved int16 PCM (``in_rate``, resampled to the encoding's); pts counts samples."""

    def __init__(self, enc: AudioEncoding, *, in_rate: int | None = None) -> None:
        self.encoding = enc
        self.in_rate = in_rate or enc.sample_rate
        box = av.open(io.BytesIO(), "w", format="null")
        stream = cast(av.AudioStream, box.add_stream(_AUDIO_CODECS[enc.codec], rate=enc.sample_rate))
        stream.layout = "stereo" if enc.channels == 2 else "mono"
        stream.bit_rate = enc.bitrate_kbps * 1000
        ctx = stream.codec_context
        ctx.time_base = Fraction(1, enc.sample_rate)
        ctx.flags |= av.codec.context.Flags.global_header
        ctx.open()
        box.start_encoding()
        self._box: av.container.OutputContainer | None = box
        self.stream = stream
        self._layout = stream.layout.name
        self._resampler = av.AudioResampler(
            format=ctx.format,
            layout=self._layout,
            rate=enc.sample_rate,
            frame_size=ctx.frame_size or None,
        )
        self.samples = 0  # samples fed so far
        self.packets_out = self.bytes_out = 0  # what came out (the quality report)
        # FFmpeg's AAC encoder puts 1024 priming samples first, so its packets would start at
        # pts -1024, which fragmented MP4 cannot hold without shifting the video. Starting the
        # input at pts +1024 makes the packets start at 0; the stream's initial padding (1024)
        # still tells the MP4 muxer to skip the priming, so decoded time == timeline time.
        self._out_pts = _AAC_PRIMING if enc.codec == "aac" else 0

    def encode(self, pcm: np.ndarray | None) -> list[Packet]:
        """Encode ``pcm`` of shape (n, channels), int16; ``None`` flushes."""
        if pcm is None:
            frames = self._resampler.resample(None)
        else:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate = self.in_rate
            frame.pts = self.samples
            self.samples += len(pcm)
            frames = self._resampler.resample(frame)
        packets: list[Packet] = []
        for f in frames:
            f.pts = self._out_pts
            f.time_base = self.stream.codec_context.time_base
            self._out_pts += f.samples
            packets.extend(self.stream.encode(f))
        if pcm is None:
            packets.extend(self.stream.encode(None))
        return _counted(self, packets)

    def close(self) -> None:
        """Free the codec context (idempotent); the encoder cannot be used after."""
        box, self._box = self._box, None
        if box is not None:
            with contextlib.suppress(Exception):
                box.close()


def _counted(encoder: VideoEncoder | AudioEncoder, packets: list[Packet]) -> list[Packet]:
    """``packets``, counted into the encoder's ``packets_out`` and ``bytes_out``."""
    encoder.packets_out += len(packets)
    encoder.bytes_out += sum(p.size for p in packets)
    return packets


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded packet as outputs receive it: immutable bytes and timing, so every output
    builds its own ``av.Packet`` (a mux rebases a packet in place: sharing one between outputs
    would make their order matter)."""

    kind: str  # "video" | "audio"
    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    keyframe: bool

    @classmethod
    def of(cls, kind: str, packet: Packet) -> EncodedPacket:
        """Copy an encoder's packet (its bytes are copied once, shared read-only by outputs)."""
        return cls(
            kind,
            bytes(packet),
            packet.pts,
            packet.dts,
            packet.duration or 0,
            packet.time_base or Fraction(1, 1),
            kind == "video" and packet.is_keyframe,
        )

    def to_av(self, stream: av.stream.Stream) -> Packet:
        """A fresh ``av.Packet`` of this data for ``stream`` (the caller's to mux)."""
        pkt = av.Packet(self.data)
        pkt.pts, pkt.dts, pkt.duration, pkt.time_base = self.pts, self.dts, self.duration, self.time_base
        pkt.is_keyframe = self.keyframe
        pkt.stream = stream
        return pkt

    @property
    def start(self) -> float:
        """Seconds on the output timeline where this packet starts (0 without a pts)."""
        return float(self.pts * self.time_base) if self.pts is not None else 0.0

    @property
    def end(self) -> float:
        """Seconds on the output timeline where this packet ends."""
        return self.start + float(self.duration * self.time_base)
