"""PcmTrackRecorder: a track egress to a WebSocket (its PCM) through the encoded receive path.

The track's Opus packets come from :mod:`pyegress.sources.encoded` and are decoded by PyAV's
libopus decoder into the 48 kHz stereo PCM the WebSocket carries: one decode, no encode, and
no SDK audio stream (whose playout mixer and resampler cost more than the decode). The PCM
goes through the pipeline's timeline as before, so gaps and mutes are silence and pause works.
"""

from __future__ import annotations

import time

import av

from ..media.encoded import EncodedFrame
from ..media.inputs import MIX_CHANNELS, MIX_RATE
from ..sources.encoded import RemoteTrack
from .base import Recorder
from .track_passthrough import PassthroughTrackRecorder


class PcmTrackRecorder(PassthroughTrackRecorder):
    """Joins and follows the track as :class:`PassthroughTrackRecorder`; records as the base
    :class:`Recorder` does (pipeline, PCM outputs, pause)."""

    _prepare = Recorder._prepare
    _record = Recorder._record
    pause = Recorder.pause
    resume = Recorder.resume

    packets_decoded = 0

    def _on_active(self) -> None:
        assert self.subscriber is not None and self.track is not None
        sink = self.audio_input
        if sink is None:
            return
        decoder = av.CodecContext.create("libopus", "r")
        decoder.sample_rate, decoder.layout = MIX_RATE, "stereo"  # type: ignore[attr-defined]
        to_mix = av.AudioResampler(format="s16", layout="stereo", rate=MIX_RATE)

        def decode(frame: EncodedFrame) -> None:
            arrived = time.monotonic()
            try:
                decoded = decoder.decode(av.Packet(frame.data))
            except av.error.FFmpegError:  # a damaged packet: its 20 ms are silence
                return
            self.packets_decoded += 1
            for f in decoded:
                for pcm in to_mix.resample(f):
                    sink.push(pcm.to_ndarray().reshape(-1, MIX_CHANNELS), arrived)

        self.subscriber.on_muted = self._muted
        self.subscriber.subscribe(self.track, decode)

    def _muted(self, track: RemoteTrack, muted: bool) -> None:
        """Tell PCM receivers when the recorded track is muted or unmuted."""
        if self.track is not None and track.sid == self.track.sid:
            self._tell_pcm_muted(muted)


__all__ = ["PcmTrackRecorder"]
