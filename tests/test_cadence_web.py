"""Motion cadence of web egress and of room composite templates (Chromium on its own display).

The page's display refreshes at the output's frame rate, so Chromium paints once per output
frame, and each painted picture is read once, whole, and given its own output slot
(:mod:`pyegress.sources.xdisplay`, docs/motion.md). :func:`pyegress.testing.cadence` reads from
the synthetic pattern's position which source frame each output frame shows: at least 98 % of
output frames must advance exactly as the rates say (the next source frame at 30 fps; each
source frame on two consecutive frames at 15).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import cadence

from . import test_web
from .helpers import record_for

pytestmark = pytest.mark.integration

# the web tests' fixtures: Debian's Chromium and the built template, the pages on loopback
chromium, site = test_web.chromium, test_web.site

SECONDS = 8.0
MIN_SHARE = 0.98
#: Left out of the judgement: the page's or the template's first second (the page starting its
#: animation, the template subscribing to the tracks and showing their first frames).
SKIP = 1.0


@pytest.mark.parametrize("fps", [30, 15])
async def test_a_web_page_is_recorded_one_painted_frame_per_output_frame(
    service: pyegress.EgressService, site: str, fps: int
) -> None:
    req = pe.WebEgressRequest(
        url=f"{site}/pattern.html?fps={fps}",
        await_start_signal=True,
        advanced=pe.EncodingOptions(width=640, height=360, framerate=30),
        file_outputs=[pe.EncodedFileOutput(filepath="pattern.mp4")],
    )
    info = await record_for(service, await service.start_web_egress(req), SECONDS)
    assert info.status == pe.EGRESS_COMPLETE, info.error
    c = cadence(Path(info.file_results[0].filename), source_fps=fps, skip_seconds=SKIP)
    print(f"web page {fps} fps: {c.summary()}")
    assert c.judged > (SECONDS - SKIP) * 30 * 0.8, c.summary()
    assert c.share >= MIN_SHARE, c.summary()
