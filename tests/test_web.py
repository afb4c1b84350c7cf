"""Web egress in real headless Chromium (Debian's), pages served from loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import av_offset, picture_moves, tone_present

from .helpers import check_file_result, record_for, status

pytestmark = pytest.mark.integration

PAGES = Path(__file__).parent / "pages"
SERVICE_OPTIONS = {"wait_timeout": 3.0}


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """The test pages, served on 127.0.0.1."""
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app)
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)
    await server.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def chromium_processes() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"chromium" in cmd and b"--headless" in cmd:
                pids.append(int(proc.name))
    return pids


async def test_web_page_picture_and_sound_are_recorded(service: pyegress.EgressService, site: str) -> None:
    before = set(chromium_processes())
    req = pe.WebEgressRequest(
        url=f"{site}/animated.html",
        await_start_signal=True,
        advanced=pe.EncodingOptions(width=640, height=360, framerate=30),
        file_outputs=[pe.EncodedFileOutput(filepath="page.mp4")],
    )
    info = await record_for(service, await service.start_web_egress(req), 5.0)
    media = check_file_result(info)
    assert media.video is not None and media.audio is not None
    assert (media.video.codec, media.video.width, media.video.height) == ("h264", 640, 360)
    assert media.video.measured_fps is not None and abs(media.video.measured_fps - 30) < 0.5
    path = info.file_results[0].filename
    assert picture_moves(path, min_moving_pairs=0.5)
    assert tone_present(path, 440.0, start=1.0, end=4.0)
    assert info.source_type == pe.EGRESS_SOURCE_TYPE_WEB
    assert set(chromium_processes()) <= before, "the browser was reaped"


async def test_web_audio_only_to_ogg(service: pyegress.EgressService, site: str) -> None:
    req = pe.WebEgressRequest(
        url=f"{site}/animated.html",
        audio_only=True,
        file_outputs=[pe.EncodedFileOutput(file_type=pe.OGG, filepath="page.ogg")],
    )
    info = await record_for(service, await service.start_web_egress(req), 3.0)
    media = check_file_result(info)
    assert media.video is None and media.audio is not None and media.audio.codec == "opus"
    assert tone_present(info.file_results[0].filename, 440.0, start=0.5, end=2.5)


async def test_missing_start_signal_fails_in_bounded_time(service: pyegress.EgressService, site: str) -> None:
    t0 = time.monotonic()
    info = await service.start_web_egress(
        pe.WebEgressRequest(
            url=f"{site}/silent.html", await_start_signal=True, file_outputs=[pe.EncodedFileOutput()]
        )
    )
    final = await service.wait_egress(info.egress_id, timeout=30)
    assert status(final) == "EGRESS_FAILED"
    assert final.error.startswith("await_start_signal") and "START_RECORDING" in final.error
    assert time.monotonic() - t0 < 20
    assert not chromium_processes(), "no Chromium left behind"


async def test_bad_url_is_refused(service: pyegress.EgressService) -> None:
    info = await service.start_web_egress(
        pe.WebEgressRequest(url="ftp://127.0.0.1/x", file_outputs=[pe.EncodedFileOutput()])
    )
    assert status(info) == "EGRESS_FAILED" and info.error.startswith("url")


async def test_web_page_audio_and_video_stay_in_sync(service: pyegress.EgressService, site: str) -> None:
    req = pe.WebEgressRequest(
        url=f"{site}/markers.html",
        await_start_signal=True,
        advanced=pe.EncodingOptions(width=640, height=360, framerate=30),
        file_outputs=[pe.EncodedFileOutput(filepath="markers.mp4")],
    )
    info = await record_for(service, await service.start_web_egress(req), 6.0)
    check_file_result(info)
    off = av_offset(info.file_results[0].filename)
    print("web A/V offset", off)
    assert off.count >= 4 and abs(off.median) <= 0.060, off
