"""The encoded receive path's decoders: frames placed on the monotonic clock by their RTP time
and the frames that came soonest, decoded into the recording's inputs."""

from __future__ import annotations

import fractions
import random
import sys

import av
import numpy as np
import pytest

if sys.version_info < (3, 11):  # aiortc 1.16 needs Python 3.11; on 3.10 there is no encoded path
    pytest.skip("aiortc 1.16 is installed on Python 3.11 and later only", allow_module_level=True)

from pyegress.media.encoded import EncodedFrame
from pyegress.media.inputs import MIX_RATE, Picture
from pyegress.media.timeline import AudioInput, VideoInput
from pyegress.sources.encoded.decode import (
    AUDIO_LATE,
    LINE_WINDOW,
    ArrivalLine,
    OpusDecoder,
    VideoDecoder,
    sent_after,
)


def opus_frame(rtp: int, arrived: float, data: bytes = b"\xf8\xff\xfe") -> EncodedFrame:
    return EncodedFrame("opus", data, rtp, 48000, True, None, arrived)


def test_bursty_audio_is_placed_where_it_was_due_not_where_it_came() -> None:
    # 20 ms packets sent in 200 ms bursts: each burst's last packet came on time, the others
    # up to 180 ms late. Every packet is placed on the line of the on-time ones.
    line = ArrivalLine("audio")
    sent = sent_after("audio", 0.020)
    places = []
    for n in range(100):
        due = n * 0.020
        came = 10.0 + (n // 10 + 1) * 0.2 - 0.020 + 0.005  # sent with its burst of 10, 5 ms path
        places.append(line.place(opus_frame(n * 960, came), came) - due)
    # from the first burst's on-time packet on, every place is the same: the path, less the
    # packet's own 20 ms (sent once its last sample was captured)
    assert max(places[10:]) - min(places[10:]) < 1e-9
    assert places[-1] == pytest.approx(10.0 + 0.005 - sent)


def test_the_line_follows_a_route_that_got_slower_within_its_window() -> None:
    line = ArrivalLine("video")
    rate = 90000
    at = []
    for n in range(300):  # 10 s at 30 fps; from 5 s on the path is 50 ms longer
        due = n / 30
        came = 100.0 + due + (0.050 if due >= 5.0 else 0.0)
        at.append(line.place(EncodedFrame("vp8", b"", n * 3000, rate, False, None, came), came) - due)
    assert at[0] == pytest.approx(100.0)  # the path: a frame is sent as it is captured
    assert at[100] == pytest.approx(at[0])
    assert at[-1] - at[0] == pytest.approx(0.050)  # followed once the faster frames left the window
    settled = next(n for n, a in enumerate(at) if a - at[0] > 0.049)
    assert settled / 30 == pytest.approx(5.0 + LINE_WINDOW - 0.050, abs=0.034)  # arrivals age out


def test_a_variable_rate_cameras_frames_are_placed_at_their_own_time() -> None:
    """Frames 10-120 ms apart, each timed by its last packet's arrival (a 5 ms path, up to 4 ms
    of jitter): every frame lands on its RTP time plus the path, whatever the gap before it."""
    line = ArrivalLine("video")
    rng = random.Random(7)
    t, off = 0.0, []
    for _ in range(120):
        t += rng.uniform(0.010, 0.120)
        came = 100.005 + t + rng.uniform(0.0, 0.004)
        frame = EncodedFrame("h264", b"", round(t * 90000), 90000, False, None, came)
        off.append(line.place(frame, came) - t)
    assert min(off[10:]) >= 100.005 - 1e-4 and max(off[10:]) <= 100.005 + 0.004


def test_a_resumed_tracks_first_frame_is_placed_as_it_came() -> None:
    """livekit-server resumes a track it stopped forwarding (a mute) with a first frame stamped
    one frame after the last it forwarded: placed by that RTP time it would land 2 s in the
    past. It is placed as it came, and the line (the frames after it) is kept."""
    line = ArrivalLine("video")
    rate, sent = 90000, sent_after("video", 1 / 30)

    def place(n: int, came: float) -> float:
        return line.place(EncodedFrame("h264", b"", n * 3000, rate, False, None, came), came)

    for n in range(60):  # 2 s at 30 fps, 5 ms path
        place(n, 100.005 + n / 30)
    resumed_at = 100.005 + 4.0
    assert place(60, resumed_at) == pytest.approx(resumed_at - sent)  # stamped as frame 60
    # then frames stamped by when they were sent (frame 121: 4.033 s) on the same line
    assert place(121, 100.005 + 121 / 30) == pytest.approx(100.005 + 121 / 30 - sent)


def test_an_unmuted_track_starts_its_line_afresh() -> None:
    """What the marker publisher's microphone did (logged through a real livekit-server): while
    muted its packets ran 20 ms ahead of their RTP time, after the unmute the server forwarded
    four packets continuing the old RTP clock (0.5 s behind), then the sender's own times.
    Kept, the muted stretch placed the sound 20 ms early for the next 3 s; a resumed track's
    line starts afresh (the subscriber marks its first frame after the signaling's unmute)."""
    rate, sent = 48000, sent_after("audio", 0.020)

    def run(mark: bool) -> list[float]:
        line = ArrivalLine("audio")
        out = []
        for n in range(200):  # 4 s of 20 ms packets, 5 ms path; muted from 2 s: 20 ms sooner
            came = 100.005 + n * 0.02 - (0.020 if n >= 100 else 0.0)
            line.place(EncodedFrame("opus", b"", n * 960, rate, True, None, came), came)
        for k in range(10):  # resumed at 4.5 s: four packets on the old clock, then the jump
            n = 225 + k
            rtp = (200 + k) * 960 if k < 4 else n * 960
            came = 100.005 + n * 0.02
            frame = EncodedFrame("opus", b"", rtp, rate, True, None, came, resumed=mark and k == 0)
            out.append(line.place(frame, came) - (came - sent))
        return out

    kept, afresh = run(False), run(True)
    assert kept[-1] == pytest.approx(-0.020)  # the muted stretch's line: 20 ms early
    assert afresh[:4] == pytest.approx([0.0] * 4)  # the old clock's packets: placed as they came
    assert afresh[4:] == pytest.approx([0.0] * 6)  # then where they were due, as before the mute


def encoded_video(codec: str, count: int) -> list[bytes]:
    enc = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 180, "yuv420p"  # type: ignore[attr-defined]
    enc.time_base = fractions.Fraction(1, 30)
    enc.options = {"tune": "zerolatency"} if codec == "h264" else {"deadline": "realtime"}
    packets: list[bytes] = []
    for n in range(count):
        frame = av.VideoFrame.from_ndarray(np.full((180, 320, 3), n * 8 % 256, np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = n
        packets += [bytes(p) for p in enc.encode(frame)]  # type: ignore[attr-defined]
    packets += [bytes(p) for p in enc.encode(None)]  # type: ignore[attr-defined]
    return packets


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_video_is_decoded_into_the_input_at_its_place(codec: str) -> None:
    sink: VideoInput[Picture] = VideoInput()
    keys: list[int] = []
    dec = VideoDecoder(codec, sink, lambda: keys.append(1))
    for n, data in enumerate(encoded_video(codec, 30)):
        dec(EncodedFrame(codec, data, 1000 + n * 3000, 90000, n == 0, None, 50.0 + n / 30))
        if n == 0:  # placed on its line: when its last packet came
            assert sink.at(50.0 - 1e-3) is None
            first = sink.at(50.0 + 1e-6)
            assert isinstance(first, av.VideoFrame) and (first.width, first.height) == (320, 180)
    assert dec.decoded == 30 and not keys
    assert sink.frames_in == 30
    last = sink.at(60.0)
    assert isinstance(last, av.VideoFrame)
    assert last.to_ndarray(format="rgb24").mean() == pytest.approx(29 * 8 % 256, abs=4)  # the last picture


def test_a_frame_that_does_not_decode_asks_for_a_key_frame() -> None:
    sink: VideoInput[Picture] = VideoInput()
    keys: list[int] = []
    dec = VideoDecoder("vp8", sink, lambda: keys.append(1))
    frames = encoded_video("vp8", 3)
    dec(EncodedFrame("vp8", frames[0], 0, 90000, True, None, 1.0))
    dec(EncodedFrame("vp8", b"\x01\x00\x00" + b"\xff" * 20, 3000, 90000, False, None, 1.03))  # damaged
    assert keys == [1] and dec.errors == 1 and dec.decoded == 1
    dec(EncodedFrame("vp8", frames[0], 6000, 90000, True, None, 1.06))  # the key frame asked for
    assert dec.decoded == 2 and sink.frames_in == 2


def test_a_damaged_h264_stream_shows_nothing_and_its_decoder_is_let_go() -> None:
    # H.264 garbage does not raise; with frame threads, freeing such a decoder hung (slice threads now)
    sink: VideoInput[Picture] = VideoInput()
    dec = VideoDecoder("h264", sink, lambda: None)
    dec(EncodedFrame("h264", b"\x00\x00\x01\x65" + b"\xff" * 40, 0, 90000, False, None, 1.0))
    dec(EncodedFrame("h264", b"\x00\x00\x01\x41" + b"\x00" * 3, 3000, 90000, False, None, 1.03))
    assert dec.decoded == 0 and sink.frames_in == 0
    del dec  # frees the decoder (this hung with frame threads)


def test_opus_is_decoded_into_the_mix_at_its_place() -> None:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"  # type: ignore[attr-defined]
    tone = (np.sin(np.arange(48000) / 48000 * 2 * np.pi * 440) * 8000).astype(np.int16)
    packets: list[bytes] = []
    for n in range(50):
        f = av.AudioFrame.from_ndarray(np.repeat(tone[n * 960 : (n + 1) * 960], 2)[None, :], format="s16",
                                       layout="stereo")  # fmt: skip
        f.sample_rate, f.pts = 48000, n * 960
        packets += [bytes(p) for p in enc.encode(f)]  # type: ignore[attr-defined]
    sink = AudioInput(MIX_RATE, 2, t0=20.0)
    dec = OpusDecoder(sink)
    for n, data in enumerate(packets):
        came = 21.0 + n * 0.020 + sent_after("audio", 0.020)
        dec(opus_frame(n * 960, came, data))
    assert dec.decoded == len(packets) >= 45
    # placed from 1.0 s of the timeline on (less AUDIO_LATE): nothing before, the tone after
    start = int((1.0 - AUDIO_LATE) * MIX_RATE)
    before = sink.read(start - int(0.1 * MIX_RATE), int(0.1 * MIX_RATE) - 10)
    after = sink.read(int(1.1 * MIX_RATE), int(0.5 * MIX_RATE))
    assert not before.any()
    assert np.abs(after).max() > 4000
