"""Room composite: native layouts, mixed audio, live layout changes; frames decoded and measured."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from livekit import api
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import (
    LiveKitServer,
    SyntheticPublisher,
    av_offset,
    frame_timestamps,
    region_color,
    tone_present,
)

from .helpers import (
    CANVAS,
    NO_MARKERS,
    box,
    check_file_result,
    end_reason,
    near,
    publisher,
    status,
    wait_active,
)

pytestmark = pytest.mark.integration

RED, GREEN, BLUE, YELLOW = (220, 40, 40), (40, 200, 40), (40, 60, 220), (220, 220, 40)

SERVICE_OPTIONS = {"room_empty_timeout": 2.0}


async def join(server: LiveKitServer, room: str, identity: str, **kw: object) -> SyntheticPublisher:
    pub = publisher(server, room, identity, **kw)
    await pub.start()
    await asyncio.sleep(0.3)  # a distinct join order
    return pub


async def start(svc: pyegress.EgressService, room: str, layout: str, **kw: object) -> pe.EgressInfo:
    req = pe.RoomCompositeEgressRequest(room_name=room, layout=layout, **kw)  # type: ignore[arg-type]
    if not req.file_outputs and not req.audio_only:
        req.advanced.CopyFrom(CANVAS)
    if not req.file_outputs:
        req.file_outputs.add(filepath=f"{layout}.mp4")
    info = await svc.start_room_composite_egress(req)
    active = await wait_active(svc, info.egress_id)
    assert status(active) == "EGRESS_ACTIVE", active.error
    return info


async def test_grid_puts_each_colour_in_its_cell(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    colours = [RED, GREEN, BLUE, YELLOW]
    pubs = [
        await join(livekit_server, room_name, f"p{i}", color=c, audio=False, marker_interval=NO_MARKERS)
        for i, c in enumerate(colours)
    ]
    info = await start(service, room_name, "grid")
    await asyncio.sleep(4)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in pubs:
        await p.stop()
    media = check_file_result(final)
    assert media.video is not None and (media.video.width, media.video.height) == (1280, 720)
    path = final.file_results[0].filename
    centres = [(320, 180), (960, 180), (320, 540), (960, 540)]  # 2x2, in join order
    for colour, (cx, cy) in zip(colours, centres, strict=True):
        seen = region_color(path, media.duration - 1.0, box(cx, cy))
        assert near(seen, colour), (colour, seen, (cx, cy))
    # the dark background shows between the cells
    assert near(region_color(path, media.duration - 1.0, (636, 0, 644, 720)), (0, 0, 0), 30)


async def test_grid_reflows_when_people_join_and_leave(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = await join(livekit_server, room_name, "a", color=RED, audio=False, marker_interval=NO_MARKERS)
    info = await start(service, room_name, "grid-light")
    await asyncio.sleep(2)
    t_join = (time.time_ns() - (await _started(service, info)).started_at) / 1e9
    b = await join(livekit_server, room_name, "b", color=BLUE, audio=False, marker_interval=NO_MARKERS)
    await asyncio.sleep(2.5)
    t_leave = (time.time_ns() - (await _started(service, info)).started_at) / 1e9
    await b.stop()
    await asyncio.sleep(2.5)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    await a.stop()
    path = final.file_results[0].filename
    check_file_result(final)
    # alone: one big tile; left and right of centre are both red
    assert near(region_color(path, t_join - 0.5, box(400, 360)), RED)
    assert near(region_color(path, t_join - 0.5, box(880, 360)), RED)
    # two: side by side, the light background in the gap between them
    assert near(region_color(path, t_leave - 0.5, box(320, 360)), RED)
    assert near(region_color(path, t_leave - 0.5, box(960, 360)), BLUE)
    assert near(region_color(path, t_leave - 0.5, box(640, 360, 2)), (255, 255, 255), 25), "-light background"
    # b left: a alone again
    assert near(region_color(path, t_leave + 1.5, box(880, 360)), RED)


async def _started(svc: pyegress.EgressService, info: pe.EgressInfo) -> pe.EgressInfo:
    return (await svc.list_egress(pe.ListEgressRequest(egress_id=info.egress_id))).items[0]


async def test_speaker_follows_the_loud_participant(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = await join(livekit_server, room_name, "a", color=RED, marker_interval=NO_MARKERS)
    b = await join(livekit_server, room_name, "b", color=BLUE, marker_interval=NO_MARKERS)
    c = await join(livekit_server, room_name, "c", color=GREEN, audio=False, marker_interval=NO_MARKERS)
    await b.mute("audio")  # only a speaks
    info = await start(service, room_name, "speaker")
    await asyncio.sleep(3)
    t_switch = (time.time_ns() - (await _started(service, info)).started_at) / 1e9
    await a.mute("audio")
    await b.unmute("audio")  # now b speaks
    await asyncio.sleep(4)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in (a, b, c):
        await p.stop()
    path = final.file_results[0].filename
    check_file_result(final)
    main = box(500, 360, 40)  # the main area is the left 4/5
    assert near(region_color(path, t_switch - 0.5, main), RED)
    assert near(region_color(path, t_switch + 3.0, main), BLUE)
    # the others sit in the strip on the right
    strip = [region_color(path, t_switch - 0.5, box(1152, y, 10)) for y in range(60, 700, 20)]
    assert any(near(s, BLUE) for s in strip) and any(near(s, GREEN) for s in strip)


async def test_single_speaker_and_live_layout_update(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = await join(livekit_server, room_name, "a", color=RED, marker_interval=NO_MARKERS)
    b = await join(livekit_server, room_name, "b", color=BLUE, audio=False, marker_interval=NO_MARKERS)
    info = await start(service, room_name, "grid-dark")
    await asyncio.sleep(2.5)
    updated = await service.update_layout(
        pe.UpdateLayoutRequest(egress_id=info.egress_id, layout="single-speaker")
    )
    t_update = (time.time_ns() - updated.started_at) / 1e9
    assert updated.room_composite.layout == "single-speaker"
    with pytest.raises(pyegress.InvalidRequestError, match="layout"):
        await service.update_layout(pe.UpdateLayoutRequest(egress_id=info.egress_id, layout="mosaic"))
    await asyncio.sleep(2.5)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in (a, b):
        await p.stop()
    media = check_file_result(final)
    path = final.file_results[0].filename
    assert near(region_color(path, t_update - 0.7, box(960, 360)), BLUE), "grid before the update"
    after = t_update + 1.0  # within one second
    assert near(region_color(path, after, box(960, 360)), RED), "single-speaker shows the speaker only"
    assert near(region_color(path, after, box(320, 360)), RED)
    assert media.duration > 4.5, "no gap: the file spans the whole recording"
    stamps = frame_timestamps(path)
    assert max(np.diff(stamps)) < 0.034, "constant frame rate across the layout switch"


@pytest.mark.parametrize("receive_path", ["sdk", "encoded"])
async def test_layout_set_through_the_recorders_metadata(
    livekit_server: LiveKitServer, tmp_path: Path, room_name: str, receive_path: str
) -> None:
    """What livekit-server does with ``UpdateLayout`` for an egress it dispatched: it sets the
    recorder participant's metadata to ``{"layout": ...}``. The recording follows within a
    second, whichever receive path reads the room."""
    server = livekit_server
    svc = pyegress.EgressService(server.url, server.api_key, server.api_secret, output_dir=tmp_path,
                                 wait_timeout=4.0, receive_path=receive_path)  # fmt: skip
    async with svc:
        a = await join(server, room_name, "a", color=RED, marker_interval=NO_MARKERS)
        b = await join(server, room_name, "b", color=BLUE, audio=False, marker_interval=NO_MARKERS)
        info = await start(svc, room_name, "grid")
        source = type(svc.recorder(info.egress_id).source).__name__  # type: ignore[attr-defined]
        assert source == ("RoomSource" if receive_path == "sdk" else "EncodedRoomSource")
        await asyncio.sleep(2.5)
        t_update = (time.time_ns() - (await _started(svc, info)).started_at) / 1e9
        async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
            recorder = "EG_" + info.egress_id[3:]  # the recorder participant's identity
            update = api.UpdateParticipantRequest(
                room=room_name, identity=recorder, metadata='{"layout": "grid-light"}'
            )
            await lk.room.update_participant(update)
        deadline = time.monotonic() + 3.0
        while (await _started(svc, info)).room_composite.layout != "grid-light":
            assert time.monotonic() < deadline, "the layout from the metadata was not taken"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)
        final = await svc.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
        for p in (a, b):
            await p.stop()
    check_file_result(final)
    assert final.room_composite.layout == "grid-light"
    path = final.file_results[0].filename
    before, after = t_update - 0.7, t_update + 1.0
    assert near(region_color(path, before, box(640, 360, 2)), (0, 0, 0), 30), "grid: dark background"
    assert near(region_color(path, after, box(640, 360, 2)), (255, 255, 255), 25), "grid-light background"
    assert near(region_color(path, after, box(320, 360)), RED) and near(
        region_color(path, after, box(960, 360)), BLUE
    )


async def test_audio_only_mix_has_every_voice_and_ends_when_room_empties(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    tones = {"a": 440.0, "b": 660.0, "c": 880.0}
    pubs = [await join(livekit_server, room_name, k, video=False, tone_hz=hz) for k, hz in tones.items()]
    info = await start(
        service, room_name, "", audio_only=True, file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG)]
    )
    await asyncio.sleep(4)
    for p in pubs:
        await p.stop()
    final = await service.wait_egress(info.egress_id, timeout=20)  # empty room: ends by itself
    media = check_file_result(final)
    assert media.video is None and media.audio is not None and media.audio.codec == "opus"
    assert end_reason(final) == "End reason: Source closed (room empty for 2 s)", final.details
    path = final.file_results[0].filename
    for hz in tones.values():
        assert tone_present(path, hz, start=0.5, end=3.5), hz


async def test_room_composite_av_sync_and_empty_room_records_background(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = await join(livekit_server, room_name, "a")
    info = await start(service, room_name, "speaker-light")
    await asyncio.sleep(6)
    await a.stop()
    final = await service.wait_egress(info.egress_id, timeout=20)
    media = check_file_result(final)
    path = Path(final.file_results[0].filename)
    off = av_offset(path)
    assert off.count >= 4 and abs(off.median) <= 0.040, off
    # after a left, the room is empty: the light background is recorded until the timeout
    assert near(region_color(path, media.duration - 0.5), (255, 255, 255), 25)


def _channels(path: str) -> np.ndarray:
    """Decoded stereo audio as float (samples, 2)."""
    import av

    with av.open(path) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    data = np.concatenate(chunks, axis=1) if chunks[0].ndim == 2 and chunks[0].shape[0] == 2 else None
    assert data is not None, "planar stereo expected"
    return data.T.astype(np.float32)


def _energy_at(x: np.ndarray, hz: float, rate: int = 48000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[np.abs(freqs - hz) < 10].max())


async def test_dual_channel_agent_puts_agents_left_others_right(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    agent = publisher(livekit_server, room_name, "bot", kind="agent", video=False, tone_hz=880.0)
    await agent.start()
    human = await join(livekit_server, room_name, "human", video=False, tone_hz=440.0)
    info = await start(
        service,
        room_name,
        "",
        audio_only=True,
        audio_mixing=pe.DUAL_CHANNEL_AGENT,
        file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG)],
    )
    await asyncio.sleep(4)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    await agent.stop()
    await human.stop()
    check_file_result(final)
    pcm = _channels(final.file_results[0].filename)[48000 : 48000 * 3]
    left, right = pcm[:, 0], pcm[:, 1]
    energies = {
        f"{side}{hz}": _energy_at(x, hz) for side, x in (("L", left), ("R", right)) for hz in (440, 880)
    }
    assert energies["L880"] > 20 * energies["L440"], ("the agent is on the left", energies)
    assert energies["R440"] > 20 * energies["R880"], ("the others are on the right", energies)


async def test_mix_of_many_loud_voices_does_not_clip(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    pubs = [
        await join(livekit_server, room_name, f"v{i}", video=False, tone_hz=300.0 + 150 * i) for i in range(4)
    ]
    info = await start(
        service, room_name, "", audio_only=True, file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG)]
    )
    await asyncio.sleep(4)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in pubs:
        await p.stop()
    check_file_result(final)
    pcm = _channels(final.file_results[0].filename)
    # four simultaneous beeps at 0.6 of full scale each would sum to 2.4: the limiter holds them
    assert np.abs(pcm).max() > 0.5, "the beeps are there"
    assert int((np.abs(pcm) >= 0.99).sum()) == 0, "no clipped samples"


async def test_ends_when_room_is_deleted_and_shows_placeholders(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    from livekit import api

    cam = await join(livekit_server, room_name, "cam", color=RED, audio=False, marker_interval=NO_MARKERS)
    voice = await join(livekit_server, room_name, "Ada Lovelace", video=False)
    info = await start(service, room_name, "grid")
    await asyncio.sleep(3)
    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))
    final = await service.wait_egress(info.egress_id, timeout=15)
    for p in (cam, voice):
        await p.stop()
    media = check_file_result(final)
    assert "room closed" in final.details
    path = final.file_results[0].filename
    t = media.duration - 1.0
    assert near(region_color(path, t, box(320, 360)), RED)
    # the audio-only participant gets a placeholder tile (grey, with initials), not black
    tile = region_color(path, t, (700, 100, 1250, 620))
    assert 25 < tile[0] < 90 and near(tile, (tile[0], tile[0], tile[0]), 12), tile


async def test_simulcast_layers_follow_tile_sizes(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    """Each simulcast camera arrives at the layer its tile needs: the speaker's full size, the strip's
    quarter size; a layout change that makes the strip tile big asks for the big layer again."""
    kw: dict[str, object] = {"width": 1280, "height": 720, "fps": 15, "simulcast": True}
    a = await join(livekit_server, room_name, "a", color=RED, marker_interval=NO_MARKERS, **kw)
    b = await join(livekit_server, room_name, "b", color=BLUE, audio=False, marker_interval=NO_MARKERS, **kw)
    info = await start(service, room_name, "speaker")
    recorder = service.recorder(info.egress_id)
    assert isinstance(recorder, pyegress.RoomCompositeRecorder) and recorder.compositor is not None
    comp = recorder.compositor

    def received(identity: str) -> int:
        cam = comp.participants[identity].camera
        frame = cam.at(time.monotonic()) if cam is not None else None
        return int(getattr(frame, "width", 0))

    async def until(check: object, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return True
            await asyncio.sleep(0.25)
        return False

    # a speaks (main area, 1016x720): full size; b sits in the strip (~240x136): the 320x180 layer
    small = await until(lambda: received("a") >= 1280 and 0 < received("b") <= 320)
    assert small, (received("a"), received("b"))
    await asyncio.sleep(1.5)
    assert 0 < received("b") <= 320
    t_small = (time.time_ns() - (await _started(service, info)).started_at) / 1e9 - 0.5
    await service.update_layout(pe.UpdateLayoutRequest(egress_id=info.egress_id, layout="grid"))
    # side by side, each tile 628x704: b needs its full-size layer again
    assert await until(lambda: received("b") >= 1280), received("b")
    await asyncio.sleep(1.0)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in (a, b):
        await p.stop()
    path = final.file_results[0].filename
    check_file_result(final)
    # the picture is right with the small layer too: b's colour in the strip, a's in the main area
    assert near(region_color(path, t_small, box(500, 360, 40)), RED)
    strip = [region_color(path, t_small, box(1152, y, 10)) for y in range(60, 700, 20)]
    assert any(near(s, BLUE) for s in strip)
