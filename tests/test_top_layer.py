"""A simulcast track's encoded frames start on its top layer's key frame: the frames of a lower
layer's key frame are held while the top one may still come, and handed on when it does not."""

from __future__ import annotations

import struct
import sys
from types import SimpleNamespace
from typing import Any

import pytest

if sys.version_info < (3, 11):  # aiortc 1.16 needs Python 3.11; on 3.10 there is no encoded path
    pytest.skip("aiortc 1.16 is installed on Python 3.11 and later only", allow_module_level=True)

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from pyegress.media.encoded import EncodedFrame
from pyegress.sources.encoded import subscriber as sub_module
from pyegress.sources.encoded.subscriber import TOP_LAYER_WAIT, EncodedSubscriber, _Receiving

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def key(w: int, h: int) -> bytes:
    """A VP8 key frame's header of a ``w`` x ``h`` picture."""
    return b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", w, h)


INTER = b"\x01\x00\x00"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(sub_module, "time", c)
    monkeypatch.setattr(sub_module.compat, "request_keyframe", lambda receiver: None)  # no PLI sent
    return c


def receiving(top: tuple[int, int] | None) -> tuple[_Receiving, list[EncodedFrame]]:
    got: list[EncodedFrame] = []
    r = _Receiving(got.append, "video")
    r.top = top
    return r, got


def feed(r: _Receiving, clock: Clock, frames: list[tuple[float, bytes]]) -> None:
    sub: Any = EncodedSubscriber.__new__(EncodedSubscriber)  # no connection: _frame only
    tr = SimpleNamespace(receiver=None)
    for n, (at, data) in enumerate(frames):
        clock.now = 100.0 + at
        sub._frame(tr, r, VP8, data, 3000 * n, clock.now)  # its last packet came as handed on


def test_the_top_layers_key_frame_starts_the_track_and_the_lower_one_held_is_dropped(clock: Clock) -> None:
    r, got = receiving((640, 360))
    feed(r, clock, [(0.0, key(320, 180)), (0.03, INTER), (0.5, key(640, 360)), (0.53, INTER)])
    assert [(f.keyframe, f.rtp) for f in got] == [(True, 6000), (False, 9000)]
    assert got[0].arrived == 100.5 and not r.need_key and not r.held


def test_without_the_top_layer_the_lower_one_is_handed_on_from_its_key_frame(clock: Clock) -> None:
    r, got = receiving((640, 360))
    late = TOP_LAYER_WAIT + 0.1
    feed(r, clock, [(0.0, INTER), (0.1, key(320, 180)), (0.2, INTER), (late, INTER), (late + 0.03, INTER)])
    # nothing before the key frame, everything from it on, each with when it came
    assert [(f.keyframe, f.rtp, f.arrived) for f in got] == [
        (True, 3000, 100.1), (False, 6000, 100.2), (False, 9000, 100 + late),
        (False, 12000, 100 + late + 0.03),
    ]  # fmt: skip
    assert not r.need_key and not r.held


def test_a_track_without_layers_starts_on_its_first_key_frame(clock: Clock) -> None:
    r, got = receiving(None)
    feed(r, clock, [(0.0, key(320, 180)), (0.03, INTER)])
    assert [f.keyframe for f in got] == [True, False]


class Signal:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, request: Any) -> None:
        self.sent.append(request)


def subscribed(top_first: bool) -> tuple[_Receiving, list[EncodedFrame]]:
    """A simulcast camera (640x360 over 320x180) subscribed as a recorder of ``top_first``."""
    from livekit.protocol import models as pm

    from pyegress.sources.encoded.subscriber import RemoteTrack

    layers = [pm.VideoLayer(quality=pm.VideoQuality.LOW, width=320, height=180),
              pm.VideoLayer(quality=pm.VideoQuality.HIGH, width=640, height=360)]  # fmt: skip
    info = pm.TrackInfo(
        sid="TR_v", type=pm.TrackType.VIDEO, simulcast=True, width=640, height=360, layers=layers
    )
    sub: Any = EncodedSubscriber.__new__(EncodedSubscriber)  # no connection: what subscribe sets
    sub._receiving, sub._signal = {}, Signal()
    got: list[EncodedFrame] = []
    sub.subscribe(RemoteTrack("TR_v", "p", "PA_p", info), got.append, top_first=top_first)
    return sub._receiving["TR_v"], got


def test_a_decoded_recording_starts_on_the_layer_that_comes_and_goes_on_to_the_top_one(clock: Clock) -> None:
    # a composite scales any layer to its tile: the lower layer's picture at once, not a
    # placeholder until the top layer's key frame (or TOP_LAYER_WAIT) comes
    r, got = subscribed(top_first=False)
    feed(r, clock, [(0.0, key(320, 180)), (0.05, INTER), (1.0, key(640, 360)), (1.03, INTER)])
    assert [(f.keyframe, f.rtp, f.arrived) for f in got] == [
        (True, 0, 100.0), (False, 3000, 100.05), (True, 6000, 101.0), (False, 9000, 101.03),
    ]  # fmt: skip


def test_a_recording_written_as_sent_still_waits_for_the_top_layer(clock: Clock) -> None:
    r, got = subscribed(top_first=True)
    feed(r, clock, [(0.0, key(320, 180)), (0.05, INTER), (1.0, key(640, 360)), (1.03, INTER)])
    assert [(f.keyframe, f.rtp) for f in got] == [(True, 6000), (False, 9000)]


def test_an_unmute_marks_the_first_frame_that_came_after_it_not_one_held_from_before(clock: Clock) -> None:
    """aiortc holds the last Opus packets before a mute until packets come again: handed on
    after the unmute, they came before it and are not the resumed track's first frame (marked,
    one started the line afresh on the muted sender's clock: the marker after an unmute 22 ms
    early)."""
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, payloadType=111)
    got: list[EncodedFrame] = []
    r = _Receiving(got.append, "audio")
    sub: Any = EncodedSubscriber.__new__(EncodedSubscriber)
    tr = SimpleNamespace(receiver=None)
    r.resumed_at = 105.0  # the unmute, signalled
    clock.now = 105.1  # handed on now: two held from before the mute, then two that came since
    for n, came in enumerate((101.96, 101.98, 105.08, 105.10)):
        sub._frame(tr, r, opus, b"\xf8\xff\xfe", 960 * n, came)
    assert [f.resumed for f in got] == [False, False, True, False]
    assert r.resumed_at is None
