"""A lost room: livekit-server killed (SIGKILL) mid-recording, restarted on the same port or not.

Each test runs its own livekit-server (the session's shared one must never be killed); the
recordings are decoded: the gap is a held frame and silence, picture and sound go on after it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
from livekit import rtc
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer, SyntheticPublisher, netns, probe, tone_present
from pyegress.testing.checks import audio_samples, luma_means

from .helpers import NO_MARKERS, manifest, publisher, status, wait_active

pytestmark = pytest.mark.integration

SMALL = pe.EncodingOptions(width=320, height=180, framerate=30, video_bitrate=600)
KILLED_FOR = 4.0


@pytest.fixture
async def server() -> AsyncIterator[LiveKitServer]:
    """A livekit-server of this test's own, to kill and restart."""
    if netns.current() is None:
        pytest.fail("run inside the tests' network namespace (python -m pyegress.testing.netns)")
    async with LiveKitServer() as srv:
        yield srv


def _service(srv: LiveKitServer, out: Path, **kw: object) -> pyegress.EgressService:
    return pyegress.EgressService(srv.url, srv.api_key, srv.api_secret, output_dir=out, **kw)  # type: ignore[arg-type]


def _request(room: str, pub: SyntheticPublisher, **outputs: object) -> pe.TrackCompositeEgressRequest:
    return pe.TrackCompositeEgressRequest(
        room_name=room,
        audio_track_id=pub.audio_track_sid,
        video_track_id=pub.video_track_sid,
        advanced=SMALL,
        **outputs,  # type: ignore[arg-type]
    )


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.1)


def _media_flowing(svc: pyegress.EgressService, egress_id: str) -> bool:
    """The recorder is in the room again with both tracks subscribed (and, on the encoded
    path, their frames coming)."""
    recorder = svc.recorder(egress_id)
    source = getattr(recorder, "source", None)
    for holder in (recorder, source):  # the encoded path's (aiortc is not imported on 3.10)
        if hasattr(holder, "receiving"):
            return len(holder.receiving()) == 2
    room = recorder.source.room  # type: ignore[attr-defined]
    pubs = [pub for p in room.remote_participants.values() for pub in p.track_publications.values()]
    return (
        room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        and len(pubs) == 2
        and all(pub.track is not None for pub in pubs)
    )


def _motion(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(times, changed fraction of each frame against the one before) over ``paths`` played in order."""
    times, changed, prev, offset = [], [], None, 0.0
    for path in paths:
        with av.open(str(path)) as c:
            last = 0.0
            for f in c.decode(c.streams.video[0]):
                y = f.to_ndarray(format="gray")[::2, ::2].astype(np.int16)
                t = float(f.time or 0.0)
                if prev is not None and prev.shape == y.shape:
                    times.append(offset + t)
                    changed.append(np.count_nonzero(np.abs(y - prev) > 10) / y.size)
                prev, last = y, t
        offset += last + 1 / 30
    return np.asarray(times), np.asarray(changed)


def _longest_still(times: np.ndarray, changed: np.ndarray) -> tuple[float, float]:
    """The longest run of frames identical to the one before: (start, end) in seconds."""
    best, start = (0.0, 0.0), None
    for t, c in zip(times, changed, strict=True):
        if c < 0.002:
            start = t if start is None else start
            if t - start > best[1] - best[0]:
                best = (start, t)
        else:
            start = None
    return best


def _moves(times: np.ndarray, changed: np.ndarray, start: float, end: float) -> bool:
    window = changed[(times >= start) & (times < end)]
    return window.size > 20 and float(np.mean(window >= 0.02)) > 0.5


def _rms(path: Path, start: float, end: float) -> float:
    audio = audio_samples(path)
    a = int((start - audio.start) * audio.sample_rate)
    b = int((end - audio.start) * audio.sample_rate)
    return float(np.sqrt(np.mean(np.square(audio.samples[a:b])))) if b > a else 0.0


@pytest.mark.parametrize("kind", ["track_composite", "room_composite"])
@pytest.mark.parametrize("receive_path", ["sdk", "encoded"])
async def test_server_restarted_mid_recording_continues_the_same_file(
    server: LiveKitServer, tmp_path: Path, room_name: str, receive_path: str, kind: str
) -> None:
    """The same attempt goes on: the SDK rejoins by itself; the encoded path joins again as a
    new session and takes the tracks back (new sids) as a republish, for a track composite
    and for a room composite (whose tile and voice come back to the same participant)."""
    svc = _service(server, tmp_path, wait_timeout=8.0, receive_path=receive_path)
    async with svc, publisher(server, room_name, width=320, height=180) as pub:
        out = {"file_outputs": [pe.EncodedFileOutput(filepath="rec.mp4")]}
        if kind == "track_composite":
            started = await svc.start_track_composite_egress(_request(room_name, pub, **out))
        else:
            req = pe.RoomCompositeEgressRequest(room_name=room_name, layout="grid", advanced=SMALL, **out)
            started = await svc.start_room_composite_egress(req)
        active = await wait_active(svc, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        await _until(lambda: _media_flowing(svc, started.egress_id), 10, "media flowing")
        t_active = time.monotonic()
        await asyncio.sleep(4.0)
        await asyncio.to_thread(server.kill)
        t_kill = time.monotonic()
        await asyncio.sleep(KILLED_FOR)
        await asyncio.to_thread(server.restart)
        assert status((await svc.list_egress(pe.ListEgressRequest())).items[0]) == "EGRESS_ACTIVE"
        await _until(lambda: _media_flowing(svc, started.egress_id), 20, "media back after the restart")
        t_back = time.monotonic()
        await asyncio.sleep(4.0)
        info = await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        t_stop = time.monotonic()
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert not info.error and info.retry_count == 0
    assert len(info.file_results) == 1
    path = Path(info.file_results[0].filename)
    media = probe(path)
    assert media.video is not None and media.audio is not None
    # a room composite is active (its background recorded) before the tracks come: ~0.3 s more
    assert abs(media.duration - (t_stop - t_active)) < 1.0 + 0.5 * (kind != "track_composite"), (
        media.duration, t_stop - t_active)  # fmt: skip
    start = media.duration - (t_stop - t_active)  # t_active on the file's timeline
    times, changed = _motion([path])
    still = _longest_still(times, changed)
    # the gap: from the kill until the media came back, the last frame held
    assert still[1] - still[0] >= KILLED_FOR, still
    assert abs(still[0] - start - (t_kill - t_active)) < 1.0, (still, start, t_kill - t_active)
    assert still[1] <= start + t_back - t_active + 1.0, (still, start, t_back - t_active)
    assert _moves(times, changed, start + 0.5, still[0] - 0.3), "picture before the gap"
    assert _moves(times, changed, still[1] + 0.5, media.duration), "picture after the gap"
    assert tone_present(path, 440, start=start + 0.5, end=still[0] - 0.3), "sound before the gap"
    # silence while the server was down (the sound comes back before the picture, which waits
    # for a key frame)
    assert _rms(path, still[0] + 0.5, still[0] + KILLED_FOR - 0.5) < 1e-3, "silence in the gap"
    assert tone_present(path, 440, start=still[1] + 0.5, end=media.duration - 0.2), "sound after the gap"


@pytest.mark.parametrize("receive_path", ["sdk", "encoded"])
async def test_server_gone_for_good_fails_with_the_file_recorded_so_far(
    server: LiveKitServer, tmp_path: Path, room_name: str, receive_path: str
) -> None:
    """The SDK path: no bound of ours (reconnect_timeout > the SDK's), the SDK gives up and
    says so. The encoded path joins again until reconnect_timeout has passed, and says so."""
    bound = 60.0 if receive_path == "sdk" else 8.0
    svc = _service(server, tmp_path, max_retries=0, reconnect_timeout=bound, receive_path=receive_path)
    async with svc, publisher(server, room_name, width=320, height=180) as pub:
        req = _request(room_name, pub, file_outputs=[pe.EncodedFileOutput(filepath="rec.mp4")])
        started = await svc.start_track_composite_egress(req)
        active = await wait_active(svc, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        t_active = time.monotonic()
        await asyncio.sleep(4.0)
        await asyncio.to_thread(server.kill)
        t_kill = time.monotonic()
        info = await svc.wait_egress(started.egress_id, timeout=45)
        given_up = time.monotonic() - t_kill
    assert status(info) == "EGRESS_FAILED"
    assert "connection to room" in info.error and "lost and not regained" in info.error, info.error
    if receive_path == "sdk":
        assert "UNKNOWN_REASON" in info.error, info.error  # the SDK's DisconnectReason after its attempts
        assert given_up < 40, given_up
    else:
        assert "within reconnect_timeout (8 s)" in info.error, info.error
        assert bound <= given_up < bound + 4, given_up
    res = info.file_results[0]
    path = Path(res.filename)
    assert res.size == path.stat().st_size > 0
    media = probe(path)
    assert media.video is not None and media.audio is not None
    # what was recorded: the 4 s before the kill, then the gap until the SDK gave up
    assert media.duration >= t_kill - t_active - 0.5, (media.duration, t_kill - t_active)
    assert abs(res.duration / 1e9 - media.duration) < 0.25
    times, changed = _motion([path])
    assert _moves(times, changed, 0.5, t_kill - t_active - 0.5)
    assert tone_present(path, 440, start=0.5, end=t_kill - t_active - 0.5)


def _decoded(path: Path) -> tuple[int, int]:
    """Video and audio frames decoded from ``path`` (a decoding error raises)."""
    counts = {"video": 0, "audio": 0}
    with av.open(str(path)) as c:
        for frame in c.decode(*c.streams.video, *c.streams.audio):
            counts["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    return counts["video"], counts["audio"]


def _playlist(path: Path) -> tuple[str, list[Path]]:
    text = path.read_text()
    return text, [path.parent / line for line in text.splitlines() if line and not line.startswith("#")]


async def test_retry_after_a_restart_continues_the_same_hls_playlist(
    server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    """Our bound (reconnect_timeout 2 s) gives up before the server is back: the egress fails
    for a transient reason and its retry rejoins the restarted server's room."""
    async with _service(server, tmp_path, wait_timeout=20.0, reconnect_timeout=2.0) as svc:
        seen: list[pe.EgressInfo] = []
        svc.listen(seen.append)
        async with publisher(server, room_name, width=320, height=180) as pub:
            segments = pe.SegmentedFileOutput(filename_prefix="hls/seg", playlist_name="hls/index.m3u8",
                                              segment_duration=2)  # fmt: skip
            started = await svc.start_track_composite_egress(
                _request(room_name, pub, segment_outputs=[segments])
            )
            active = await wait_active(svc, started.egress_id)
            assert status(active) == "EGRESS_ACTIVE", active.error
            await asyncio.sleep(5.0)
            await asyncio.to_thread(server.kill)
            await _until(lambda: any(i.retry_count == 1 for i in seen), 15, "the retry starting")
            await asyncio.sleep(KILLED_FOR)
            await asyncio.to_thread(server.restart)
            await _until(
                lambda: seen[-1].retry_count == 1 and seen[-1].status == pe.EGRESS_ACTIVE,
                30,
                "the retry active",
            )
            await _until(lambda: _media_flowing(svc, started.egress_id), 20, "media back after the retry")
            await asyncio.sleep(5.0)
            info = await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert info.retry_count == 1
    assert info.egress_id == started.egress_id
    # the listener saw the attempt end and the retry start, never a terminal status in between
    statuses = [pe.EgressStatus.Name(i.status) for i in seen]
    assert "EGRESS_FAILED" not in statuses, statuses
    retry_at = next(k for k, i in enumerate(seen) if i.retry_count == 1)
    assert statuses[retry_at] == "EGRESS_STARTING" and "connection to room" in seen[retry_at].details
    assert len(info.segment_results) == 1
    playlist = tmp_path / "hls" / "index.m3u8"
    text, files = _playlist(playlist)
    assert text.count("#EXT-X-DISCONTINUITY") == 1 and text.rstrip().endswith("#EXT-X-ENDLIST"), text
    before, after = text.split("#EXT-X-DISCONTINUITY")
    first = [f for f in files if f.name in before]
    later = [f for f in files if f.name in after]
    assert len(first) >= 2 and len(later) >= 2, text
    assert [f.name for f in files] == [f"seg_{i:05d}.ts" for i in range(len(files))], "numbering goes on"
    assert info.segment_results[0].segment_count == len(files)
    durations = [float(x) for x in re.findall(r"#EXTINF:([0-9.]+),", text)]
    assert abs(info.segment_results[0].duration / 1e9 - sum(durations)) < 0.1
    for f in files:  # every segment decodes, with picture and sound
        video, audio = _decoded(f)
        assert video > 10 and audio > 10, (f, video, audio)
    times, changed = _motion(later)
    assert _moves(times, changed, 0.0, times[-1]), "picture after the retry"
    assert tone_present(later[-1], 440), "sound after the retry"


async def test_retry_after_a_restart_continues_the_same_mp4_file(
    server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    """As the HLS retry above, with file outputs: ``rec.mp4`` goes on in the same file (one
    result, both attempts' picture and sound, a timeline without a hole), while ``rec_{retry}``
    asked for a file per attempt and gets two."""
    async with _service(server, tmp_path, wait_timeout=20.0, reconnect_timeout=2.0) as svc:
        seen: list[pe.EgressInfo] = []
        svc.listen(seen.append)
        async with publisher(server, room_name, width=320, height=180) as pub:
            files = [pe.EncodedFileOutput(filepath=n) for n in ("rec.mp4", "rec_{retry}.mp4")]
            started = await svc.start_track_composite_egress(_request(room_name, pub, file_outputs=files))
            active = await wait_active(svc, started.egress_id)
            assert status(active) == "EGRESS_ACTIVE", active.error
            t_active = time.monotonic()
            await asyncio.sleep(3.0)
            await asyncio.to_thread(server.kill)
            killed_at = time.monotonic() - t_active  # on the file's timeline (within ~0.3 s)
            await _until(lambda: any(i.retry_count == 1 for i in seen), 15, "the retry starting")
            await asyncio.to_thread(server.restart)
            await _until(lambda: _media_flowing(svc, started.egress_id), 30, "media back after the retry")
            await asyncio.sleep(3.0)
            info = await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert info.retry_count == 1
    names = sorted(Path(r.filename).name for r in info.file_results)
    assert names == ["rec.mp4", "rec_0.mp4", "rec_1.mp4"], names
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == names, "no rec-1.mp4 beside them"
    result = {Path(r.filename).name: r for r in info.file_results}
    path = tmp_path / "rec.mp4"
    res = result["rec.mp4"]
    assert res.size == path.stat().st_size and res.started_at == result["rec_0.mp4"].started_at
    media = probe(path)
    assert media.video is not None and media.audio is not None
    assert abs(media.duration - res.duration / 1e9) < 0.25, (media.duration, res.duration)
    # the continued file holds both attempts, as the per-attempt files show them
    first, second = (probe(tmp_path / n).duration for n in ("rec_0.mp4", "rec_1.mp4"))
    assert abs(media.duration - (first + second)) < 0.3, (media.duration, first, second)
    video, audio = _decoded(path)  # end to end, no decoding error
    assert video >= 30 * (first + second) - 15 and audio > 40 * (first + second), (video, audio)
    with av.open(str(path)) as c:
        stamps = [float(f.time or 0) for f in c.decode(video=0)]
    steps = np.diff(stamps)
    assert steps.min() > 0 and steps.max() < 0.1, (steps.min(), steps.max())  # in order, no hole
    times, changed = _motion([path])
    assert _moves(times, changed, 0.5, killed_at - 0.5), "picture of the first attempt"
    assert _moves(times, changed, first + 1.0, media.duration), "picture of the retry"
    assert tone_present(path, 440, start=0.5, end=killed_at - 0.5), "sound of the first attempt"
    assert tone_present(path, 440, start=first + 1.0, end=media.duration - 0.2), "sound of the retry"


async def test_passthrough_track_egress_ends_with_a_playable_file_when_the_server_dies(
    server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    """The encoded receive path sees the signaling connection drop at once: the file of the
    sender's frames is closed playable (from a key frame, every frame decodes) and the egress
    fails saying the connection was lost (no retries asked for)."""
    async with (
        _service(server, tmp_path, max_retries=0) as svc,
        publisher(server, room_name, audio=False) as pub,
    ):
        req = pe.TrackEgressRequest(
            room_name=room_name, track_id=pub.video_track_sid, file=pe.DirectFileOutput()
        )
        started = await svc.start_track_egress(req)
        assert status(await wait_active(svc, started.egress_id)) == "EGRESS_ACTIVE"
        sent0, t_active = pub.frames_sent, time.monotonic()
        await asyncio.sleep(2.0)
        sent = pub.frames_sent - sent0
        await asyncio.to_thread(server.kill)
        t_kill = time.monotonic()
        info = await svc.wait_egress(started.egress_id, timeout=15)
        noticed = time.monotonic() - t_kill
    assert status(info) == "EGRESS_FAILED" and info.error_code == 503, info.error
    assert f"connection to room {room_name!r} lost" in info.error, info.error
    print(f"FIGURES lost: noticed after {noticed:.2f} s; {info.error}")
    assert noticed < 5.0, noticed
    res = info.file_results[0]
    path = Path(res.filename)
    assert path.suffix == ".mp4" and res.size == path.stat().st_size > 0
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert frames[0].key_frame, "the file starts on a key frame"
    span = float(frames[-1].time or 0) - float(frames[0].time or 0)
    print(f"FIGURES lost: {len(frames)} frames of {sent} sent before the kill, span {span:.2f} s "
          f"of {t_kill - t_active:.2f}")  # fmt: skip
    assert len(frames) >= 0.6 * sent and abs(span - (t_kill - t_active)) < 1.0, (len(frames), sent, span)


async def test_a_retry_goes_on_with_the_pauses_and_sidecars_of_the_attempt_before(
    server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    """A pause cut from the first attempt, a mark, the server killed, then after the retry a mark
    and a black pause: the one file's manifest and events sidecar list both pauses and both
    marks on the file's own clock, where the decoded file shows them."""
    async with _service(
        server, tmp_path, wait_timeout=20.0, reconnect_timeout=2.0, sidecars=["events"]
    ) as svc:
        seen: list[pe.EgressInfo] = []
        svc.listen(seen.append)
        async with publisher(server, room_name, width=320, height=180, marker_interval=NO_MARKERS) as pub:
            req = _request(room_name, pub, file_outputs=[pe.EncodedFileOutput(filepath="rec.mp4")])
            started = await svc.start_track_composite_egress(req)
            egress_id = started.egress_id
            active = await wait_active(svc, egress_id)
            assert status(active) == "EGRESS_ACTIVE", active.error
            await asyncio.sleep(1.5)
            await svc.pause_egress(egress_id)
            await asyncio.sleep(1.0)
            await svc.resume_egress(egress_id)
            await asyncio.sleep(1.0)
            await svc.mark(egress_id, "first")
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.kill)
            await _until(lambda: any(i.retry_count == 1 for i in seen), 15, "the retry starting")
            await asyncio.to_thread(server.restart)
            await _until(lambda: _media_flowing(svc, egress_id), 30, "media back after the retry")
            await asyncio.sleep(1.5)
            await svc.mark(egress_id, "second")
            await svc.pause_egress(egress_id, fill="black")
            await asyncio.sleep(1.5)
            await svc.resume_egress(egress_id)
            await asyncio.sleep(1.5)
            info = await svc.stop_egress(pe.StopEgressRequest(egress_id=egress_id))
    assert status(info) == "EGRESS_COMPLETE" and info.retry_count == 1, info.error
    (result,) = info.file_results
    path = Path(result.filename)
    cut, black = manifest(str(path))["pauses"]
    events = json.loads(path.with_name(path.name + ".events.json").read_text())
    assert events["pauses"] == [cut, black]
    assert cut["fill"] == "cut" and cut["media_start"] == cut["media_end"], cut
    marks = {e["label"]: e["media_time"] for e in events["events"] if e["type"] == "mark"}
    (retried,) = [e["media_time"] for e in events["events"] if e["type"] == "retried"]
    m0, m1 = black["media_start"], black["media_end"]
    print(f"cut at {cut['media_start']:.2f}, marks {marks}, retry at {retried:.2f}, black {m0:.2f}..{m1:.2f}")
    assert cut["media_start"] < marks["first"] < retried < marks["second"], (cut, marks, retried)
    assert abs(black["media_start"] - marks["second"]) < 0.1, (black, marks)
    assert black["media_end"] - black["media_start"] == pytest.approx(black["duration"], abs=1e-3)
    # the file shows the black pause where both say it is: the retry's clock goes on from the first's
    times, luma = luma_means(path)
    assert (luma[(times > m0 + 0.1) & (times < m1 - 0.1)] < 20).all(), "black while paused"
    assert (luma[(times > m0 - 0.6) & (times < m0 - 0.1)] > 40).all(), "the room before the pause"
    assert (luma[(times > m1 + 0.1) & (times < m1 + 0.6)] > 40).all(), "the room after it"
    assert probe(path).duration > m1 + 1.0
