"""The timeline without a server: audio continuity under jitter, slow following, re-anchoring;
video frames never going back in time."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import numpy as np
import pytest

from pyegress.media.timeline import SLEW, SLEW_DEADBAND, AudioInput, Ticks, VideoInput, stretch
from pyegress.sources.xdisplay import server_time

RATE = 48000
CHUNK = 1920  # 40 ms, as the SDK hands them over


def _tone(start: int, count: int) -> np.ndarray:
    t = np.arange(start, start + count) / RATE
    mono = (8000 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
    return np.stack([mono, mono], axis=1)


def _feed(inp: AudioInput, chunks: int, arrival_shift: list[float], late: float = 0.0) -> None:
    """Push ``chunks`` consecutive chunks; chunk ``i`` arrives ``arrival_shift[i]`` s late, and
    is noted up to ``late`` s after that (an event loop busy with other work)."""
    rng = np.random.default_rng(7)
    for i in range(chunks):
        end = (i + 1) * CHUNK / RATE
        inp.push(_tone(i * CHUNK, CHUNK), inp.t0 + end + arrival_shift[i] + rng.uniform(0.0, late))


def test_arrivals_noted_late_stay_continuous_and_in_place() -> None:
    """Chunks noted 0-16 ms after they came: no re-anchor, the tone reads back unbroken, and it
    is followed by the earliest arrivals: written where it was due, not where it was noted."""
    inp = AudioInput(RATE, 2, t0=100.0)
    _feed(inp, 100, [0.0] * 100, late=0.016)
    assert inp.reanchors == 0
    assert abs(inp.slewed) <= 0.016 * RATE  # the first chunk's lateness, taken back if anything
    late = inp._write_pos - 100 * CHUNK  # type: ignore[operator]  # where it continues now
    assert abs(late) <= (SLEW_DEADBAND + 0.001) * RATE, late / RATE  # the dead band, the earliest's own
    out = inp.read(0, 100 * CHUNK)[:, 0].astype(np.int32)
    assert np.abs(np.diff(out[CHUNK:])).max() < 800  # a 440 Hz tone at 8000 never steps this much


def test_slowly_moving_arrivals_are_followed_without_a_jump() -> None:
    """Arrivals that settle 16 ms earlier over 2 s (a jitter buffer draining): followed by squeezing."""
    inp = AudioInput(RATE, 2, t0=100.0)
    shift = [0.016 * max(0.0, 1 - i / 50) for i in range(150)]  # 16 ms late at first, 0 after 2 s
    _feed(inp, 150, shift)
    assert inp.reanchors == 0
    moved = -inp.slewed / RATE
    assert 0.011 <= moved <= 0.017, moved  # followed to within the dead band
    assert inp.slewed >= -int(150 * CHUNK * SLEW)  # never faster than the slew limit
    out = inp.read(0, 150 * CHUNK)[:, 0].astype(np.int32)
    assert np.abs(np.diff(out[: 148 * CHUNK])).max() < 800  # no gap, no click


def test_a_pause_reanchors_at_once() -> None:
    """A 300 ms jump in arrival (the sender paused): from the second chunk on, audio lands where it
    arrived (the first is taken for an outlier and continues the sound); one outlier alone moves
    nothing."""
    inp = AudioInput(RATE, 2, t0=100.0)
    _feed(inp, 60, [0.0] * 30 + [0.3] * 30)
    assert inp.reanchors == 1
    out = inp.read(0, 60 * CHUNK + int(0.3 * RATE))[:, 0]
    assert out[30 * CHUNK : 31 * CHUNK].any()
    gap = out[31 * CHUNK + 100 : 31 * CHUNK + int(0.28 * RATE)]
    assert not gap.any()  # silence where nothing arrived
    assert out[31 * CHUNK + int(0.3 * RATE) + 100 :].any()

    lone = AudioInput(RATE, 2, t0=100.0)
    _feed(lone, 60, [0.0] * 30 + [0.3] + [0.0] * 29)
    assert lone.reanchors == 0
    assert np.abs(np.diff(lone.read(0, 60 * CHUNK)[:, 0].astype(np.int32))).max() < 800


def test_stretch_keeps_the_waveform() -> None:
    """Stretching by 1 % changes the length and nothing else audible (same level, same shape)."""
    x = _tone(0, CHUNK)
    y = stretch(x, CHUNK + 19)
    assert y.shape == (CHUNK + 19, 2) and y.dtype == np.int16
    assert abs(int(np.abs(y).max()) - int(np.abs(x).max())) <= 80
    assert y[0, 0] == x[0, 0] and y[-1, 0] == x[-1, 0]


def test_video_frames_hold_or_skip_but_never_go_back() -> None:
    """Arrival times corrected later then earlier (a lag that grows, then shrinks): a frame
    pushed with an earlier time than the one before it is not shown before it."""
    vi: VideoInput[str] = VideoInput()
    vi.push("a", 10.00)
    vi.push("b", 10.20)  # placed 170 ms later than it arrived (lag grew)
    vi.push("c", 10.07)  # lag gone again: it arrived before b's corrected time
    assert vi.at(10.05) == "a"
    assert vi.at(10.10) == "a"  # c is not shown ahead of b
    assert vi.at(10.20) == "c"  # b and c are due together: the newest wins


def test_video_frames_never_shown_are_counted_as_skipped() -> None:
    """Counted from the first frame shown: one a newer frame overtook before any output frame
    took it (late, or more frames than the output rate) counts once, however often ``at`` runs."""
    vi: VideoInput[str] = VideoInput()
    vi.push("early", 9.0)  # before recording began: never shown, not counted
    vi.push("a", 10.00)
    assert vi.at(10.01) == "a" and vi.at(10.01) == "a"
    vi.push("b", 10.02)
    vi.push("c", 10.03)  # b is overtaken before the next output frame
    assert vi.at(10.05) == "c" and vi.frames_skipped == 1
    for t in (10.06, 10.07):  # a frame shown again (held) is not a skip
        assert vi.at(t) == "c"
    vi.push("d", 10.08)
    vi.push("e", 10.09)
    vi.push("f", 10.10)
    assert vi.at(10.11) == "f" and vi.frames_skipped == 3


def _shown(
    times: list[float], fps: float, ticks: int, origin: float = 100.0, on_grid: bool = False
) -> list[int]:
    """Which frame (index) each of ``ticks`` output frames shows, frames pushed at ``times``
    and each tick read ``LATENCY`` after its instant, in wall-clock order as the pipeline does."""
    vi: VideoInput[int] = VideoInput(Ticks(origin, fps), on_grid=on_grid)
    events = [(t, 0, i) for i, t in enumerate(times)]
    events += [(origin + k / fps + LATENCY, 1, k) for k in range(ticks)]
    shown = []
    for _, is_tick, n in sorted(events):
        if not is_tick:
            vi.push(n, times[n])
        elif (f := vi.at(origin + n / fps)) is not None:
            shown.append(f)
    return shown


LATENCY = 0.15  # Pipeline.latency


def _steps(shown: list[int]) -> Counter[int]:
    return Counter(b - a for a, b in itertools.pairwise(shown))


def test_a_steady_source_with_jitter_shows_every_frame_once() -> None:
    """30 fps frames whose times wobble by up to 8 ms around the ticks (placed as they come,
    about every fourth frame would land on the wrong side of its tick), with one frame 40 ms
    late: each is shown on exactly one output frame."""
    rng = random.Random(7)
    times = [100.0 + i / 30 + rng.uniform(-0.008, 0.008) for i in range(300)]
    times[150] += 0.040  # late, and the next one right behind it (frames come in order)
    times[151] = max(times[151], times[150] + 0.001)
    shown = _shown(times, 30, 300)
    steps = _steps(shown[10:])
    assert steps == Counter({1: len(shown) - 11}), steps


def test_a_half_rate_source_shows_each_frame_twice_and_a_lost_frame_is_one_skip() -> None:
    rng = random.Random(8)
    times = [100.0 + i / 15 + rng.uniform(-0.006, 0.006) for i in range(150)]
    shown = _shown(times, 30, 300)
    runs = Counter(len(list(g)) for f, g in itertools.groupby(shown) if 10 <= f < 140)
    assert set(runs) == {2}, runs  # the first frames (the rate not yet known) and the last aside
    times = [100.0 + i / 30 for i in range(300)]
    del times[100]  # lost on the way: the rest keep their times
    steps = _steps(_shown(times, 30, 300)[5:])
    assert steps == Counter({1: steps[1], 0: 1}), steps  # its slot holds the frame before


def test_an_unsteady_source_is_placed_as_it_comes() -> None:
    """24 fps into 30 (and a variable-rate sender) have no steady slots: newest frame wins."""
    times = [100.0 + i / 24 for i in range(40)]
    vi: VideoInput[int] = VideoInput(Ticks(100.0, 30))
    for i, t in enumerate(times):
        vi.push(i, t)
    assert vi.slots is not None and vi.slots._steps() == 0
    when = 100.0 + 40 / 30
    assert vi.at(when) == max(i for i, t in enumerate(times) if t <= when)


@pytest.mark.parametrize("phase", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_a_steady_source_starts_on_the_tick_nearest_to_its_frames(phase: float) -> None:
    """Each frame is shown from the tick nearest to when it came (at most half a period either
    way: the sound, placed where it comes, stays in step on average), from the start and
    without moving later, whatever the source's phase against the ticks."""
    times = [100.0 + (i + phase) / 30 for i in range(120)]
    vi: VideoInput[int] = VideoInput(Ticks(100.0, 30))
    events = sorted(
        [(t, 0, i) for i, t in enumerate(times)] + [(100 + k / 30 + LATENCY, 1, k) for k in range(120)]
    )
    first_tick: dict[int, float] = {}
    for _, is_tick, n in events:  # in wall-clock order, each tick read LATENCY after its instant
        if not is_tick:
            vi.push(n, times[n])
        elif (f := vi.at(100.0 + n / 30)) is not None:
            first_tick.setdefault(f, 100.0 + n / 30)
    gaps = [first_tick[i] - times[i] for i in sorted(first_tick) if i >= 3]  # the rate known
    assert len(gaps) >= 100 and all(abs(g) <= 0.5 / 30 + 1e-9 for g in gaps), (min(gaps), max(gaps))
    assert sorted(first_tick) == list(range(len(first_tick))), "every frame shown, in order"


def _misplaced_paints(
    grid: list[int], times: list[float], first: int = 10
) -> list[tuple[int, int | None, int]]:
    """Paints (index, ticks shown, periods until the next paint) not shown for exactly as many
    ticks as the display showed them, from paint ``first`` to the last but ten."""
    shown = _shown(times, 30, grid[-1] + 1, on_grid=True)
    runs = {f: len(list(g)) for f, g in itertools.groupby(shown)}
    return [
        (i, runs.get(i), grid[i + 1] - grid[i])
        for i in range(first, len(grid) - 10)
        if runs.get(i) != grid[i + 1] - grid[i]
    ]


@pytest.mark.parametrize("phase", [0.2, 0.45, 0.7])
def test_paints_on_the_output_grid_are_each_shown_for_their_whole_periods(phase: float) -> None:
    """A page painted by a display at the output's rate, only when it changes (1 to 3 periods
    apart), each paint up to 5 ms late: every paint is shown for as many ticks as periods
    passed until the next one, at any phase of the paints against the ticks (placed as they
    come, at 0.45 a third of them flipped to the other side of a tick)."""
    rng = random.Random(11)
    grid = [0]
    while len(grid) < 150:
        grid.append(grid[-1] + rng.choice((1, 1, 2, 3)))
    times = [100.0 + (g + phase) / 30 + rng.uniform(0.0, 0.005) for g in grid]
    assert not (wrong := _misplaced_paints(grid, times)), wrong[:5]


@pytest.mark.parametrize("phase", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_a_page_whose_paints_look_steady_is_still_shown_paint_by_paint(phase: float) -> None:
    """A template of two 15 fps tiles, as recorded from Chromium: the tiles change on the same
    refresh (paints two periods apart, steady enough to pass for a 15 fps source), then the
    page's playout shows one tile a refresh later (one paint three periods after the one
    before, the rest two), then the tiles change on alternate refreshes (paints one period
    apart) and again together; each paint 5 ms either side of its refresh. Every paint is
    shown for as many ticks as the display showed it: a schedule of two periods per paint
    gave the late paint two and held every later one a period late until it moved a slot,
    and gave each paint one period apart two slots."""
    rng = random.Random(5)
    steps = [2] * 40 + [3] + [2] * 30 + [1] * 20 + [2] * 40
    grid = list(itertools.accumulate(steps, initial=0))
    times = [100.0 + (g + phase) / 30 + rng.uniform(-0.005, 0.005) for g in grid]
    assert not (wrong := _misplaced_paints(grid, times, first=3)), wrong[:5]


def test_an_x_server_timestamp_is_read_on_the_monotonic_clock() -> None:
    """Xvfb dates events in milliseconds of the monotonic clock, modulo 2**32: a paint 30 ms
    before the thread got to it is dated 30 ms back, across the wrap too; a timestamp of
    another clock (far from now) leaves the thread's own reading."""
    now = 5000.0
    assert server_time(int(now * 1000) - 30, now) == pytest.approx(now - 0.030, abs=1e-6)
    wrapped = (2**32 + 10) / 1000  # 10 ms after the millisecond counter wrapped
    assert server_time(2**32 - 20, wrapped) == pytest.approx(wrapped - 0.030, abs=1e-6)
    assert server_time(int(now * 1000) - 86_400_000, now) == now
    assert server_time(int(now * 1000) + 5, now) == now  # ahead of now: not this clock


def test_a_new_lag_moves_a_steady_sources_schedule_at_once() -> None:
    """A steady source whose frames are pushed 90 ms later from frame 8 on (its sound's lateness
    first read, announced by ``shift``): every later frame is shown from the tick nearest its
    new time at once, on its steady schedule. Unannounced, the change read as one long interval
    and the source as unsteady for half a second (placed as it came: a frame off, measured)."""
    period, lag = 1 / 30, 0.090
    for announced in (True, False):
        vi: VideoInput[int] = VideoInput(Ticks(100.0, 30))
        first_tick: dict[int, float] = {}
        steady: list[int] = []
        times = [100.0 + (i + 0.3) * period + (lag if i >= 8 else 0.0) for i in range(120)]
        ticks = [(100 + k * period + LATENCY, 1, k) for k in range(140)]
        events = sorted([(t, 0, i) for i, t in enumerate(times)] + ticks)
        for _, is_tick, n in events:
            if not is_tick:
                if n == 8 and announced:
                    vi.shift(lag)
                vi.push(n, times[n])
                assert vi.slots is not None
                steady.append(vi.slots._steps())
            elif (f := vi.at(100.0 + n * period)) is not None:
                first_tick.setdefault(f, 100.0 + n * period)
        gaps = [first_tick[i] - times[i] for i in range(8, 118)]
        if announced:
            assert all(abs(g) <= period / 2 + 1e-9 for g in gaps), (min(gaps), max(gaps))
            assert set(steady[3:]) == {1}, "steady throughout: the change is not an interval"
        else:  # before it was told: the change read as an interval, the source as unsteady
            assert steady[9:].count(0) >= 10, steady
