"""Jitter-buffer readings from WebRTC stats and the tracks they pair, without a server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from livekit import rtc
from livekit.rtc._proto import track_pb2

from pyegress.media.timeline import Ticks, VideoInput
from pyegress.sources import room as room_module
from pyegress.sources.delays import (
    ARRIVAL_TIME_UNIT,
    CLEAN_LATENESS,
    CLEAN_TARGET,
    MAX_ADVANCE,
    MAX_EXCESS,
    MAX_LAG,
    OPUS_FRAME,
    REPORT_TIME_UNIT,
    SAMPLE_RATE,
    SETTLE_SECONDS,
    START_EXCESS,
    JitterDelays,
    Lateness,
)
from pyegress.sources.room import RoomSource

AUDIO = rtc.TrackKind.KIND_AUDIO


VIDEO = rtc.TrackKind.KIND_VIDEO


def _stats(target_sum: float, emitted: int) -> list[rtc.stats.RtcStats]:
    s = rtc.stats.RtcStats()
    s.inbound_rtp.inbound.jitter_buffer_target_delay = target_sum
    s.inbound_rtp.inbound.jitter_buffer_emitted_count = emitted
    other = rtc.stats.RtcStats()
    other.codec.codec.mime_type = "video/vp8"
    return [other, s]


def test_a_videos_excess_is_its_target_over_the_last_poll_beyond_a_clean_network() -> None:
    d = JitterDelays()
    assert d.excess("TR_v") == 0.0  # nothing read yet
    d._update("TR_v", VIDEO, _stats(0.059 * 15, 15))  # the first half second: 59 ms
    assert abs(d.excess("TR_v") - (0.059 - CLEAN_TARGET)) < 1e-9
    # the next 30 frames were held 180 ms each: the reading follows the latest poll only
    d._update("TR_v", VIDEO, _stats(0.059 * 15 + 0.180 * 30, 45))
    assert abs(d.excess("TR_v") - (0.180 - CLEAN_TARGET)) < 1e-9
    d._update("TR_v", VIDEO, _stats(0.059 * 15 + 0.180 * 30 + 0.010 * 30, 75))
    assert d.excess("TR_v") == 0.0  # below a clean network's floor: no correction, never negative
    d._update("TR_v", VIDEO, _stats(0.059 * 15 + 0.180 * 30 + 0.010 * 30, 75))
    assert d.excess("TR_v") == 0.0  # nothing emitted since: the last reading stands


def test_the_first_second_of_a_video_is_not_followed() -> None:
    """A video jitter buffer starts high and settles: its first second's readings move nothing."""
    d = JitterDelays()
    d._since["TR_v"] = time.monotonic()  # just watched
    d._update("TR_v", VIDEO, _stats(0.080 * 15, 15))
    assert d.excess("TR_v") == 0.0
    d._since["TR_v"] = time.monotonic() - SETTLE_SECONDS
    d._update("TR_v", VIDEO, _stats(0.080 * 15 + 0.200 * 30, 45))
    assert abs(d.excess("TR_v") - (0.200 - CLEAN_TARGET)) < 1e-9  # the poll after it


def test_a_reading_is_capped_and_forgotten_with_its_track() -> None:
    d = JitterDelays()
    d._update("TR_v", VIDEO, _stats(5.0 * 1000, 1000))
    assert d.excess("TR_v") == MAX_EXCESS
    d.forget("TR_v")
    assert d.excess("TR_v") == 0.0


T0 = 1_800_000_000.0  # the sender's first sound, on libwebrtc's (epoch) clock
BASE = 0.005  # the network's own delay


class _Receiver:
    """What NetEq's counters say of an audio track: 20 ms packets, each sent when its sound is
    complete (none in ``pause``, ``lost`` ones never arriving), arriving ``BASE`` + ``hold``
    later; the sound at sender time m played at T0 + m + the lateness read; NetEq conceals the
    pause and the lost packets."""

    def __init__(self, hold: Callable[[int], float] = lambda _: 0.0) -> None:
        self.hold, self.lost, self.pause = hold, set[int](), (1e9, 1e9)

    def sent(self, k: int) -> bool:
        return not self.pause[0] <= k * OPUS_FRAME < self.pause[1]

    def arrival(self, k: int) -> float:
        return T0 + (k + 1) * OPUS_FRAME + BASE + self.hold(k)

    def stats(self, now: float, late: float) -> rtc.stats.RtcStats:
        sent = [k for k in range(int((now - T0) / OPUS_FRAME) + 1) if self.sent(k)]
        came = [k for k in sent if self.arrival(k) <= now and k not in self.lost]
        media = now - T0 - late  # the sender time of the sound now played
        paused = max(0.0, min(media, self.pause[1]) - self.pause[0])
        lost = [k for k in self.lost if k < max(came)]
        s = rtc.stats.RtcStats()
        s.inbound_rtp.rtc.timestamp = round(now / REPORT_TIME_UNIT)
        s.inbound_rtp.received.packets_received = len(came)
        s.inbound_rtp.received.packets_lost = len(lost)
        s.inbound_rtp.inbound.last_packet_received_timestamp = self.arrival(max(came)) / ARRIVAL_TIME_UNIT
        s.inbound_rtp.inbound.total_samples_received = round(media * SAMPLE_RATE)
        s.inbound_rtp.inbound.concealed_samples = round((paused + len(lost) * OPUS_FRAME) * SAMPLE_RATE)
        return s


def _read(lateness: Lateness, rx: _Receiver, now: float, late: float) -> float | None:
    """``lateness``'s reading at ``now`` of a track whose sound is played ``late``."""
    return lateness.read(rx.stats(now, late))


def _near(reading: float | None, expected: float) -> bool:
    return reading is not None and abs(reading - expected) < 1e-3


#: What a track played this late reads: the reading's constant (in ``CLEAN_LATENESS``).
READS = OPUS_FRAME + BASE


def test_audio_lateness_is_read_from_its_first_packets_on() -> None:
    """NetEq's counters say how late the sound is from the first packets on, on a clean network
    and one holding the packets and letting them go every 200 ms (the target NetEq states stays
    at its start value for a whole second then)."""
    clean, bursty = Lateness(), Lateness()
    held = _Receiver(hold=lambda k: (-(k + 1) % 10) * OPUS_FRAME)  # let go every 200 ms
    for i in range(10):  # readings 50 ms apart from 0.3 s on
        now = T0 + 0.3 + 0.05 * i
        assert _near(_read(clean, _Receiver(), now, late=0.045), 0.045 - READS), i
        assert _near(_read(bursty, held, now, late=0.250), 0.250 - READS), i


def test_a_pause_in_sending_and_a_lost_packet_are_not_read_as_a_wait() -> None:
    lateness, rx = Lateness(), _Receiver()
    rx.lost.add(30)  # its 20 ms concealed: standing for its sound, not a wait
    assert _near(_read(lateness, rx, T0 + 0.8, late=0.045), 0.045 - READS)
    rx.pause = (1.0, 2.5)  # a mute: nothing sent for 1.5 s, concealed
    assert _near(_read(lateness, rx, T0 + 1.02, late=0.045), 0.045 - READS)  # the last packets
    for i in range(12):  # no packet since the last reading: the reading stands
        assert _near(_read(lateness, rx, T0 + 1.1 + 0.1 * i, late=0.045), 0.045 - READS), i
    # the packets after it count on from the last before it: the line starts afresh
    assert _near(_read(lateness, rx, T0 + 2.7, late=0.060), 0.060 - READS)
    assert _near(_read(lateness, rx, T0 + 2.8, late=0.060), 0.060 - READS)


def test_a_mute_keeps_the_excess_and_an_unmute_reads_afresh() -> None:
    d = JitterDelays()
    d._excess["TR_a"] = 0.150
    d._tracks["TR_a"] = object()  # type: ignore[assignment]
    d._lateness["TR_a"] = Lateness()
    d.muted("TR_a", True)
    assert "TR_a" in d._paused and d.excess("TR_a") == 0.150
    d.muted("TR_a", False)
    assert "TR_a" not in d._paused and d.excess("TR_a") == 0.150  # until the next reading
    assert time.monotonic() - d._fast_since["TR_a"] < 1.0  # read often again


def test_an_audio_tracks_excess_is_its_lateness_beyond_a_clean_networks() -> None:
    d, rx = JitterDelays(), _Receiver()
    d._update("TR_a", AUDIO, [rx.stats(T0 + 1.0, late=0.200)])
    assert abs(d.excess("TR_a") - (0.200 - READS - CLEAN_LATENESS)) < 1e-3


class _Pub:
    def __init__(self, sid: str, kind: int, source: int) -> None:
        self.sid, self.kind, self.source = sid, kind, source


class _Participant:
    def __init__(self, *pubs: _Pub) -> None:
        self.identity = "alice"
        self.track_publications = {p.sid: p for p in pubs}


class _Room:
    """Just what ``RoomSource`` reads of an ``rtc.Room`` to pair tracks (no server needed)."""

    def __init__(self, *participants: _Participant) -> None:
        self.remote_participants = {str(i): p for i, p in enumerate(participants)}
        self.handlers: dict[str, Callable[..., object]] = {}

    def on(self, event: str, handler: Callable[..., object]) -> None:
        self.handlers[event] = handler


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


def test_an_audio_tracks_first_second_is_followed_only_beyond_neteqs_start_up_swing() -> None:
    d, rx = JitterDelays(), _Receiver()
    d._since["TR_a"] = time.monotonic()  # just watched
    d._update("TR_a", AUDIO, [rx.stats(T0 + 1.0, late=0.080)])  # NetEq slowing its start down
    assert d.excess("TR_a") == 0.0
    d._update("TR_a", AUDIO, [rx.stats(T0 + 1.1, late=0.250)])  # a network holding the audio
    assert d.excess("TR_a") > START_EXCESS


def test_a_senders_mute_and_unmute_reach_the_readings() -> None:
    """The room's track_muted / track_unmuted stop and restart a track's readings."""
    mic = _Pub("TR_mic", AUDIO, rtc.TrackSource.SOURCE_MICROPHONE)
    room = _Room(_Participant(mic))
    src = RoomSource("r", room=room)  # type: ignore[arg-type]
    src.delays._tracks["TR_mic"] = object()  # type: ignore[assignment]
    src.delays._lateness["TR_mic"] = Lateness()
    room.handlers["track_muted"](None, mic)
    assert "TR_mic" in src.delays._paused
    room.handlers["track_unmuted"](None, mic)
    assert "TR_mic" not in src.delays._paused


class _Frames:
    """A video stream fed by the test: each event is a frame with its render time."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SimpleNamespace] = asyncio.Queue()

    def __aiter__(self) -> _Frames:
        return self

    async def __anext__(self) -> SimpleNamespace:
        return await self.queue.get()

    async def aclose(self) -> None:
        pass


async def test_a_pumped_camera_moves_at_once_to_a_new_lag_and_its_sound_follows_its_phase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``pump_video``: the camera's sink is the one its sound reads the shown phase of (it was
    let go of by the pump's own start until session 20, so the sound never followed it), and a
    change of the camera's lag moves its schedule at once."""
    cam = _Pub("TR_cam", VIDEO, rtc.TrackSource.SOURCE_CAMERA)
    mic = _Pub("TR_mic", AUDIO, rtc.TrackSource.SOURCE_MICROPHONE)
    src = RoomSource("r", room=_Room(_Participant(cam, mic)))  # type: ignore[arg-type]
    src._pumps["TR_mic"] = src._pumped["TR_mic"] = None  # type: ignore[assignment]
    frames = _Frames()
    monkeypatch.setattr(room_module, "video_stream", lambda _: frames)
    monkeypatch.setattr(src.delays, "watch", lambda _: None)
    track = object.__new__(rtc.RemoteVideoTrack)  # no SDK handle: the pump reads only its sid
    track._info = track_pb2.TrackInfo(sid="TR_cam", kind=track_pb2.KIND_VIDEO)
    period, start = 1 / 30, time.monotonic() - 0.3
    sink: VideoInput[object] = VideoInput(Ticks(start, 30))
    src.pump_video(track, sink)  # type: ignore[arg-type]
    assert src._video_sinks["TR_cam"] is sink
    sink.shown_after = 0.012
    assert abs(src.lag("TR_mic") - 0.012) < 1e-9  # the sound waits for the phase shown
    placed = []
    for i in range(16):
        if i == 8:  # the sound is held 150 ms longer from now on: the picture waits 50 ms
            src.delays._excess = {"TR_mic": 0.150}
        due = start + (i + 0.3) * period + room_module.RENDER_DELAY
        frame = SimpleNamespace(width=64, height=64)
        frames.queue.put_nowait(SimpleNamespace(frame=frame, timestamp_us=round(due * 1e6)))
        await asyncio.sleep(0.01)
        placed.append(sink._frames[-1][0])
    came = start + 8.3 * period + 0.150 - MAX_ADVANCE  # the first frame that waits
    shown = placed[8] + period / 2  # placed mid-slot: shown from the next tick
    assert abs(shown - came) <= period / 2 + 1e-6, "the whole wait at once, on the nearest tick"
    assert all(abs(b - a - period) < 1e-6 for a, b in itertools.pairwise(placed[8:]))
    src.stop_pump("TR_cam")
    await asyncio.sleep(0)
