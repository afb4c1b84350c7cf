"""The live preview of a real room composite: the widget's still is the composited picture (the
publisher's colour in its tile), the meter follows the publisher's tone, the status and quality
figures are there, it stops at the end, and it costs under 2 % of a core. The widgets are real
ipywidgets objects without a kernel to draw them (a notebook runs them in examples/record.ipynb,
tests/test_notebook.py)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from livekit.protocol import egress as pe
from PIL import Image

import pyegress
from pyegress.testing import LiveKitServer

from .helpers import publisher, status, wait_active

pytestmark = pytest.mark.integration

RED = (220, 30, 30)


async def test_preview_shows_the_composite_levels_and_figures_cheaply(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, color=RED, width=1280, height=720, marker_interval=3600):
        started = await service.start_room_composite_egress(
            pe.RoomCompositeEgressRequest(
                room_name=room_name,
                layout="grid",
                preset=pe.H264_720P_30,
                file_outputs=[pe.EncodedFileOutput(filepath="p.mp4")],
            )
        )
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        preview = service.preview(started.egress_id, view="widget", width=480)
        box = preview.widget
        assert box is not None
        await asyncio.sleep(5)
        live = preview.state
        image = preview._view.image.value  # type: ignore[union-attr]
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        final = await asyncio.wait_for(preview.wait(), 5)
    assert info.status == pe.EGRESS_COMPLETE, info.error
    assert live is not None and live.status == "EGRESS_ACTIVE" and live.size > 0 and live.fps > 20, live
    # the meter of alice's microphone shows her tone (-20 dBFS or so), not the -60 dB floor
    assert list(live.levels) == ["alice"], live.levels
    assert live.levels["alice"] > -40, live.levels
    # the still: 480 wide, 16:9, and alice's tile shows her colour
    picture = np.asarray(Image.open(io.BytesIO(image)).convert("RGB")).astype(int)
    assert picture.shape == (270, 480, 3)
    red = (picture[..., 0] > 150) & (picture[..., 1] < 90) & (picture[..., 2] < 90)
    assert red.mean() > 0.3, red.mean()
    # about four stills a second, and the figures
    assert preview.stills >= 12, preview.stills
    assert any(line.startswith("video alice/camera:") for line in live.quality_lines()), live.quality_lines()
    assert "alice/camera" in preview._view.quality.value  # type: ignore[union-attr]
    # the end is shown and the refreshing stopped
    assert final is not None and final.status == "EGRESS_COMPLETE"
    assert "EGRESS_COMPLETE" in preview._view.status.value  # type: ignore[union-attr]
    refreshes = preview.refreshes
    await asyncio.sleep(0.6)
    assert preview.refreshes == refreshes
    # the whole preview (scaling on the encode thread, JPEG, widget updates) under 2 % of a core
    print(f"preview cpu {preview.cpu_share:.4f} of a core over {preview.wall_seconds:.1f} s")
    assert preview.cpu_share < 0.02, preview.cpu_share


async def test_text_preview_outside_jupyter(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name):
        pub_req = pe.ParticipantEgressRequest(
            room_name=room_name, identity="alice", file_outputs=[pe.EncodedFileOutput(filepath="t.mp4")],
            advanced=pe.EncodingOptions(width=640, height=360, framerate=30),
        )  # fmt: skip
        started = await service.start_participant_egress(pub_req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        out = io.StringIO()
        preview = service.preview(started.egress_id, stream=out)  # not in Jupyter: text
        assert preview.widget is None
        await asyncio.sleep(1.5)
        await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        await asyncio.wait_for(preview.wait(), 5)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("EGRESS_ACTIVE") and "fps" in lines[0], lines  # then every 5 s
    assert lines[1].startswith("EGRESS_COMPLETE"), lines
    assert any(line.startswith("video alice/camera:") for line in lines[2:]), lines
    with pytest.raises(pyegress.EgressNotFoundError):
        service.preview(started.egress_id)  # over: nothing left to show
