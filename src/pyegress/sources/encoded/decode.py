"""Decoding the encoded receive path's frames onto a recording's timeline.

The rtc SDK hands a subscriber pictures and PCM at the moment its jitter buffers let them go,
with no RTP time: on a jittery network the audio comes out late by however much NetEq chose
to hold, which no stat it reports tells exactly (``docs/motion.md``). Here each frame keeps
its sender's RTP time, and a track's clock is placed on the local one by the frames that came
with the least delay (:class:`ArrivalLine`): a packet held back by the network is placed
where it was due, not where it came, so bursts, a growing jitter buffer or a late first
second move nothing, and a participant's camera and microphone line up as they were sent.

Video is decoded by PyAV (libavcodec's slice threads) and handed to a :class:`VideoInput` as
``av.VideoFrame``; Opus by libopus, resampled to the mixer's format for an :class:`AudioInput`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

from ...media.encoded import EncodedFrame
from ...media.inputs import MIX_CHANNELS, MIX_RATE, Picture
from ...media.timeline import AudioInput, VideoInput

log = logging.getLogger("pyegress.source.encoded")

#: Seconds of a track's frames whose least arrival delay places its clock: long enough to hold
#: several frames that came on time through 300 ms bursts, short enough to follow a route that
#: got slower (or a sender's clock drifting against ours) within seconds.
LINE_WINDOW = 3.0
#: The frame step a track is taken to have before its second frame says (seconds): a
#: browser's and the SDK's 30 fps camera, 20 ms Opus packets.
FIRST_STEP = {"video": 1 / 30, "audio": 0.020}
#: Seconds a participant's decoded audio still landed after its picture, placed as above,
#: through a loopback server (the marker publisher, libwebrtc through the rtc SDK: +17..+31 ms
#: over 7 runs, median +23, the same on a clean network and under 200 ms audio bursts): the
#: sender's audio pipeline (10 ms capture chunks, Opus's 6.5 ms look-ahead) before the RTP
#: time it stamps. Audio is placed this much earlier, as ``sources.room.AUDIO_PATH_DELAY``
#: does for the SDK's receive path.
AUDIO_LATE = 0.023
#: Seconds after its place on the line beyond which a frame is placed as it came instead: its
#: RTP time is not when it was sent. livekit-server resumes a track it stopped forwarding
#: (muted, then unmuted) with a first frame stamped one frame after the last it forwarded,
#: however long ago that was (seen: the key frame after a 2 s mute placed 2.04 s before it
#: came, then dropped); no network delay the line absorbs comes near.
LATE_LIMIT = 1.0
#: libavcodec decoders of the codecs LiveKit forwards (AV1 through dav1d, as FFmpeg prefers).
DECODERS = {"h264": "h264", "vp8": "vp8", "vp9": "vp9", "av1": "libdav1d"}


def sent_after(kind: str, step: float) -> float:
    """Seconds after its RTP time that a frame of a track whose frames are ``step`` apart leaves
    its sender at the soonest: an Opus packet once its last sample is captured, a video frame
    as it is captured (its time is when its last packet came, ``pyegress.compat.aiortc.TimedFrame``)."""
    return step if kind == "audio" else 0.0


class ArrivalLine:
    """Places a track's RTP times on the monotonic clock: RTP time ``t`` is at ``least + t -
    sent``, ``least`` the least (arrival - RTP time) of the last :data:`LINE_WINDOW` seconds
    (the frames the network delayed least, so the sender's own pacing), ``sent`` how long
    after its RTP time a frame can be sent (:func:`sent_after`, from the median frame step).

    A resumed track (``EncodedFrame.resumed``: unmuted) starts its line afresh. While a
    track is muted its sender's packets can run on another clock (the rtc SDK's muted
    microphone: 20 ms ahead of its RTP time, forwarded for a second after the mute), and
    livekit-server re-times what it forwards after the unmute: kept, that line placed a
    participant's sound 20 ms early for the 3 s after each unmute (its A/V offset -14..-40 ms
    against -18..+7 before the mute in 4 runs, the file written as sent -3..-5 throughout)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._recent: collections.deque[tuple[float, float]] = collections.deque()  # (arrived, delay)
        #: an audio track's packet lengths (``sent_after``; a video frame's step moves nothing)
        self._steps: collections.deque[float] = collections.deque(maxlen=50)
        self._last_rtp: int | None = None

    def place(self, frame: EncodedFrame, arrived: float) -> float:
        """The monotonic time of ``frame``'s RTP time (its first sample or its picture)."""
        rate = frame.clock_rate
        if self.kind == "audio":
            if self._last_rtp is not None and frame.rtp > self._last_rtp:
                self._steps.append((frame.rtp - self._last_rtp) / rate)
            self._last_rtp = frame.rtp if self._last_rtp is None else max(self._last_rtp, frame.rtp)
        recent = self._recent
        if frame.resumed:
            recent.clear()
        delay = arrived - frame.rtp / rate
        step = sorted(self._steps)[len(self._steps) // 2] if self._steps else FIRST_STEP[self.kind]
        sent = sent_after(self.kind, step)
        while recent and recent[0][0] < arrived - LINE_WINDOW:
            recent.popleft()
        if recent and delay - recent[0][1] > LATE_LIMIT:
            return arrived - sent  # a resumed track's first frame: placed as it came, the line kept
        while recent and recent[-1][1] >= delay:
            recent.pop()  # never the least again: this frame is newer and came sooner
        recent.append((arrived, delay))
        return recent[0][1] + frame.rtp / rate - sent


class VideoDecoder:
    """Decodes a video track's frames into ``sink``, each at its place on the line; a frame
    that does not decode asks for a key frame (``want_key``) and nothing is shown until then."""

    def __init__(self, codec: str, sink: VideoInput[Picture], want_key: Callable[[], None]) -> None:
        self.codec, self.sink, self._want_key = codec, sink, want_key
        self.line = ArrivalLine("video")
        self._ctx = _video_decoder(codec)
        self._places: dict[int, float] = {}  # RTP time -> place, of frames inside the decoder
        self.decoded = 0
        self.errors = 0

    def __call__(self, frame: EncodedFrame) -> None:
        self._places[frame.rtp] = self.line.place(frame, frame.arrived)
        packet = av.Packet(frame.data)
        packet.pts = frame.rtp
        try:
            pictures = self._ctx.decode(packet)
        except av.error.FFmpegError as e:
            self._failed(e)
            return
        for picture in pictures:
            at = self._places.pop(picture.pts, None) if picture.pts is not None else None
            if at is not None:
                self.decoded += 1
                self.sink.push(
                    picture if picture.format.name == "yuv420p" else picture.reformat(format="yuv420p"), at
                )
        if len(self._places) > 32:  # frames the decoder dropped
            for rtp in sorted(self._places)[:-32]:
                del self._places[rtp]

    def _failed(self, error: Exception) -> None:
        self.errors += 1
        log.debug("%s frame did not decode (%s): waiting for a key frame", self.codec, error)
        self._ctx = _video_decoder(self.codec)  # the next key frame starts it clean
        self._places.clear()
        self._want_key()


class OpusDecoder:
    """Decodes an audio track's Opus packets into ``sink`` in the mixer's format, each at its
    place on the line (a damaged packet is left out: its 20 ms are silence)."""

    def __init__(self, sink: AudioInput) -> None:
        self.sink = sink
        self.line = ArrivalLine("audio")
        self._ctx = _opus_decoder()
        self._to_mix = av.AudioResampler(format="s16", layout="stereo", rate=MIX_RATE)
        self.decoded = 0

    def __call__(self, frame: EncodedFrame) -> None:
        at = self.line.place(frame, frame.arrived) - AUDIO_LATE
        try:
            decoded = self._ctx.decode(av.Packet(frame.data))
        except av.error.FFmpegError:
            return
        self.decoded += 1
        for f in decoded:
            for pcm in self._to_mix.resample(f):
                samples = pcm.to_ndarray().reshape(-1, MIX_CHANNELS)
                at += len(samples) / MIX_RATE
                self.sink.push(np.ascontiguousarray(samples), at)  # placed where it ends


def _video_decoder(codec: str) -> VideoCodecContext:
    ctx = av.CodecContext.create(DECODERS[codec], "r")
    assert isinstance(ctx, VideoCodecContext)
    # slice threads only: no frame delay, and a frame-threaded H.264 decoder fed a damaged
    # stream hung when it was freed (PyAV 18.1, FFmpeg 8.1, found by tests/test_decode.py)
    ctx.thread_type = "SLICE"
    return ctx


def _opus_decoder() -> AudioCodecContext:
    ctx = av.CodecContext.create("libopus", "r")
    ctx.sample_rate, ctx.layout = MIX_RATE, "stereo"
    return ctx


def decoder_for(
    codec: str, sink: VideoInput[Picture] | AudioInput, want_key: Callable[[], None]
) -> VideoDecoder | OpusDecoder | None:
    """The decoder of a ``codec`` track into ``sink`` (``want_key`` asks its sender for a key
    frame), or None when that codec is not decoded into that kind of sink. An audio sink is
    reset: a new track, so its continuity starts again."""
    if isinstance(sink, AudioInput):
        if codec != "opus":
            return None
        sink.reset()
        return OpusDecoder(sink)
    return VideoDecoder(codec, sink, want_key) if codec in DECODERS else None
