"""The quality counters without a server: synthetic pushes into the timeline's inputs, read as
the pipeline reads them, and the report built from them."""

from __future__ import annotations

import random

import av
import numpy as np

from pyegress.media.timeline import SIZES_KEPT, AudioInput, Ticks, VideoInput
from pyegress.pipeline import LATENCY  # each tick is read this long after its instant
from pyegress.quality import LagRange, QualityReport, audio_quality, video_quality, with_details

FPS = 30
RATE = 48000
CHUNK = 1920  # 40 ms


def _run(times: list[float], ticks: int, fps: float = FPS, origin: float = 100.0) -> VideoInput[int]:
    """Frames pushed at ``times`` and ``ticks`` output frames read, in wall-clock order."""
    vi: VideoInput[int] = VideoInput(Ticks(origin, fps))
    events = [(t, 0, i) for i, t in enumerate(times)]
    events += [(origin + k / fps + LATENCY, 1, k) for k in range(ticks)]
    for _, is_tick, n in sorted(events):
        if is_tick:
            vi.at(origin + n / fps)
        else:
            vi.push(n, times[n])
    return vi


#: Until a source's rate is known (its first three frames) frames are placed as they come: a
#: source on the ticks' phase with jitter shows one of them twice or skips one, each at most
#: twice: what a recording's first tenth of a second really looks like.
START = 2


def test_a_steady_source_has_no_repeats_skips_or_freezes_after_its_start() -> None:
    rng = random.Random(3)
    times = [100.0 + i / 30 + rng.uniform(-0.006, 0.006) for i in range(300)]
    vi = _run(times, 300)
    q = video_quality("alice/camera", vi)
    assert q.frames_received == 300
    assert q.frames_repeated <= START and q.frames_skipped <= START, q
    assert q.longest_freeze_s < 2.5 / 30, q


def test_a_half_rate_source_shown_twice_is_not_repeating() -> None:
    vi = _run([100.0 + i / 15 for i in range(150)], 300)
    assert vi.repeats <= 1 and vi.frames_skipped == 0
    assert 1.5 / 30 < vi.longest_freeze < 3.5 / 30  # each frame is on screen for two ticks


def test_a_lost_frame_is_one_repeat_and_a_pause_is_a_freeze_of_its_length() -> None:
    times = [100.0 + i / 30 for i in range(300)]
    whole = _run(times, 300)
    del times[100]  # lost on the way: its slot shows the frame before once more
    vi = _run(times, 300)
    assert (vi.repeats, vi.frames_skipped) == (whole.repeats + 1, whole.frames_skipped)
    assert vi.longest_freeze < 2.5 / 30
    paused = [100.0 + i / 30 for i in range(60)] + [103.0 + i / 30 for i in range(60)]
    vi = _run(paused, 150)
    assert abs(vi.longest_freeze - (1.0 + 1 / 30)) < 0.05, vi.longest_freeze
    assert 25 <= vi.repeats <= 32, vi.repeats  # the ticks of the pause each held a frame past due


def test_the_last_frame_held_after_the_track_ended_is_no_freeze() -> None:
    whole = _run([100.0 + i / 30 for i in range(150)], 150)
    vi = _run([100.0 + i / 30 for i in range(30)], 150)  # the track ends after 1 s of 5
    assert vi.repeats == whole.repeats and vi.longest_freeze == whole.longest_freeze


def _tone(start: int, count: int) -> np.ndarray:
    t = np.arange(start, start + count) / RATE
    mono = (8000 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
    return np.stack([mono, mono], axis=1)


def test_audio_gaps_are_silence_and_late_chunks_are_dropped() -> None:
    ai = AudioInput(RATE, 2, t0=100.0)
    ai.read(0, 5 * CHUNK)  # before the first chunk came: not silence inserted
    for i in range(5, 25):
        if i != 10:  # chunk 10 never comes: its 40 ms read as silence
            ai.push(_tone(i * CHUNK, CHUNK), 100.0 + (i + 1) * CHUNK / RATE)
    ai.read(5 * CHUNK, 20 * CHUNK)
    # the chunks after the gap are written on (continuity), stretched a little towards where
    # they came: every sample read is either written or silence
    assert ai.silence + 19 * CHUNK + ai.stretched - ai.squeezed == 20 * CHUNK
    assert ai.silence > CHUNK // 2 and ai.dropped == 0
    gap, slewed = ai.silence, ai.slewed
    ai.read(25 * CHUNK, 2 * CHUNK)  # played out before chunk 25 came: silence ...
    ai.push(_tone(25 * CHUNK, CHUNK), 100.0 + 26 * CHUNK / RATE)
    late = CHUNK + ai.slewed - slewed  # (as written: stretched like the chunks before it)
    assert ai.dropped == late and ai.silence == gap + 2 * CHUNK  # ... and the chunk dropped
    q = audio_quality("alice/microphone", ai)
    assert (q.silence_inserted, q.samples_dropped) == (ai.silence, late)
    assert q.samples_received == 20 * CHUNK + ai.stretched - ai.squeezed


def test_audio_following_a_slow_drift_counts_the_samples_stretched() -> None:
    ai = AudioInput(RATE, 2, t0=100.0)
    for i in range(200):  # arrivals drift 10 ms later over 8 s: followed by stretching
        ai.push(_tone(i * CHUNK, CHUNK), 100.0 + (i + 1) * CHUNK / RATE + 0.010 * i / 200)
    assert ai.reanchors == 0 and ai.squeezed == 0
    assert ai.stretched == ai.slewed and 0.004 * RATE <= ai.stretched <= 0.011 * RATE, ai.stretched


def test_lag_range_and_summary() -> None:
    lag = LagRange()
    for v in (0.0, 0.0, 0.030, 0.045, 0.040):
        lag.add(v)
    assert (lag.min, lag.max, lag.last, lag.changes, lag.count) == (0.0, 0.045, 0.040, 3, 5)
    later = LagRange()
    later.add(0.060)
    both = lag.merged(later)
    assert (both.min, both.max, both.last, both.count) == (0.0, 0.060, 0.060, 6)
    ai = AudioInput(RATE, 2, t0=100.0)
    report = QualityReport([video_quality("alice/camera", VideoInput())], [audio_quality("a/mic", ai, both)])
    line = with_details("End reason: stopped", report)
    assert line.startswith("End reason: stopped; quality: video alice/camera: 0 in, 0 repeated")
    assert "lag 0 to 60 ms" in line
    assert with_details("stopped", QualityReport()) == "stopped"
    assert report.to_dict()["audio"][0]["lag"]["max"] == 0.060


def test_the_sizes_pictures_came_in_are_reported_from_the_first_frame_on() -> None:
    # a simulcast track on its lower layer, then the top one (and a sender's rescaling back)
    vi: VideoInput[av.VideoFrame] = VideoInput()
    small, large = av.VideoFrame(320, 180, "yuv420p"), av.VideoFrame(640, 360, "yuv420p")
    for i, picture in enumerate([small] * 20 + [large] * 30 + [small] * 3):
        vi.push(picture, 50.0 + i / 20)
    vi.push(object(), 60.0)  # a picture drawn on demand has no size: not a change
    q = video_quality("chrome/camera", vi)
    assert [(s.width, s.height, s.from_s) for s in q.sizes] == [
        (320, 180, 0.0),
        (640, 360, 1.0),
        (320, 180, 2.5),
    ]
    assert q.size_changes == 3
    assert "sizes 320x180, 640x360 at 1.00 s, 320x180 at 2.50 s" in QualityReport([q]).summary()
    steady: VideoInput[av.VideoFrame] = VideoInput()
    steady.push(large, 1.0)
    assert "sizes" not in QualityReport([video_quality("p/camera", steady)]).summary()


def test_a_sender_rescaling_all_day_keeps_the_report_bounded() -> None:
    vi: VideoInput[av.VideoFrame] = VideoInput()
    pictures = [av.VideoFrame(320, 180, "yuv420p"), av.VideoFrame(640, 360, "yuv420p")]
    for i in range(SIZES_KEPT * 2):
        vi.push(pictures[i % 2], float(i))
    q = video_quality("p/camera", vi)
    assert len(q.sizes) == SIZES_KEPT and q.size_changes == SIZES_KEPT * 2
    assert f"and {SIZES_KEPT} more" in QualityReport([q]).summary()
