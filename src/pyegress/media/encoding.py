"""Encoding parameters: LiveKit presets and advanced options turned into codec settings."""

from __future__ import annotations

from dataclasses import dataclass, replace

from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from ..errors import InvalidRequestError


@dataclass(frozen=True)
class VideoEncoding:
    """One video encode: codec, canvas size, constant frame rate, rate control."""

    width: int = 1920
    height: int = 1080
    fps: int = 30
    codec: str = "h264"  # "h264" | "vp8"
    profile: str = "main"  # h264 only: "baseline" | "main" | "high"
    bitrate_kbps: int = 4500
    keyframe_interval: float = 4.0  # seconds

    @property
    def gop(self) -> int:
        """Key frame distance in frames."""
        return max(1, round(self.keyframe_interval * self.fps))


@dataclass(frozen=True)
class AudioEncoding:
    """One audio encode: codec, rate, channels, bitrate."""

    codec: str = "aac"  # "aac" | "opus" | "mp3"
    sample_rate: int = 44100
    channels: int = 2
    bitrate_kbps: int = 128

    def for_codec(self, codec: str) -> AudioEncoding:
        """The same settings with another codec (Opus only runs at 48 kHz)."""
        rate = 48000 if codec == "opus" else self.sample_rate
        return replace(self, codec=codec, sample_rate=rate)


# (width, height, fps, kbps) as LiveKit egress defines its presets.
_PRESETS: dict[int, tuple[int, int, int, int]] = {
    pe.H264_720P_30: (1280, 720, 30, 3000),
    pe.H264_720P_60: (1280, 720, 60, 4500),
    pe.H264_1080P_30: (1920, 1080, 30, 4500),
    pe.H264_1080P_60: (1920, 1080, 60, 6000),
    pe.PORTRAIT_H264_720P_30: (720, 1280, 30, 3000),
    pe.PORTRAIT_H264_720P_60: (720, 1280, 60, 4500),
    pe.PORTRAIT_H264_1080P_30: (1080, 1920, 30, 4500),
    pe.PORTRAIT_H264_1080P_60: (1080, 1920, 60, 6000),
}

_PROFILES = {
    pm.H264_BASELINE: "baseline",
    pm.H264_MAIN: "main",
    pm.H264_HIGH: "high",
}

_AUDIO_CODECS = {pm.DEFAULT_AC: "aac", pm.AAC: "aac", pm.OPUS: "opus", pm.AC_MP3: "mp3"}


def from_request(
    preset: int, advanced: pe.EncodingOptions | None, *, has_preset: bool, has_advanced: bool
) -> tuple[VideoEncoding, AudioEncoding]:
    """Encodings of a request: the preset (H264_720P_30 when none), or the advanced options.

    Advanced fields left at zero take LiveKit's documented defaults (1920x1080, 30 fps,
    4500 kbps, AAC 128 kbps at 44.1 kHz).
    """
    video, audio = VideoEncoding(), AudioEncoding()
    if not has_preset and not has_advanced:
        has_preset, preset = True, pe.H264_720P_30
    if has_preset:
        if preset == pe.PASSTHROUGH:
            raise InvalidRequestError("preset", "PASSTHROUGH is not supported; pick an H.264 preset")
        if preset not in _PRESETS:
            raise InvalidRequestError("preset", f"unknown preset {preset}")
        w, h, fps, kbps = _PRESETS[preset]
        video = replace(video, width=w, height=h, fps=fps, bitrate_kbps=kbps)
    if has_advanced and advanced is not None:
        video, audio = _apply_advanced(video, audio, advanced)
    return video, audio


def _apply_advanced(
    video: VideoEncoding, audio: AudioEncoding, opts: pe.EncodingOptions
) -> tuple[VideoEncoding, AudioEncoding]:
    def positive(name: str, value: float, upper: float) -> None:
        if value < 0 or value > upper:
            raise InvalidRequestError(f"advanced.{name}", f"{value} is out of range 0..{upper}")

    positive("width", opts.width, 7680)
    positive("height", opts.height, 7680)
    positive("framerate", opts.framerate, 120)
    positive("video_bitrate", opts.video_bitrate, 100_000)
    positive("audio_bitrate", opts.audio_bitrate, 1024)
    positive("key_frame_interval", opts.key_frame_interval, 60)
    w, h = opts.width or video.width, opts.height or video.height
    if w % 2 or h % 2:
        raise InvalidRequestError("advanced.width", f"{w}x{h}: width and height must be even")
    if w < 16 or h < 16:
        raise InvalidRequestError("advanced.width", f"{w}x{h} is too small (16x16 at least)")
    codec, profile = video.codec, video.profile
    if opts.video_codec in _PROFILES:
        profile = _PROFILES[opts.video_codec]
    elif opts.video_codec == pm.VP8:
        codec = "vp8"
    elif opts.video_codec != pm.DEFAULT_VC:
        raise InvalidRequestError("advanced.video_codec", f"unsupported video codec {opts.video_codec}")
    video = replace(
        video,
        width=w,
        height=h,
        fps=opts.framerate or video.fps,
        codec=codec,
        profile=profile,
        bitrate_kbps=opts.video_bitrate or video.bitrate_kbps,
        keyframe_interval=opts.key_frame_interval or video.keyframe_interval,
    )
    if opts.audio_codec not in _AUDIO_CODECS:
        raise InvalidRequestError("advanced.audio_codec", f"unsupported audio codec {opts.audio_codec}")
    rate = opts.audio_frequency or audio.sample_rate
    if rate not in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
        raise InvalidRequestError("advanced.audio_frequency", f"unsupported sample rate {rate}")
    audio = replace(
        audio,
        codec=_AUDIO_CODECS[opts.audio_codec],
        sample_rate=rate,
        bitrate_kbps=opts.audio_bitrate or audio.bitrate_kbps,
    )
    if audio.codec == "opus":
        audio = audio.for_codec("opus")
    return video, audio
