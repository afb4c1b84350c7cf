"""Jitter-buffer readings from WebRTC stats and the tracks they pair, without a server."""

from __future__ import annotations

import time

from livekit import rtc

from pyegress.sources.delays import (
    CLEAN_TARGET,
    MAX_ADVANCE,
    MAX_EXCESS,
    MAX_LAG,
    SETTLE_SECONDS,
    JitterDelays,
)
from pyegress.sources.room import RoomSource

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


def test_the_first_second_of_a_track_is_not_followed() -> None:
    """NetEq starts high and settles: readings of a track's first second move nothing."""
    d = JitterDelays()
    d._since["TR_a"] = time.monotonic()  # just watched
    d._update("TR_a", AUDIO, _stats(0.080 * 24000, 24000))
    assert d.excess("TR_a") == 0.0
    d._since["TR_a"] = time.monotonic() - SETTLE_SECONDS
    d._update("TR_a", AUDIO, _stats(0.080 * 24000 + 0.200 * 48000, 72000))
    assert abs(d.excess("TR_a") - (0.200 - CLEAN_TARGET[AUDIO])) < 1e-9  # the poll after it


def test_a_reading_is_capped_and_forgotten_with_its_track() -> None:
    d = JitterDelays()
    d._update("TR_a", AUDIO, _stats(5.0 * 1000, 1000))
    assert d.excess("TR_a") == MAX_EXCESS
    d.forget("TR_a")
    assert d.excess("TR_a") == 0.0


class _Pub:
    def __init__(self, sid: str, kind: int, source: int) -> None:
        self.sid, self.kind, self.source = sid, kind, source


class _Participant:
    def __init__(self, *pubs: _Pub) -> None:
        self.track_publications = {p.sid: p for p in pubs}


class _Room:
    """Just what ``RoomSource`` reads of an ``rtc.Room`` to pair tracks (no server needed)."""

    def __init__(self, *participants: _Participant) -> None:
        self.remote_participants = {str(i): p for i, p in enumerate(participants)}

    def on(self, *_: object) -> None:
        pass


def test_a_participants_audio_and_camera_wait_for_each_other() -> None:
    video, screen = rtc.TrackKind.KIND_VIDEO, rtc.TrackSource.SOURCE_SCREENSHARE
    cam, mic = rtc.TrackSource.SOURCE_CAMERA, rtc.TrackSource.SOURCE_MICROPHONE
    alice = _Participant(_Pub("TR_ss", video, screen), _Pub("TR_cam", video, cam), _Pub("TR_mic", AUDIO, mic))
    bob = _Participant(_Pub("TR_bob", AUDIO, mic))  # audio only: nothing to line up with
    src = RoomSource("r", room=_Room(alice, bob))  # type: ignore[arg-type]
    src._pumps = {sid: None for sid in ("TR_ss", "TR_cam", "TR_mic", "TR_bob")}  # type: ignore[misc]
    assert src._partner("TR_mic") == ("TR_cam", False)  # the camera, not the screen share
    assert src._partner("TR_cam") == ("TR_mic", True) and src._partner("TR_bob") == (None, False)
    src.delays._excess = {"TR_mic": 0.060, "TR_cam": 0.010, "TR_bob": 0.5}
    # the sound, held 50 ms longer, is placed that much earlier than it came: the picture stays
    assert src.lag("TR_cam") == 0.0 and abs(src.lag("TR_mic") + 0.050) < 1e-9
    src.delays._excess = {"TR_mic": 0.160, "TR_cam": 0.010, "TR_bob": 0.5}
    # 150 ms longer: the sound is advanced by what the output's latency allows, the picture waits
    assert src.lag("TR_mic") == -MAX_ADVANCE and abs(src.lag("TR_cam") - (0.150 - MAX_ADVANCE)) < 1e-9
    assert src.lag("TR_bob") == 0.0
    src.delays._excess = {"TR_mic": 0.0, "TR_cam": 0.080}
    assert src.lag("TR_cam") == 0.0 and abs(src.lag("TR_mic") - 0.080) < 1e-9  # the sound waits
    src.delays._excess = {"TR_mic": 0.9, "TR_cam": 0.0}
    # no further apart than MAX_LAG; the picture no later than the video inputs keep
    assert src.lag("TR_mic") == -MAX_ADVANCE and abs(src.lag("TR_cam") - (MAX_LAG - MAX_ADVANCE)) < 1e-9
    src.delays._excess = {"TR_mic": 0.0, "TR_cam": 0.9}
    assert src.lag("TR_mic") == MAX_LAG
