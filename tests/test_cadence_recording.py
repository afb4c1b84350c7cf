"""Motion cadence of every recorder fed from a room: each source frame shown as often as due.

A synthetic publisher sends its moving pattern at 30 or 15 fps; the recording runs at 30 fps.
:func:`pyegress.testing.cadence` reads from the pattern's position which source frame each
output frame shows: at least 98 % of the output frames must advance exactly as the two rates
say (the next source frame at 30 fps; each source frame on two consecutive frames at 15).
A track egress to a file writes the sender's own frames (passthrough): each exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.media.layout import grid
from pyegress.testing import LiveKitServer, cadence

from .helpers import egress_request, publisher, record_for

pytestmark = pytest.mark.integration

OUT = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1500)
SECONDS = 10.0
MIN_SHARE = 0.98
#: The egress starts once the publishers have sent this long: a sender's first frames come in a
#: burst (its encoder starting up, the first key frame), which no receiver can show evenly.
SETTLE = 1.0


@pytest.mark.parametrize("fps", [30, 15])
@pytest.mark.parametrize("kind", ["track_composite", "participant", "track"])
async def test_each_source_frame_is_shown_as_often_as_due(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, kind: str, fps: int
) -> None:
    async with publisher(livekit_server, room_name, fps=fps) as pub:
        await asyncio.sleep(SETTLE)
        start = getattr(service, f"start_{kind}_egress")
        info = await record_for(service, await start(egress_request(kind, room_name, pub, OUT)), SECONDS)
    assert info.status == pe.EGRESS_COMPLETE, info.error
    path = Path(info.file_results[0].filename)
    c = cadence(path, source_fps=fps)
    out_fps = fps if kind == "track" else 30  # a track egress to a file passes the sender's frames through
    assert c.judged > SECONDS * out_fps * 0.7, c.summary()  # most of the recording was judged
    assert c.share >= MIN_SHARE, c.summary()


@pytest.mark.parametrize("fps", [30, 15])
async def test_each_tile_of_a_room_composite_shows_every_source_frame(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, fps: int
) -> None:
    pubs = [publisher(livekit_server, room_name, identity=name, fps=fps) for name in ("alice", "bob")]
    for p in pubs:
        await p.start()
    await asyncio.sleep(SETTLE)
    try:
        req = pe.RoomCompositeEgressRequest(
            room_name=room_name, layout="grid", file_outputs=[pe.EncodedFileOutput(filepath="grid.mp4")]
        )
        info = await record_for(service, await service.start_room_composite_egress(req), SECONDS)
    finally:
        for p in pubs:
            await p.stop()
    assert info.status == pe.EGRESS_COMPLETE, info.error
    path = Path(info.file_results[0].filename)
    for cell in grid(2, 1280, 720):  # cameras are cropped to fill their cell
        scale = max(cell.w / 640, cell.h / 360)
        # a tile shows its participant's name card until the first frame of a track subscribed
        # after the egress started (about half a second): judged from the first second on
        box = (cell.x, cell.y, cell.w, cell.h)
        c = cadence(path, source_fps=fps, box=box, scale=scale, skip_seconds=1.0)
        assert c.judged > SECONDS * 30 * 0.6, c.summary()
        assert c.share >= MIN_SHARE, f"tile at {cell}: {c.summary()}"
