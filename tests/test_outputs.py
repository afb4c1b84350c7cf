"""Every output kind against real servers: HLS, RTMP/RTMPS (nginx-rtmp), images, WebSocket, MP3.

Each test decodes what the output produced (PyAV) and checks it against the EgressInfo. The
RTMP server is nginx with its RTMP module (``scripts/install-rtmp-server.sh``); when it cannot
start the tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from livekit.protocol import egress as pe

import pyegress
from pyegress.outputs.stream import StreamOutput
from pyegress.testing import LiveKitServer, picture_moves, probe, tone_present
from pyegress.testing.checks import AudioData
from pyegress.testing.rtmp_server import RtmpServer

from .helpers import SMALL, check_file_result, publisher, start_rtmp, status, wait_active

pytestmark = pytest.mark.integration

KEY1 = "sk_live_first_0123456789abcdef"
KEY2 = "sk_live_second_0123456789abcdef"


def playlist_entries(path: Path) -> list[tuple[float, str]]:
    lines = path.read_text().splitlines()
    return [
        (float(line.split(":")[1].rstrip(",")), lines[i + 1])
        for i, line in enumerate(lines)
        if line.startswith("#EXTINF:")
    ]


async def wait_for_file(path: Path, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if path.exists():
            return
        await asyncio.sleep(0.1)


async def test_file_hls_rtmp_rtmps_and_images_from_one_encode(
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
            file_outputs=[pe.EncodedFileOutput(filepath="all/{room_name}.mp4")],
            segment_outputs=[
                pe.SegmentedFileOutput(
                    filename_prefix="hls/seg",
                    playlist_name="hls/index.m3u8",
                    live_playlist_name="live.m3u8",
                    segment_duration=2,
                )
            ],
            stream_outputs=[pe.StreamOutput(urls=[rtmp.url(KEY1), rtmp.rtmps_url(KEY2)])],
            image_outputs=[
                pe.ImageOutput(capture_interval=1, width=320, height=180, filename_prefix="img/shot")
            ],
        )
        started = await service.start_participant_egress(req)
        active = await wait_active(service, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        recorder = service.recorder(started.egress_id)
        assert recorder.pipeline is not None
        assert len(recorder.pipeline.outputs) == 4
        assert recorder.pipeline.encoder_count == 2, "one video + one audio encode shared by all outputs"
        assert [s.url for s in active.stream_results] == [
            rtmp.url(KEY1).replace(KEY1, "{sk_...def}"),
            rtmp.rtmps_url(KEY2).replace(KEY2, "{sk_...def}"),
        ]
        assert all(s.status == pe.StreamInfo.ACTIVE for s in active.stream_results)
        await asyncio.sleep(4.5)
        # playable while recording: an EVENT playlist with closed segments, no ENDLIST yet
        playlist = tmp_path / "hls" / "index.m3u8"
        live_text = playlist.read_text()
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in live_text and "#EXT-X-ENDLIST" not in live_text
        assert len(playlist_entries(playlist)) >= 1
        with av.open(str(playlist)) as c:
            frame = next(c.decode(video=0))
            assert (frame.width, frame.height) == (640, 360)
        mid = (await service.list_egress(pe.ListEgressRequest(egress_id=started.egress_id))).items[0]
        assert mid.segment_results[0].segment_count >= 1
        assert mid.image_results[0].image_count >= 3
        await asyncio.sleep(2.5)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))

    media = check_file_result(info)
    assert Path(info.file_results[0].filename) == tmp_path / "all" / f"{room_name}.mp4"
    duration = media.duration
    assert 6.5 < duration < 9.0

    # HLS: key-frame aligned 2 s segments, consistent playlists, results match the files
    seg = info.segment_results[0]
    assert seg.playlist_name == str(playlist)
    assert seg.live_playlist_name == str(tmp_path / "hls" / "live.m3u8")
    text = playlist.read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST") and "#EXT-X-TARGETDURATION:2" in text
    entries = playlist_entries(playlist)
    assert seg.segment_count == len(entries) >= 3
    assert all(abs(d - 2.0) < 0.01 for d, _ in entries[:-1]) and 0 < entries[-1][0] <= 2.01
    names = [name for _, name in entries]
    assert names == [f"seg_{i:05d}.ts" for i in range(len(names))]
    files = [playlist.parent / n for n in names]
    assert seg.size == sum(f.stat().st_size for f in files)
    assert abs(seg.duration / 1e9 - sum(d for d, _ in entries)) < 0.01
    for f in files:
        with av.open(str(f)) as c:
            first = next(p for p in c.demux(c.streams.video[0]) if p.size)
            assert first.is_keyframe, f"{f.name} does not start on a key frame"
    hls = probe(playlist)
    assert hls.video is not None and hls.audio is not None
    assert (hls.video.codec, hls.audio.codec) == ("h264", "aac")
    assert abs(hls.duration - seg.duration / 1e9) < 0.3, (hls.duration, seg.duration)
    assert abs(hls.duration - duration) < 0.5
    live = (tmp_path / "hls" / "live.m3u8").read_text()
    live_names = re.findall(r"^seg_\d+\.ts$", live, re.M)
    assert live_names == names[-len(live_names) :] and len(live_names) <= 5
    assert f"#EXT-X-MEDIA-SEQUENCE:{len(names) - len(live_names)}" in live and "#EXT-X-ENDLIST" in live
    assert info.WhichOneof("result") == "file"  # the deprecated single result: the file first
    assert json.loads(Path(str(playlist) + ".json").read_text())["segments"][0]["filename"] == names[0]

    # RTMP and RTMPS: each URL got the stream, decodable, with its own FINISHED result
    assert len(info.stream_results) == 2
    for result, key in zip(info.stream_results, (KEY1, KEY2), strict=True):
        assert result.status == pe.StreamInfo.FINISHED, result.error
        assert result.retries == 0 and result.ended_at >= result.started_at > 0
        assert key not in result.url and result.url.endswith("{sk_...def}")
        recorded = rtmp.recorded(key)
        assert len(recorded) == 1, recorded
        got = probe(recorded[0])
        assert got.video is not None and got.audio is not None
        assert (got.video.codec, got.video.width, got.video.height) == ("h264", 640, 360)
        assert got.audio.codec == "aac"
        assert abs(got.video.duration - result.duration / 1e9) < 0.5, (got.video.duration, result.duration)
        assert result.duration / 1e9 > duration - 1.0
        assert picture_moves(recorded[0])
        assert tone_present(recorded[0], 440.0)
    assert KEY1 not in str(info) and KEY2 not in str(info), "stream keys never shown in clear"

    # images: one every second at 320x180, listed in the manifest with their times
    img = info.image_results[0]
    shots = sorted((tmp_path / "img").glob("shot_*.jpeg"))
    assert img.image_count == len(shots) and img.filename_prefix == str(tmp_path / "img" / "shot")
    assert abs(len(shots) - (int(duration) + 1)) <= 1, (len(shots), duration)
    for shot in shots[:3]:
        with av.open(str(shot)) as c:
            frame = next(c.decode(video=0))
            assert (c.streams.video[0].codec_context.name, frame.width, frame.height) == ("mjpeg", 320, 180)
    listed = json.loads((tmp_path / "img" / "shot.json").read_text())["images"]
    assert [i["filename"] for i in listed] == [s.name for s in shots]
    gaps = np.diff([i["offset"] for i in listed])
    assert np.allclose(gaps, 1.0, atol=0.05), gaps


async def test_update_stream_adds_and_removes_urls_without_disturbing_the_others(
    livekit_server: LiveKitServer, service: pyegress.EgressService, rtmp: RtmpServer, room_name: str
) -> None:
    key_a, key_b = "update_a_0123456789abcdef", "update_b_0123456789abcdef"
    async with publisher(livekit_server, room_name):
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="alice",
            advanced=SMALL,
            stream_outputs=[pe.StreamOutput(protocol=pe.RTMP, urls=[rtmp.url(key_a)])],
        )
        started = await service.start_participant_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(2.0)
        added = await service.update_stream(
            pe.UpdateStreamRequest(egress_id=started.egress_id, add_output_urls=[rtmp.url(key_b)])
        )
        assert [s.status for s in added.stream_results] == [pe.StreamInfo.ACTIVE] * 2
        with pytest.raises(pyegress.InvalidRequestError, match="already streaming"):
            await service.update_stream(
                pe.UpdateStreamRequest(egress_id=started.egress_id, add_output_urls=[rtmp.url(key_b)])
            )
        with pytest.raises(pyegress.InvalidRequestError, match="add_output_urls"):
            await service.update_stream(
                pe.UpdateStreamRequest(egress_id=started.egress_id, add_output_urls=["http://x/a/b"])
            )
        with pytest.raises(pyegress.InvalidRequestError, match="remove_output_urls"):
            await service.update_stream(
                pe.UpdateStreamRequest(egress_id=started.egress_id, remove_output_urls=[rtmp.url("nope")])
            )
        await asyncio.sleep(2.5)
        shown = added.stream_results[0].url  # remove by the URL as EgressInfo shows it
        removed = await service.update_stream(
            pe.UpdateStreamRequest(egress_id=started.egress_id, remove_output_urls=[shown])
        )
        assert removed.stream_results[0].status == pe.StreamInfo.FINISHED
        assert removed.stream_results[1].status == pe.StreamInfo.ACTIVE
        await asyncio.sleep(2.0)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert list(info.stream.info) == list(info.stream_results)  # the deprecated single result
    a, b = info.stream_results
    assert a.status == b.status == pe.StreamInfo.FINISHED
    assert a.ended_at < b.ended_at
    # B starts at the first key frame after it was added (4 s GOP): about 2.5 s of 4.5
    assert 3.8 < a.duration / 1e9 < 5.5 and 2.0 < b.duration / 1e9 < 5.0, (a.duration, b.duration)
    for key, result in ((key_a, a), (key_b, b)):
        (flv,) = rtmp.recorded(key)
        got = probe(flv)
        assert got.video is not None and got.video.codec == "h264"
        assert abs(got.video.duration - result.duration / 1e9) < 0.5
    # A kept streaming while B was added: its frames are evenly spaced, no gap
    with av.open(str(rtmp.recorded(key_a)[0])) as c:
        times = [float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.pts is not None]
    assert max(np.diff(sorted(times))) < 0.1
    with av.open(str(rtmp.recorded(key_b)[0])) as c:
        assert next(p for p in c.demux(c.streams.video[0]) if p.size).is_keyframe


async def test_dropped_connection_is_retried_and_a_dead_url_fails_alone(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    room_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(StreamOutput, "backoff", 0.3)
    monkeypatch.setattr(StreamOutput, "max_retries", 2)
    server = start_rtmp()
    dead_key = "dead_0123456789abcdefghij"
    with socket_port() as closed_port:
        dead = f"rtmp://127.0.0.1:{closed_port}/live/{dead_key}"
    try:
        async with publisher(livekit_server, room_name):
            req = pe.ParticipantEgressRequest(
                room_name=room_name,
                identity="alice",
                advanced=SMALL,
                file_outputs=[pe.EncodedFileOutput(filepath="kept.mp4")],
                stream_outputs=[pe.StreamOutput(urls=[server.url(KEY1), dead])],
            )
            started = await service.start_participant_egress(req)
            assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
            await asyncio.sleep(2.5)
            await asyncio.to_thread(server.restart, 0.5)  # every connection drops
            await asyncio.sleep(4.0)
            progress = service.recorder(started.egress_id).progress()
            info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        # what queued while a URL was away was dropped (stale for a live stream), and counted
        assert progress.frames_dropped > 0
        recorded = server.recorded(KEY1)
        assert len(recorded) == 2, recorded  # before and after the reconnect
        for flv in recorded:
            got = probe(flv)
            assert got.video is not None and got.video.codec == "h264" and got.audio is not None
        with av.open(str(recorded[1])) as c:
            assert next(p for p in c.demux(c.streams.video[0]) if p.size).is_keyframe
    finally:
        server.stop()
    assert status(info) == "EGRESS_COMPLETE", info.error
    check_file_result(info)
    good, bad = info.stream_results
    assert good.status == pe.StreamInfo.FINISHED and good.retries >= 1 and good.last_retry_at > 0
    assert bad.status == pe.StreamInfo.FAILED and bad.retries == 2 and "refused" in bad.error.lower()
    assert dead_key not in str(info) and KEY1 not in str(info)


class socket_port:
    """A loopback port that is closed (bound then released)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


async def test_websocket_track_egress_sends_pcm_and_mute_changes(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    binary: list[bytes] = []
    text: list[tuple[int, object]] = []
    closed = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                binary.append(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                text.append((len(binary), json.loads(msg.data)))
        closed.set()
        return ws

    app = web.Application()
    app.router.add_get("/audio", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        pub = publisher(livekit_server, room_name, video=False)
        await pub.start()
        started = await service.start_track_egress(
            pe.TrackEgressRequest(
                room_name=room_name,
                track_id=pub.audio_track_sid,
                websocket_url=f"ws://127.0.0.1:{port}/audio",
            )
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        # the encoded path: the track's Opus is decoded by PyAV, nothing is encoded
        recorder = service.recorder(started.egress_id)
        # imported here: aiortc is there from Python 3.11 only, and the unit tests also run on 3.10
        from pyegress.recorders.track_pcm import PcmTrackRecorder

        assert isinstance(recorder, PcmTrackRecorder) and recorder.pipeline is not None
        assert recorder.pipeline.encoder_count == 0 and not hasattr(recorder, "source")
        await asyncio.sleep(2.5)
        await pub.mute("audio")
        await asyncio.sleep(1.5)
        await pub.unmute("audio")
        await asyncio.sleep(2.0)
        await pub.unpublish("audio")  # the egress ends by itself and closes the socket
        info = await service.wait_egress(started.egress_id, timeout=10)
        await asyncio.wait_for(closed.wait(), 5)
        await pub.stop()
    finally:
        await runner.cleanup()
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert "unpublished" in info.details
    assert [t for _, t in text] == [{"muted": True}, {"muted": False}]
    assert all(len(b) % 4 == 0 for b in binary) and len(binary) > 200
    pcm = np.frombuffer(b"".join(binary), "<i2").reshape(-1, 2)
    seconds = len(pcm) / 48000
    assert 5.5 < seconds < 8.0, seconds
    # every 20 ms Opus packet but those of the muted second and a half was decoded
    print(f"FIGURES websocket: {recorder.packets_decoded} Opus packets decoded, {seconds:.2f} s of PCM")
    assert recorder.packets_decoded >= 50 * (seconds - 1.5) * 0.8, (recorder.packets_decoded, seconds)
    mono = pcm.mean(axis=1).astype(np.float32) / 32768
    assert tone_present(AudioData(mono, 48000, 0.0), 440.0, end=2.0), "the track's tone, at 48 kHz"
    mute_at = text[0][0] * 0.02
    assert tone_present(AudioData(mono, 48000, 0.0), 440.0, start=mute_at + 2.0, end=seconds)
    muted = mono[int((mute_at + 0.3) * 48000) : int((mute_at + 1.2) * 48000)]
    assert np.sqrt(np.mean(muted**2)) < 1e-3, "silence while muted"


async def test_websocket_with_a_video_track_is_refused(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, audio=False) as pub:
        started = await service.start_track_egress(
            pe.TrackEgressRequest(
                room_name=room_name, track_id=pub.video_track_sid, websocket_url="ws://127.0.0.1:9/x"
            )
        )
        info = await service.wait_egress(started.egress_id, timeout=10)
    assert status(info) == "EGRESS_FAILED"
    assert info.error.startswith("websocket_url") and "audio only" in info.error


async def test_mp3_file_is_cbr_with_an_info_header(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, video=False) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            advanced=pe.EncodingOptions(audio_bitrate=96),
            file_outputs=[pe.EncodedFileOutput(file_type=pe.MP3, filepath="voice")],
        )
        started = await service.start_track_composite_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(4.0)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert path.name == "voice.mp3" and media.video is None and media.audio is not None
    assert media.audio.codec.startswith("mp3") and media.audio.sample_rate == 44100
    head = path.read_bytes()[:4096]
    assert b"Info" in head, "CBR files carry a Xing 'Info' header"
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        assert s.bit_rate == 96000
        sizes = {p.size for p in c.demux(s) if p.size}
    assert max(sizes) - min(sizes) <= 1, f"constant bitrate frames (padding only): {sorted(sizes)}"
    assert tone_present(path, 440.0)
