"""Pause bookkeeping and sidecar documents without a server: ticks cut, packets moved, media
times, WebVTT."""

from __future__ import annotations

import dataclasses
import json
import time
from fractions import Fraction

import pytest

from pyegress import InvalidRequestError
from pyegress.media.encoder import EncodedPacket
from pyegress.pauses import FrameCut, PauseClock, check_fill
from pyegress.sidecars import Cue, Sidecars, check_kinds, render_vtt


def _clock() -> PauseClock:
    clock = PauseClock(30)
    clock.start(time.monotonic() - 10.0)  # tick 0 was 10 s ago: tick 300 is now
    clock.next_tick = 300
    return clock


def _packet(kind: str, pts: int, tb: Fraction) -> EncodedPacket:
    return EncodedPacket(kind, b"x", pts, pts, 1, tb, kind == "video")


def test_a_cut_pause_drops_its_ticks_and_moves_the_later_ones_by_whole_ticks() -> None:
    clock = _clock()
    start = clock.pause().start
    assert start >= 300 and clock.paused and clock.fill_at(start) == "cut"
    clock.next_tick = start + 45
    ended = clock.resume()
    assert ended is not None and ended.end is not None and ended.end >= start + 45
    n = ended.end - start
    assert clock.fill_at(ended.end) is None and clock.key_at(ended.end) and not clock.key_at(start)
    video, audio = Fraction(1, 30), Fraction(1, 48000)
    assert clock.cut(_packet("video", start - 1, video)) == _packet("video", start - 1, video)
    assert clock.cut(_packet("video", start + 5, video)) is None
    assert clock.cut(_packet("video", ended.end, video)) == _packet("video", start, video)
    after = clock.cut(_packet("audio", ended.end * 1600 + 7, audio))
    assert after is not None and after.pts == start * 1600 + 7 and after.dts == after.pts
    assert clock.media_tick(ended.end + 3) == ended.end + 3 - n
    (listed,) = clock.to_list()
    assert listed["media_start"] == listed["media_end"] == pytest.approx(start / 30)
    assert listed["duration"] == pytest.approx(n / 30)


def test_a_slate_pause_cuts_nothing_and_fills_are_checked() -> None:
    clock = _clock()
    clock.pause("still")
    clock.next_tick += 30
    clock.resume()
    assert clock.cut_before(10_000) == 0 and clock.fill_at(clock.pauses[0].start) == "still"
    (listed,) = clock.to_list()
    assert listed["media_end"] > listed["media_start"]  # type: ignore[operator]
    with pytest.raises(InvalidRequestError, match="fill"):
        check_fill("grey")
    with pytest.raises(InvalidRequestError, match="sidecars"):
        check_kinds(["events", "video"])


def test_frames_as_sent_lose_the_paused_span_and_keep_their_order() -> None:
    clock = PauseClock(1000)
    clock.start(time.monotonic() - 10.0)  # tick 10000 is now
    cut = FrameCut(clock)
    audio = [cut.place(k * 0.02, (k + 1) * 0.02) for k in range(50)]  # 1 s of 20 ms packets
    assert audio == pytest.approx([k * 0.02 for k in range(50)])
    pause = clock.pause()
    assert cut.place(1.0, 1.02) is None and cut.place(2.0, 2.02) is None  # paused: dropped
    # resumed 0.5 s of the clock after the last paused frame came: the file resumes at 2.5 s
    clock.pauses = (dataclasses.replace(pause, end=clock._tick_now() + 500),)
    # the first frame after the resume (a video key frame, 3.5 s) keeps its distance to the
    # resume (a gap of 1 s) and the file continues where it ended (1.5 s cut), for every stream:
    # a late frame older than the resume is dropped, later ones move by the same cut
    assert cut.place(3.5, 3.52) == pytest.approx(2.0, abs=0.01)
    assert cut.place(2.4, 2.42) is None
    assert cut.place(3.6, 3.62) == pytest.approx(2.1, abs=0.01)
    assert cut.cut == pytest.approx(1.5, abs=0.01)
    clock.pause()
    clock.resume()  # no frame came while paused: nothing cut
    assert cut.place(3.62, 3.64) == pytest.approx(2.12, abs=0.01)


def test_events_written_during_a_cut_land_on_the_cut() -> None:
    clock = _clock()
    side = Sidecars(frozenset({"events", "transcript", "chat"}), clock)
    side.note("mark", label="a")
    clock.pause()
    start = clock.pauses[0].start
    assert clock.media_time(clock.t0 + (start + 20) / 30) == pytest.approx(start / 30)
    docs = side.documents({"egress_id": "EG_x"})
    (event,) = json.loads(docs["events.json"])["events"]
    assert event["media_time"] == pytest.approx(10.0, abs=0.1) and event["label"] == "a"
    assert docs["transcript.vtt"] == "WEBVTT\n" and docs["chat.vtt"] == "WEBVTT\n"


def test_a_retry_goes_on_with_the_pause_and_the_media_clock_of_the_attempt_before() -> None:
    first = _clock()
    side = Sidecars(frozenset({"events", "chat"}), first)
    side.note("mark", label="before")
    first.pause("black")
    first.next_tick += 30  # the attempt ends while paused, its file 11 s long
    retry = PauseClock(30)
    retry.carry_on(first, continued=11.0)
    retry.start(time.monotonic() - 2.0)  # the retry's tick 0 was 2 s ago
    retry.next_tick = 60
    assert retry.paused and retry.fill_at(0) == "black", "a retry of a paused egress records nothing"
    retry.resume()
    assert retry.media_time(time.monotonic()) == pytest.approx(13.0, abs=0.05)
    earlier, later = retry.to_list()
    assert earlier == first.to_list()[0] and earlier["media_end"] == pytest.approx(11.0, abs=0.05)
    assert later["fill"] == "black" and later["media_start"] == 11.0
    assert later["media_end"] == pytest.approx(13.0, abs=0.05)
    going_on = Sidecars(frozenset({"events", "chat"}), retry, side)
    going_on.note("mark", label="after")
    going_on.chat.append((time.monotonic(), "bob", "hi"))
    docs = going_on.documents({})
    body = json.loads(docs["events.json"])
    assert [e["label"] for e in body["events"]] == ["before", "after"]
    assert [e["media_time"] for e in body["events"]] == pytest.approx([10.0, 13.0], abs=0.1)
    assert body["pauses"] == [earlier, later] and "00:00:13.0" in docs["chat.vtt"]
    fresh = PauseClock(30)
    fresh.carry_on(first, continued=None)  # a file of its own: nothing listed, still paused
    assert fresh.paused and fresh.offset == 0.0 and fresh.to_list()[0]["media_start"] == 0.0


def test_webvtt_cues_are_ordered_escaped_and_voiced() -> None:
    text = render_vtt([Cue(3661.5, 3662.0, "b <i>", "bob"), Cue(1.0, 1.0, "a & b")])
    assert text.splitlines() == [
        "WEBVTT",
        "",
        "1",
        "00:00:01.000 --> 00:00:01.040",
        "a &amp; b",
        "",
        "2",
        "01:01:01.500 --> 01:01:02.000",
        "<v bob>b &lt;i&gt;",
    ]


def test_room_events_that_come_after_the_stop_are_left_out() -> None:
    """The media ends where the recording was asked to stop: a room event that comes after
    that (a speaker change while the egress drains) is not part of the recording, one that
    came before it is, and so are the recorder's own notes."""
    side = Sidecars(frozenset({"events"}), _clock())
    side.room_event("participant_joined", participant="a")
    side.stop_at(time.monotonic())
    side.stop_at(time.monotonic() + 5)  # a later stop request moves nothing
    side.room_event("active_speakers_changed", speakers=["a"])
    side.note("resumed")
    events = json.loads(side.documents({"egress_id": "EG_x"})["events.json"])["events"]
    assert [e["type"] for e in events] == ["participant_joined", "resumed"], events
