"""Pause and resume against a real livekit-server and a real RTMP server (nginx-rtmp).

One recording goes to an MP4 file, HLS and RTMP at once and is paused for 1.5 s: the decoded
file and playlist leave the paused span out (markers before and after, their one-second
rhythm intact across the cut once the paused time is added back, audio in sync with the
picture after it), HLS marks the cut with a discontinuity, and the RTMP capture shows a black,
silent slate for the paused span instead.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.errors import NotSupportedError
from pyegress.testing import LiveKitServer, frame_timestamps, probe, tone_present
from pyegress.testing.checks import audio_samples, beep_onsets, flash_onsets, frame_at, luma_means
from pyegress.testing.rtmp_server import RtmpServer
from pyegress.testing.signals import MARKER_DURATION

from .helpers import SMALL, check_file_result, manifest, publisher, status, wait_active

pytestmark = pytest.mark.integration

KEY = "sk_pause_0123456789abcdef"
PAUSED = 1.5


async def test_pause_cuts_files_and_hls_and_shows_a_slate_on_rtmp(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    rtmp: RtmpServer,
    room_name: str,
    tmp_path: Path,
) -> None:
    async with publisher(livekit_server, room_name):
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="alice",
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="cut.mp4")],
            segment_outputs=[
                pe.SegmentedFileOutput(
                    filename_prefix="hls/seg", playlist_name="hls/index.m3u8", segment_duration=2
                )
            ],
            stream_outputs=[pe.StreamOutput(protocol=pe.RTMP, urls=[rtmp.url(KEY)])],
        )
        started = await service.start_participant_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        recorder = service.recorder(started.egress_id)
        with pytest.raises(pyegress.InvalidRequestError, match="fill"):
            await service.pause_egress(started.egress_id, fill="grey")  # type: ignore[arg-type]
        await asyncio.sleep(2.3)
        await service.pause_egress(started.egress_id)
        await asyncio.sleep(PAUSED)
        await service.resume_egress(started.egress_id)
        await asyncio.sleep(2.3)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    encoded = recorder.quality().outputs[0].video_frames / 30  # every tick, paused ones too

    # the manifest lists the pause in wall and media time
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    (pause,) = manifest(str(path))["pauses"]
    paused = pause["duration"]
    assert pause["fill"] == "cut" and pause["media_start"] == pause["media_end"]
    assert abs(paused - PAUSED) < 0.3 and 1.8 < pause["media_start"] < 3.5, pause
    assert pause["wall_end"] - pause["wall_start"] == pytest.approx(paused * 1e9, abs=1e6)

    # the file: recorded minus paused, markers on both sides of the cut
    assert abs(media.duration - (encoded - paused)) < 0.1, (media.duration, encoded, paused)
    cut = pause["media_start"]
    flashes, beeps = flash_onsets(path), beep_onsets(path)
    before = [f for f in flashes if f < cut - MARKER_DURATION]
    after = [f for f in flashes if f > cut + MARKER_DURATION]  # not one the resume cut in two
    assert before and len(after) >= 2, (flashes, cut)
    assert [b for b in beeps if b < cut] and len([b for b in beeps if b > cut]) >= 2, (beeps, cut)
    sync = [_nearest(beeps, f) - f for f in after]  # audio - video, after the cut
    print(f"A/V after the cut: {[f'{d * 1000:+.0f} ms' for d in sync]}")
    assert max(map(abs, sync)) <= 0.100 and abs(float(np.median(sync))) <= 0.060, sync

    # HLS: the same cut, marked with a discontinuity
    playlist = (tmp_path / "hls" / "index.m3u8").read_text()
    assert playlist.count("#EXT-X-DISCONTINUITY") == 1, playlist
    listed = sum(float(x.split(":")[1].rstrip(",")) for x in playlist.splitlines() if x.startswith("#EXTINF"))
    assert abs(listed - media.duration) < 0.3, (listed, media.duration)

    # RTMP: never cut, a black and silent slate while paused
    (flv,) = rtmp.recorded(KEY)
    live = probe(flv)
    assert abs(live.duration - media.duration - paused) < 0.3, (live.duration, media.duration)
    times, luma = luma_means(flv)
    lo, hi = _longest_run(times, luma < 20)  # black before the first frame too: the longest run
    print(f"RTMP slate {lo:.3f}..{hi:.3f} s, paused {paused:.3f} s")
    assert abs((hi - lo) - paused) < 0.15, (lo, hi, paused)
    assert lo > 1.5 and (luma[(times > lo - 1.0) & (times < lo - 0.05)] > 40).all(), "the room before"
    assert (luma[times > hi + 0.05] > 40).all(), "the room after"
    sound = audio_samples(flv)
    at = np.arange(len(sound.samples)) / sound.sample_rate
    slate = np.abs(sound.samples[(at > lo + 0.1) & (at < hi - 0.1)])
    assert slate.size and slate.max() < 0.01, "silence while paused"
    assert np.abs(sound.samples[(at > lo - 1.0) & (at < lo - 0.1)]).max() > 0.02, "sound before"
    assert np.abs(sound.samples[at > hi + 0.2]).max() > 0.02, "sound after"

    # the cut, exactly: the file's markers after it are the RTMP copy's, the paused time earlier
    # (one encode feeds both: picture and sound moved by the same whole number of frames)
    live_flashes, live_beeps = flash_onsets(flv), beep_onsets(flv)
    start = float(np.median([_nearest(live_flashes, f) - f for f in before]))  # where RTMP began
    moved = [_nearest(live_flashes, f + paused + start) - paused - start - f for f in after]
    heard = [_nearest(live_beeps, b + paused + start) - paused - start - b for b in beeps if b > cut + 0.1]
    print(f"RTMP began {start:+.3f} s; file after the cut vs RTMP: picture {_ms(moved)}, sound {_ms(heard)}")
    # the same frames: exact; the sound within an AAC frame (its onset measured in other packets
    # around it), far from the 33 ms a tick too many or too few would move it
    assert max(map(abs, moved)) <= 0.005 and max(map(abs, heard)) <= 0.020, (moved, heard)


def _ms(values: list[float]) -> list[str]:
    return [f"{d * 1000:+.0f} ms" for d in values]


def _nearest(times: list[float], t: float) -> float:
    return min(times, key=lambda x: abs(x - t))


def _longest_run(times: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """First and last time of the longest run of consecutive frames where ``mask`` holds."""
    best, start, out = 0, None, (0.0, 0.0)
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            if i - start > best:
                best, out = i - start, (float(times[start]), float(times[i - 1]))
            start = None
    return out


async def _paused_recording(
    service: pyegress.EgressService, egress_id: str, fill: str, before: float, paused: float, after: float
) -> pe.EgressInfo:
    assert status(await wait_active(service, egress_id)) == "EGRESS_ACTIVE"
    await asyncio.sleep(before)
    await service.pause_egress(egress_id, fill=fill)  # type: ignore[arg-type]
    await asyncio.sleep(paused)
    await service.resume_egress(egress_id)
    await asyncio.sleep(after)
    return await service.stop_egress(pe.StopEgressRequest(egress_id=egress_id))


def _frame(path: Path, t: float) -> np.ndarray:
    return frame_at(path, t).to_ndarray(format="gray").astype(np.int16)


async def test_a_still_slate_keeps_the_paused_span_in_a_room_composite(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, marker_interval=3600.0):
        req = pe.RoomCompositeEgressRequest(
            room_name=room_name,
            layout="grid",
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="still.mp4")],
        )
        started = await service.start_room_composite_egress(req)
        recorder = service.recorder(started.egress_id)
        info = await _paused_recording(service, started.egress_id, "still", 2.0, 1.2, 1.5)
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    (pause,) = manifest(str(path))["pauses"]
    assert pause["fill"] == "still"
    assert pause["media_end"] - pause["media_start"] == pytest.approx(pause["duration"], abs=1e-3)
    encoded = recorder.quality().outputs[0].video_frames / 30
    assert abs(media.duration - encoded) < 0.1, (media.duration, encoded)  # nothing cut
    m0, m1 = pause["media_start"], pause["media_end"]
    frozen = np.abs(_frame(path, m0 + 0.2) - _frame(path, m1 - 0.1)).mean()
    moving = np.abs(_frame(path, m0 - 0.6) - _frame(path, m0 - 0.2)).mean()
    moving_after = np.abs(_frame(path, m1 + 0.2) - _frame(path, m1 + 0.6)).mean()
    print(f"still slate: frozen {frozen:.2f}, moving {moving:.2f} / {moving_after:.2f}")
    assert frozen < 1.0 < 3.0 < min(moving, moving_after), (frozen, moving, moving_after)
    assert tone_present(path, 440.0, start=m0 - 1.0, end=m0 - 0.1)
    sound = audio_samples(path)
    at = np.arange(len(sound.samples)) / sound.sample_rate
    assert np.abs(sound.samples[(at > m0 + 0.1) & (at < m1 - 0.1)]).max() < 0.01, "silence while paused"
    assert tone_present(path, 440.0, start=m1 + 0.2, end=m1 + 1.2)


async def test_an_audio_only_recording_cuts_the_pause(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, video=False) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG, filepath="voice")],
        )
        started = await service.start_track_composite_egress(req)
        recorder = service.recorder(started.egress_id)
        info = await _paused_recording(service, started.egress_id, "cut", 2.2, 1.3, 2.2)
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert path.suffix == ".ogg"
    (pause,) = manifest(str(path))["pauses"]
    out = recorder.quality().outputs[0]
    encoded = out.audio_packets * 0.020  # 20 ms Opus packets, the paused ones too
    assert abs(media.duration - (encoded - pause["duration"])) < 0.06, (media.duration, encoded, pause)
    cut, beeps = pause["media_start"], beep_onsets(path)
    before = [b for b in beeps if b < cut - MARKER_DURATION]
    after = [b + pause["duration"] for b in beeps if b > cut + MARKER_DURATION]  # paused time back
    assert before and len(after) >= 2, (beeps, cut)
    rhythm = [abs(b - before[-1] - round(b - before[-1])) for b in after]
    print(f"audio cut: beeps after it off the rhythm by {[f'{r * 1000:.0f} ms' for r in rhythm]}")
    assert max(rhythm) < 0.030, (before, after)


@pytest.mark.parametrize("kind", ["audio", "video"])
async def test_a_passthrough_track_egress_cuts_a_pause(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, kind: str
) -> None:
    # A track egress to a file writes the sender's own frames: while paused they are dropped,
    # and the file goes on from the first frame after the resume (video: a key frame).
    async with publisher(livekit_server, room_name, video=kind == "video", audio=kind == "audio") as pub:
        sid = pub.video_track_sid if kind == "video" else pub.audio_track_sid
        req = pe.TrackEgressRequest(
            room_name=room_name, track_id=sid, file=pe.DirectFileOutput(filepath=kind)
        )
        started = await service.start_track_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        with pytest.raises(NotSupportedError, match=r"^fill: a passthrough egress .* only cut"):
            await service.pause_egress(started.egress_id, fill="black")
        await asyncio.sleep(2.2)
        await service.pause_egress(started.egress_id)
        paused_at = time.monotonic()
        await asyncio.sleep(1.5)
        await service.resume_egress(started.egress_id)
        resumed_at = time.monotonic()
        await asyncio.sleep(2.2)
        stopped_at = time.monotonic()
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert path.suffix == (".mp4" if kind == "video" else ".ogg")
    (pause,) = manifest(str(path))["pauses"]
    assert pause["fill"] == "cut" and pause["media_start"] == pause["media_end"]
    assert abs(pause["duration"] - (resumed_at - paused_at)) < 0.05, pause
    # recorded minus paused: up to the pause (the manifest's media time), then from the resume
    expected = pause["media_start"] + stopped_at - resumed_at
    print(f"FIGURES {kind}: duration {media.duration:.3f} s, recorded - paused {expected:.3f} s")
    assert abs(media.duration - expected) < 0.15, (media.duration, expected, pause)
    cut = pause["media_start"]
    markers = beep_onsets(path) if kind == "audio" else flash_onsets(path)
    before = [m for m in markers if m < cut - MARKER_DURATION]
    after = [m + pause["duration"] for m in markers if m > cut + MARKER_DURATION]  # paused time back
    assert before and len(after) >= 2, (markers, cut)
    rhythm = [b - before[-1] - round(b - before[-1]) for b in after]
    print(f"FIGURES {kind}: markers after the cut off the rhythm by {_ms(rhythm)}")
    assert max(map(abs, rhythm)) < 0.080, (before, after)
    if kind == "video":
        times = frame_timestamps(path)  # every frame decodes, in order
        assert all(b > a for a, b in itertools.pairwise(times)) and times[-1] > cut + 1.5
