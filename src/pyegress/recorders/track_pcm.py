"""PcmTrackRecorder: a track egress to a WebSocket (its PCM) through the encoded receive path.

The track's Opus packets come from :mod:`pyegress.sources.encoded` and are decoded by PyAV's
libopus decoder into the 48 kHz stereo PCM the WebSocket carries
(:class:`~pyegress.sources.encoded.decode.OpusDecoder`, placed by RTP time): one decode, no
encode, and no SDK audio stream (whose playout mixer and resampler cost more than the decode).
The PCM goes through the pipeline's timeline as before, so gaps and mutes are silence and pause
works.
"""

from __future__ import annotations

from ..sources.encoded import RemoteTrack
from ..sources.encoded.decode import OpusDecoder
from .base import Recorder
from .track_passthrough import PassthroughTrackRecorder


class PcmTrackRecorder(PassthroughTrackRecorder):
    """Joins and follows the track as :class:`PassthroughTrackRecorder`; records as the base
    :class:`Recorder` does (pipeline, PCM outputs, pause)."""

    _prepare = Recorder._prepare
    _record = Recorder._record
    pause = Recorder.pause
    resume = Recorder.resume

    _decoder: OpusDecoder | None = None

    @property
    def packets_decoded(self) -> int:
        """Opus packets decoded so far."""
        return self._decoder.decoded if self._decoder is not None else 0

    def _on_active(self) -> None:
        assert self.subscriber is not None and self.track is not None
        if self.audio_input is None:
            return
        self._decoder = OpusDecoder(self.audio_input)
        self.subscriber.on_muted = self._muted
        self.subscriber.subscribe(self.track, self._decoder)

    def _muted(self, track: RemoteTrack, muted: bool) -> None:
        """Tell PCM receivers when the recorded track is muted or unmuted."""
        if self.track is not None and track.sid == self.track.sid:
            self._tell_pcm_muted(muted)


__all__ = ["PcmTrackRecorder"]
