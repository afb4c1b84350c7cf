"""Jitter-buffer readings from WebRTC stats, without a server: what each poll says."""

from __future__ import annotations

from livekit import rtc

from pyegress.sources.delays import CLEAN_TARGET, MAX_EXCESS, JitterDelays

AUDIO = rtc.TrackKind.KIND_AUDIO


def _stats(target_sum: float, emitted: int) -> list[rtc.stats.RtcStats]:
    s = rtc.stats.RtcStats()
    s.inbound_rtp.inbound.jitter_buffer_target_delay = target_sum
    s.inbound_rtp.inbound.jitter_buffer_emitted_count = emitted
    other = rtc.stats.RtcStats()
    other.codec.codec.mime_type = "audio/opus"
    return [other, s]


def test_excess_is_the_target_over_the_last_poll_beyond_a_clean_network() -> None:
    d = JitterDelays()
    assert d.excess("TR_a") == 0.0  # nothing read yet
    d._update("TR_a", AUDIO, _stats(0.059 * 24000, 24000))  # the first half second: 59 ms
    assert abs(d.excess("TR_a") - (0.059 - CLEAN_TARGET[AUDIO])) < 1e-9
    # the next 48000 samples were held 180 ms each: the reading follows the latest poll only
    d._update("TR_a", AUDIO, _stats(0.059 * 24000 + 0.180 * 48000, 72000))
    assert abs(d.excess("TR_a") - 0.160) < 1e-9
    d._update("TR_a", AUDIO, _stats(0.059 * 24000 + 0.180 * 48000 + 0.010 * 48000, 120000))
    assert d.excess("TR_a") == 0.0  # below a clean network's floor: no correction, never negative
    d._update("TR_a", AUDIO, _stats(0.059 * 24000 + 0.180 * 48000 + 0.010 * 48000, 120000))
    assert d.excess("TR_a") == 0.0  # nothing emitted since: the last reading stands


def test_a_reading_is_capped_and_forgotten_with_its_track() -> None:
    d = JitterDelays()
    d._update("TR_a", AUDIO, _stats(5.0 * 1000, 1000))
    assert d.excess("TR_a") == MAX_EXCESS
    d.forget("TR_a")
    assert d.excess("TR_a") == 0.0
