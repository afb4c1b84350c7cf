"""Participant and track composite egress through the encoded receive path
(``receive_path="encoded"``): tracks received as sent, decoded by PyAV, placed by their RTP
time. What a user gets: every source frame once, lip sync within ±40 ms from the first marker
on, on a clean network and with the audio sent in 200 ms bursts (the SDK's receive path misses
the latter: ``tests/test_recording.py``), and the participant followed across mute, unpublish
and republish."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.errors import InvalidRequestError, NotSupportedError
from pyegress.sidecars.collect import DATA_LEAD
from pyegress.testing import LiveKitServer, av_offset, cadence, probe, tone_present

from .helpers import (
    assert_audio_was_held,
    check_file_result,
    egress_request,
    mute_then_republish,
    publisher,
    record_for,
    status,
    wait_active,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.version_info < (3, 11), reason="aiortc 1.16 (the encoded path) needs Python 3.11"),
]

SERVICE_OPTIONS = {"receive_path": "encoded"}
OUT = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1500)
#: Issue 14's goal: every marker, the first included, within this; printed and held. Measured
#: over 4 runs of this file (session 13, frames on the tick nearest to their time): -7..+10 ms
#: on a clean network, each run the same on every marker. Under 200 ms audio bursts, on the
#: relay's jittery network since session 17 (10 runs, participant and room composite tile):
#: -19..+35 ms (a bursty publisher, before: up to +49, its own audio +23 ms late). The markers
#: after an unmute: -25..-43 ms, a frame below the others of their run, until session 16; since
#: then the same as before the mute to 2 ms (5 runs). Session 19, these five tests 3 times each
#: idle and 3 times beside a busy process: every marker within -18..+28 ms (clean -1..+9,
#: bursts -6..+28, across a mute -18..+12); held for every marker since (a 60 ms floor before).
MAX_OFFSET = 0.040
#: The publishers send this long before the egress starts (their encoders' first burst).
SETTLE = 1.0


def _check_sync(path: Path, what: str) -> None:
    off = av_offset(path)
    ms = ", ".join(f"{x * 1000:+.0f}" for x in off.offsets)
    print(f"FIGURES encoded path A/V, {what} (ms, goal ±{MAX_OFFSET * 1e3:.0f} each): {ms}")
    assert off.count >= 6, off  # every marker's flash and beep are there
    assert abs(off.median) <= MAX_OFFSET, off
    assert max(abs(x) for x in off.offsets) <= MAX_OFFSET, off


@pytest.mark.parametrize("kind", ["participant", "track_composite"])
async def test_every_frame_once_and_in_sync_from_the_first_marker(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, kind: str
) -> None:
    async with publisher(livekit_server, room_name) as pub:
        await asyncio.sleep(SETTLE)
        start = getattr(service, f"start_{kind}_egress")
        t0 = time.monotonic()
        info = await record_for(service, await start(egress_request(kind, room_name, pub, OUT)), 8.0)
        wall = time.monotonic() - t0
    media = check_file_result(info)
    assert media.video is not None and media.audio is not None
    assert (media.video.width, media.video.height) == (640, 360)
    assert media.video.measured_fps is not None and abs(media.video.measured_fps - 30) < 0.5
    assert wall - 1.5 < media.duration <= wall + 0.3  # wall-clock speed: no speed-up, nothing lost
    path = Path(info.file_results[0].filename)
    c = cadence(path, source_fps=30)
    print(f"FIGURES encoded path cadence, {kind}: {c.summary()}")
    assert c.judged > 8.0 * 30 * 0.7, c.summary()
    assert c.share >= 0.98, c.summary()
    assert tone_present(path, 440.0)
    _check_sync(path, f"{kind}, clean network")
    assert "alice/camera" in info.details and "alice/microphone" in info.details  # the quality report


@pytest.mark.parametrize("kind", ["participant", "room_composite"])
async def test_audio_in_bursts_stays_in_sync_from_the_first_marker(
    bursty_server: LiveKitServer, tmp_path: Path, room_name: str, kind: str
) -> None:
    # The network holds the audio and lets it go every 200 ms (a relay between the clients and
    # the server; the sender steady): through the SDK the first marker misses by 208-226 ms
    # (tests/test_recording.py); placed by RTP time it lines up from the start.
    async with (
        pyegress.EgressService(bursty_server.url, bursty_server.api_key, bursty_server.api_secret,
                               output_dir=tmp_path, receive_path="encoded") as service,
        publisher(bursty_server, room_name) as pub,
    ):  # fmt: skip
        if kind == "participant":
            req = egress_request("participant", room_name, pub, OUT, "bursts")
            started = await service.start_participant_egress(req)  # type: ignore[arg-type]
        else:  # one tile filling the canvas: its markers are the picture's
            started = await service.start_room_composite_egress(pe.RoomCompositeEgressRequest(
                room_name=room_name, layout="grid", advanced=OUT,
                file_outputs=[pe.EncodedFileOutput(filepath="bursts.mp4")]))  # fmt: skip
            source = service.recorder(started.egress_id).source  # type: ignore[attr-defined]
            assert type(source).__name__ == "EncodedRoomSource"
        info = await record_for(service, started, 8.0)
    check_file_result(info)
    assert_audio_was_held(bursty_server, 8.0)
    _check_sync(Path(info.file_results[0].filename), f"{kind}, 200 ms audio bursts")


async def test_participant_followed_across_mute_unpublish_republish_until_they_leave(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    pub = publisher(livekit_server, room_name)
    await pub.start()
    req = pe.ParticipantEgressRequest(
        room_name=room_name,
        identity="alice",
        advanced=OUT,
        file_outputs=[pe.EncodedFileOutput(filepath="p.mp4")],
    )
    started = await service.start_participant_egress(req)
    assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
    t0 = time.monotonic()
    await mute_then_republish(pub, ("video", "audio"), after=3)
    await pub.stop()  # the participant leaves: the egress ends by itself
    info = await service.wait_egress(started.egress_id, timeout=15)
    wall = time.monotonic() - t0
    media = check_file_result(info)
    assert media.video is not None and media.audio is not None
    assert wall - 1.5 < media.duration < wall + 1.0, (media.duration, wall)
    assert info.details.startswith("End reason: Source closed") and "left" in info.details
    path = Path(info.file_results[0].filename)
    off = av_offset(path)
    print(
        f"FIGURES encoded path A/V across mute and republish (ms): {[round(x * 1000) for x in off.offsets]}"
    )
    # markers before the mute and after the republish (new tracks, new clocks), all in sync
    assert off.count >= 5, off
    assert abs(off.median) <= MAX_OFFSET, off
    # the marker after an unmute was a frame below the others (-25..-56 ms) until session 16: a
    # resumed track's line now starts afresh (sources/encoded/decode.py ArrivalLine)
    assert max(abs(x) for x in off.offsets) <= MAX_OFFSET, off
    late = [t for t in off.paired_flashes if t > 6.5]
    assert late, off  # the republished tracks were recorded


async def test_the_encoded_path_is_refused_where_it_cannot_run(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    with pytest.raises(InvalidRequestError, match="receive_path"):
        pyegress.EgressService(livekit_server.url, "k", "s", receive_path="webrtc")
    async with publisher(livekit_server, room_name) as pub:
        from livekit import rtc

        room = rtc.Room()  # never connected: refused before it is used
        req = egress_request("participant", room_name, pub, OUT, "own")
        with pytest.raises(NotSupportedError, match="receive_path"):
            await service.start_participant_egress(req, room=room)  # type: ignore[arg-type]


async def test_the_events_sidecar_follows_the_room_through_the_signaling(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    """The encoded path has no rtc.Room: the events sidecar's room events come from its
    signaling as an rtc.Room's would: who was there, joins and leaves, mute and unmute, and
    the active speakers (the publishers' tone)."""
    async with (
        pyegress.EgressService(livekit_server.url, livekit_server.api_key, livekit_server.api_secret,
                               output_dir=service.output_dir, sidecars=("events",)) as svc,
        publisher(livekit_server, room_name) as pub,
    ):  # fmt: skip
        started = await svc.start_participant_egress(egress_request("participant", room_name, pub, OUT, "ev"))
        assert status(await wait_active(svc, started.egress_id)) == "EGRESS_ACTIVE"
        assert type(svc.recorder(started.egress_id)).__name__ == "DecodedRecorder"  # the default path
        async with publisher(livekit_server, room_name, identity="bob") as bob:
            bobs_tracks = {bob.video_track_sid, bob.audio_track_sid}
            await asyncio.sleep(1.5)
        await pub.mute("video")
        await asyncio.sleep(1.0)
        await pub.unmute("video")
        await asyncio.sleep(1.0)
        info = await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    check_file_result(info)
    doc = json.loads(Path(f"{info.file_results[0].filename}.events.json").read_text())
    events = [e for e in doc["events"] if e["type"] not in ("paused", "resumed")]
    print("FIGURES events:", [(e["type"], e.get("participant"), e.get("source")) for e in events])

    def of(kind: str, **match: object) -> list[dict[str, object]]:
        return [e for e in events if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]

    present = of("participant_present", participant="alice")
    assert len(present) == 1 and present[0]["participant_kind"] == "standard", events
    assert {e["source"] for e in of("track_present", participant="alice")} == {"camera", "microphone"}
    joined, left = of("participant_joined", participant="bob"), of("participant_left", participant="bob")
    assert len(joined) == 1 and len(left) == 1 and joined[0]["media_time"] < left[0]["media_time"]
    bobs = of("track_published", participant="bob")
    assert {e["track_sid"] for e in bobs} == bobs_tracks and None not in bobs_tracks, bobs
    muted = of("track_muted", participant="alice", source="camera")
    unmuted = of("track_unmuted", participant="alice", source="camera")
    assert len(muted) == 1 and len(unmuted) == 1, events
    assert 0.7 < float(unmuted[0]["media_time"]) - float(muted[0]["media_time"]) < 1.5  # type: ignore[arg-type]
    speakers = of("active_speakers_changed")
    assert any("alice" in e["speakers"] for e in speakers), speakers  # type: ignore[operator]
    times = [float(e["media_time"]) for e in events]  # type: ignore[arg-type]
    # on the recording's media clock, in the order they came, none that came after the stop (a
    # speaker change that came while the egress stopped once landed 87 ms past its last frame):
    # the last may be placed up to DATA_LEAD past the file's end, where its media would be
    assert times == sorted(times) and times[0] >= 0, times
    end = probe(info.file_results[0].filename).duration + DATA_LEAD
    assert times[-1] <= end, (times[-1], end, events[-1])
