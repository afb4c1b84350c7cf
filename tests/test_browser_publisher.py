"""Browsers as publishers: livekit-client in Debian's Chromium (VP8 simulcast, Opus DTX, the
browser's own frame pacing) recorded by participant egress and a two-participant grid; the
files are decoded and their picture, sound, lip sync and motion cadence measured."""

from __future__ import annotations

from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.media.layout import grid
from pyegress.testing import AvOffset, LiveKitServer, av_offset, region_color, tone_present
from pyegress.testing.browser_publisher import BrowserPublisher
from pyegress.testing.cadence import cadence

from .helpers import check_file_result, publisher, record_for

pytestmark = pytest.mark.integration

OUT = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1500)
SECONDS = 8.0
MIN_CADENCE = 0.98
MAX_OFFSET = 0.040


def browser(server: LiveKitServer, room: str, identity: str, **kw: object) -> BrowserPublisher:
    """A browser participant of ``room`` on the test server (not started yet)."""
    return BrowserPublisher(
        server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        room=room,
        identity=identity,
        **kw,  # type: ignore[arg-type]
    )


def _lip_sync(off: AvOffset) -> list[str]:
    """What is wrong with the A/V offset of a recording: every marker, the first one included,
    within ±40 ms (issue 14: lip sync from the start)."""
    worst = max(off.offsets, key=abs)
    if off.count >= 5 and abs(off.median) <= MAX_OFFSET and abs(worst) <= MAX_OFFSET:
        return []
    ms = ", ".join(f"{o * 1000:+.0f}" for o in off.offsets)
    return [f"A/V offsets (ms, audio later +): median {off.median * 1000:+.0f}, each: {ms}"]


def _not_black(rgb: tuple[int, int, int]) -> bool:
    return max(rgb) > 40


#: Not reached yet (issue 14 open): measured on this machine, participant egress of a browser
#: 78-90 % cadence and a first marker -40..-70 ms off; a grid's tiles 56-92 %, its A/V median
#: -7..-52 ms. Strict: the day these pass, the marker must go.
NOT_YET = pytest.mark.xfail(strict=True, reason="issue 14: browser publishers, cadence and first marker")


@NOT_YET
async def test_participant_egress_of_a_browser(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with browser(livekit_server, room_name, "chrome") as pub:
        assert pub.identity == "chrome" and pub.video_track_sid and pub.audio_track_sid
        req = pe.ParticipantEgressRequest(
            room_name=room_name, identity="chrome", advanced=OUT,
            file_outputs=[pe.EncodedFileOutput(filepath="browser.mp4")],
        )  # fmt: skip
        info = await record_for(service, await service.start_participant_egress(req), SECONDS)
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert media.video is not None and media.audio is not None
    assert (media.video.width, media.video.height) == (640, 360)
    assert _not_black(region_color(path, media.duration - 1.3))
    assert tone_present(str(path), 440, start=1.0, end=media.duration - 0.5)
    c = cadence(path, source_fps=30)
    assert c.judged > SECONDS * 30 * 0.7, c.summary()
    problems = _lip_sync(av_offset(path)) + ([] if c.share >= MIN_CADENCE else [c.summary()])
    assert not problems, problems


@NOT_YET
async def test_grid_of_a_browser_and_a_python_publisher(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    # join order decides the cells: the browser first (left), then the SDK publisher (right),
    # whose markers are off so that every flash and beep is the browser's
    async with (
        browser(livekit_server, room_name, "chrome", tone_hz=440),
        publisher(livekit_server, room_name, "python", tone_hz=660, marker_interval=3600.0),
    ):
        req = pe.RoomCompositeEgressRequest(
            room_name=room_name, layout="grid", file_outputs=[pe.EncodedFileOutput(filepath="grid.mp4")]
        )
        info = await record_for(service, await service.start_room_composite_egress(req), SECONDS)
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    assert media.video is not None and (media.video.width, media.video.height) == (1280, 720)
    for hz in (440, 660):  # both voices are mixed in
        assert tone_present(str(path), hz, start=1.0, end=media.duration - 0.5, min_relative_db=-12), hz
    problems = _lip_sync(av_offset(path))  # the browser's cell flashes, its beep is in the mix
    for name, cell in zip(("chrome", "python"), grid(2, 1280, 720), strict=True):
        box = (cell.x, cell.y, cell.w, cell.h)
        assert _not_black(
            region_color(path, media.duration - 1.3, (cell.x, cell.y, cell.x + cell.w, cell.y + cell.h))
        )
        c = cadence(path, source_fps=30, box=box, scale=max(cell.w / 640, cell.h / 360))
        assert c.judged > SECONDS * 30 * 0.6, f"{name}: {c.summary()}"
        if c.share < MIN_CADENCE:
            problems.append(f"{name}: {c.summary()}")
    assert not problems, problems
