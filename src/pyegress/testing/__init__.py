"""Test and demo tooling: a throw-away livekit-server, a synthetic publisher, file checks and `netns`."""

from __future__ import annotations

from .cadence import Cadence, cadence
from .checks import (
    AudioStreamInfo,
    AvOffset,
    MediaInfo,
    VideoStreamInfo,
    av_offset,
    dominant_frequencies,
    frame_timestamps,
    mean_color,
    moving_pairs,
    picture_moves,
    probe,
    region_color,
    tone_present,
)
from .publisher import SyntheticPublisher
from .server import LiveKitServer, LiveKitServerError
from .signals import PatternGenerator, ToneGenerator

__all__ = [
    "AudioStreamInfo",
    "AvOffset",
    "Cadence",
    "LiveKitServer",
    "LiveKitServerError",
    "MediaInfo",
    "PatternGenerator",
    "SyntheticPublisher",
    "ToneGenerator",
    "VideoStreamInfo",
    "av_offset",
    "cadence",
    "dominant_frequencies",
    "frame_timestamps",
    "mean_color",
    "moving_pairs",
    "picture_moves",
    "probe",
    "region_color",
    "tone_present",
]
