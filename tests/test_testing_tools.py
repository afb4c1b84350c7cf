"""Integration tests for pyegress.testing: the server, the publisher and the file checks."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from livekit import api, rtc

from pyegress.testing import (
    LiveKitServer,
    PatternGenerator,
    SyntheticPublisher,
    ToneGenerator,
    av_offset,
    dominant_frequencies,
    frame_timestamps,
    moving_pairs,
    picture_moves,
    probe,
    region_color,
    tone_present,
)
from pyegress.testing.checks import audio_samples, beep_onsets

SR = 48000


def write_reference(
    path: Path,
    *,
    seconds: float = 4.0,
    audio_shift: float = 0.080,
    width: int = 320,
    height: int = 180,
    fps: int = 30,
    color: tuple[int, int, int] | None = None,
    vcodec: str = "libx264",
    acodec: str = "aac",
) -> None:
    """Encode the synthetic signals; audio is delayed by ``audio_shift`` seconds."""
    pattern = PatternGenerator(width, height, fps, color=color)
    tone = ToneGenerator(SR)
    shift = round(audio_shift * SR)
    with av.open(str(path), "w") as c:
        vs = c.add_stream(vcodec, rate=fps)
        assert isinstance(vs, av.VideoStream)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"profile": "main", "preset": "veryfast"} if vcodec == "libx264" else {}
        as_ = c.add_stream(acodec, rate=SR, layout="mono")
        assert isinstance(as_, av.AudioStream)
        for k in range(int(seconds * fps)):
            vf = av.VideoFrame.from_ndarray(pattern.frame(k), format="yuv420p")
            vf.pts, vf.time_base = k, Fraction(1, fps)
            c.mux(vs.encode(vf))
        chunk = 960
        for n0 in range(0, int(seconds * SR), chunk):
            s = tone.samples(n0 - shift, chunk)
            af = av.AudioFrame.from_ndarray(s[None, :], format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = SR, n0, Fraction(1, SR)
            c.mux(as_.encode(af))
        c.mux(vs.encode(None))
        c.mux(as_.encode(None))


# ----------------------------------------------------------------------------- offline
@pytest.mark.parametrize(
    ("ext", "vcodec", "acodec", "codec_name", "audio_name"),
    [("mp4", "libx264", "aac", "h264", "aac"), ("webm", "libvpx", "libopus", "vp8", "opus")],
)
def test_checks_on_reference_file(
    tmp_path: Path, ext: str, vcodec: str, acodec: str, codec_name: str, audio_name: str
) -> None:
    path = tmp_path / f"ref.{ext}"
    write_reference(path, vcodec=vcodec, acodec=acodec)

    info = probe(path)
    assert info.video is not None and info.audio is not None
    assert info.video.codec == codec_name
    assert (info.video.width, info.video.height) == (320, 180)
    assert info.video.frame_count == 120
    assert info.video.measured_fps == pytest.approx(30.0, rel=0.01)
    assert info.video.duration == pytest.approx(4.0, abs=0.05)
    if codec_name == "h264":
        assert info.video.profile == "Main"
        assert info.video.average_rate == pytest.approx(30.0, rel=0.01)
    assert info.audio.codec == audio_name
    assert (info.audio.sample_rate, info.audio.channels) == (SR, 1)
    assert info.audio.duration == pytest.approx(4.0, abs=0.1)
    assert info.duration == pytest.approx(4.0, abs=0.15)
    assert info.size == path.stat().st_size
    size = f"{info.size / 1e3:.0f} kB"  # the reference files are tens of kB
    assert info.summary() == f"{info.duration:.1f} s  {size}  {codec_name} 320x180@30 + {audio_name} 48 kHz"

    ts = np.diff(frame_timestamps(path))
    assert np.allclose(ts, 1 / 30, atol=1e-3)

    off = av_offset(path)
    assert off.count == 3  # markers at 1, 2, 3 s
    assert off.median == pytest.approx(0.080, abs=0.010)
    assert off.spread < 0.010

    assert picture_moves(path)
    assert tone_present(path, 440) and tone_present(path, 1000)
    assert not tone_present(path, 3000)
    assert {round(f, -1) for f in dominant_frequencies(path, 2)} == {440.0, 1000.0}


def test_moving_pairs_leaves_out_what_comes_before_after(tmp_path: Path) -> None:
    """A picture still for its first second, then moving: a third of the pairs still over the
    whole file, none from ``after`` on, and nothing to compare past its end."""
    path, fps = tmp_path / "starts-late.mp4", 30
    pattern = PatternGenerator(320, 180, fps, marker_interval=0.0)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        assert isinstance(vs, av.VideoStream)
        vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
        for k in range(3 * fps):
            vf = av.VideoFrame.from_ndarray(pattern.frame(max(k, fps)), format="yuv420p")
            vf.pts, vf.time_base = k, Fraction(1, fps)
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
    whole = moving_pairs(path)
    assert whole == pytest.approx(60 / 89, abs=0.02), whole
    assert moving_pairs(path, after=1.0) == pytest.approx(1.0, abs=0.02)
    assert moving_pairs(path, after=5.0) is None
    assert not picture_moves(path, min_moving_pairs=0.9)
    assert picture_moves(path, min_moving_pairs=0.9, after=1.0)


def test_checks_static_colour(tmp_path: Path) -> None:
    path = tmp_path / "static.mp4"
    write_reference(path, color=(200, 40, 40), audio_shift=-0.030)
    assert not picture_moves(path)
    r, g, b = region_color(path, 0.5, box=(40, 40, 280, 140))
    assert abs(r - 200) <= 6 and abs(g - 40) <= 6 and abs(b - 40) <= 6
    r, g, b = region_color(path, 2.03)  # inside the 2 s flash
    assert min(r, g, b) > 240
    assert av_offset(path).median == pytest.approx(-0.030, abs=0.010)


def test_beeps_of_a_long_file_read_in_windows(tmp_path: Path) -> None:
    """Minute windows join without losing or doubling a beep (markers at 60 and 120 s sit on their edges)."""
    path = tmp_path / "long.mp4"
    write_reference(path, seconds=150.0, width=64, height=36, fps=10)
    whole = beep_onsets(audio_samples(path))
    windowed = beep_onsets(path)
    assert len(windowed) == len(whole) == 149  # markers at 1 .. 149 s
    assert np.allclose(windowed, whole, atol=1e-4)
    off = av_offset(path)
    assert off.count == 149
    assert off.paired_flashes == off.flash_times
    assert max(abs(o - 0.080) for o in off.offsets) < 0.010


# ----------------------------------------------------------------------------- server
@pytest.mark.integration
async def test_server_api_answers(livekit_server: LiveKitServer, room_name: str) -> None:
    lk = api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret)
    try:
        await lk.room.create_room(api.CreateRoomRequest(name=room_name))
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
        assert room_name in [r.name for r in rooms.rooms]
        await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))
    finally:
        await lk.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_publisher_reaches_subscriber(
    livekit_server: LiveKitServer, room_name: str, codec: str
) -> None:
    sub = rtc.Room()
    lumas: list[float] = []
    sizes: list[tuple[int, int]] = []
    peaks: list[int] = []
    readers: list[asyncio.Task[None]] = []
    kinds: dict[str, str] = {}

    async def read_video(track: rtc.RemoteVideoTrack) -> None:
        async for ev in rtc.VideoStream(track):
            f = ev.frame.convert(rtc.VideoBufferType.I420)
            sizes.append((f.width, f.height))
            y = np.frombuffer(f.data, np.uint8)[: f.width * f.height]
            lumas.append(float(y.mean()))

    async def read_audio(track: rtc.RemoteAudioTrack) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=SR, num_channels=1):
            peaks.append(int(np.abs(np.frombuffer(ev.frame.data, np.int16)).max()))

    @sub.on("track_subscribed")
    def _on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, part: rtc.RemoteParticipant) -> None:
        kinds[pub.sid] = "video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio"
        if isinstance(track, rtc.RemoteVideoTrack):
            readers.append(asyncio.create_task(read_video(track)))
        elif isinstance(track, rtc.RemoteAudioTrack):
            readers.append(asyncio.create_task(read_audio(track)))

    await sub.connect(livekit_server.url, livekit_server.token("rec", room_name, hidden=True))
    try:
        async with SyntheticPublisher(
            livekit_server.url,
            livekit_server.token("alice", room_name),
            video_codec=codec,  # type: ignore[arg-type]
        ) as pub:
            assert pub.identity == "alice"
            await asyncio.sleep(3.5)
            assert pub.video_track_sid and pub.audio_track_sid
            assert kinds == {pub.video_track_sid: "video", pub.audio_track_sid: "audio"}
    finally:
        for t in readers:
            t.cancel()
        await sub.disconnect()

    assert len(sizes) > 45, "expected >1.5 s of 30 fps video"
    # When the publisher leaves, WebRTC may deliver a final tiny (2x2) black frame: use the
    # most common size.
    values, counts = np.unique(np.asarray(sizes), axis=0, return_counts=True)
    w, h = (int(v) for v in values[int(np.argmax(counts))])
    assert abs(w - 640) <= 16 and abs(h - 360) <= 16
    assert max(lumas) > 200 > float(np.median(lumas))  # saw a flash
    assert len(peaks) > 150  # > 1.5 s of 10 ms frames
    assert max(peaks) > 10000 and 500 < float(np.median(peaks)) < 5000  # beeps over the tone
