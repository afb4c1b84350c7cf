"""Web egress and room composite templates in real Chromium (Debian's), pages served from loopback."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import psutil
import pytest
from aiohttp import web
from livekit.protocol import egress as pe

import pyegress
from pyegress.errors import SourceError
from pyegress.sources.processes import start_xvfb, stop_process
from pyegress.sources.web import PROFILE_PREFIX, browser_pids, find_chromium
from pyegress.testing import (
    LiveKitServer,
    PatternGenerator,
    av_offset,
    moving_pairs,
    picture_moves,
    probe,
    region_color,
    tone_present,
)

from .helpers import check_file_result, manifest, publisher, record_for, status, wait_active

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PAGES = Path(__file__).parent / "pages"
TEMPLATES = REPO / "examples" / "templates" / "dist"
SERVICE_OPTIONS = {"wait_timeout": 5.0, "room_empty_timeout": 5.0}
RED, BLUE = (220, 40, 40), (40, 60, 220)
NO_MARKERS = 3600.0


@pytest.fixture(scope="module", autouse=True)
def chromium() -> str:
    """Debian's Chromium and the built sample template; missing ones fail the tests, never skip."""
    try:
        path = find_chromium()
    except SourceError as e:
        pytest.fail(f"{e} (run scripts/install-chromium.sh)", pytrace=False)
    if not (TEMPLATES / "grid" / "index.html").is_file():
        built = subprocess.run(["bash", str(REPO / "scripts" / "build-templates.sh")], capture_output=True)
        if built.returncode != 0:
            pytest.fail(f"cannot build the templates: {built.stderr.decode()[-2000:]}", pytrace=False)
    return path


def pattern_png() -> bytes:
    """The synthetic publisher's pattern (its first frame, 640x360) as a PNG, for pattern.html."""
    i420 = PatternGenerator(640, 360, marker_interval=0).frame_at(0.0)
    rgb = av.VideoFrame.from_ndarray(i420, format="yuv420p").to_ndarray(format="rgb24")
    out = io.BytesIO()
    av.VideoFrame.from_ndarray(rgb, format="rgb24").to_image().save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """The test pages and the built templates, served on 127.0.0.1."""
    png = pattern_png()

    async def pattern(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/pattern.png", pattern)
    app.router.add_static("/templates/", TEMPLATES)
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


def our_browsers() -> set[int]:
    """Chromium processes started by this test process that are still alive."""
    return browser_pids(os.path.join(tempfile.gettempdir(), f"{PROFILE_PREFIX}{os.getpid()}-"))


def running(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie has ended: it only waits for its parent to reap it)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def near(color: tuple[int, int, int], expected: tuple[int, int, int], tol: int = 45) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(color, expected, strict=True))


def box(cx: int, cy: int, r: int = 20) -> tuple[int, int, int, int]:
    return (cx - r, cy - r, cx + r, cy + r)


# --- web egress ---------------------------------------------------------------------------------


async def test_web_page_picture_and_sound_are_recorded(service: pyegress.EgressService, site: str) -> None:
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
    assert picture_moves(path, min_moving_pairs=0.8), "every frame is a new picture (capture at 30 fps)"
    assert tone_present(path, 440.0, start=1.0, end=4.0)
    q: Any = manifest(path)["quality"]  # the page's picture and each capturing AudioContext
    assert [v["name"] for v in q["video"]] == ["page"] and q["video"][0]["frames_received"] > 3 * 30, q
    assert q["audio"] and all(a["name"].startswith("page/audio") for a in q["audio"]), q
    assert info.source_type == pe.EGRESS_SOURCE_TYPE_WEB
    assert not our_browsers(), "the browser was reaped"


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


async def test_web_video_only_with_preset_and_hls(service: pyegress.EgressService, site: str) -> None:
    req = pe.WebEgressRequest(
        url=f"{site}/animated.html",
        video_only=True,
        preset=pe.H264_720P_30,
        segment_outputs=[pe.SegmentedFileOutput(filename_prefix="page", playlist_name="page.m3u8")],
    )
    info = await record_for(service, await service.start_web_egress(req), 3.0)
    assert status(info) == "EGRESS_COMPLETE", info.error
    seg = info.segment_results[0]
    assert seg.segment_count >= 1
    playlist = Path(seg.playlist_location)
    first = next(line for line in playlist.read_text().splitlines() if line.endswith(".ts"))
    media = probe(playlist.parent / first)
    assert media.video is not None and (media.video.width, media.video.height) == (1280, 720)
    assert media.audio is None


@pytest.mark.parametrize("insecure", [True, False])
async def test_insecure_lets_a_page_read_another_origin(
    livekit_server: LiveKitServer, site: str, tmp_path: Path, insecure: bool
) -> None:
    """LiveKit Egress's ``insecure``: the page (one origin) fetches a colour from another origin
    that sends no CORS header. With ``insecure`` the browser hands it over and the recording
    shows it; without, the fetch is refused and the page paints red."""

    async def colour(_: web.Request) -> web.Response:
        return web.Response(text="rgb(40, 60, 220)")

    other = web.Application()
    other.router.add_get("/colour", colour)
    runner = web.AppRunner(other)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    data = f"http://127.0.0.1:{runner.addresses[0][1]}/colour"
    try:
        async with pyegress.EgressService(
            livekit_server.url,
            livekit_server.api_key,
            livekit_server.api_secret,
            output_dir=tmp_path,
            insecure=insecure,
            **SERVICE_OPTIONS,
        ) as svc:
            req = pe.WebEgressRequest(
                url=f"{site}/cross-origin.html?data={data}",
                await_start_signal=True,
                video_only=True,
                advanced=pe.EncodingOptions(width=640, height=360, framerate=15),
                file_outputs=[pe.EncodedFileOutput(filepath="page.mp4")],
            )
            info = await record_for(svc, await svc.start_web_egress(req), 2.0)
    finally:
        await runner.cleanup()
    check_file_result(info)
    colour = region_color(info.file_results[0].filename, 1.0, box(320, 180, 40))
    assert near(colour, BLUE if insecure else RED), colour


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
    assert not our_browsers(), "no Chromium left behind"


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


async def test_a_crashing_page_fails_with_the_reason(service: pyegress.EgressService, site: str) -> None:
    req = pe.WebEgressRequest(
        url=f"{site}/animated.html",
        advanced=pe.EncodingOptions(width=640, height=360, framerate=30),
        file_outputs=[pe.EncodedFileOutput(filepath="crash.mp4")],
    )
    info = await service.start_web_egress(req)
    assert status(await wait_active(service, info.egress_id)) == "EGRESS_ACTIVE"
    await asyncio.sleep(1.0)
    recorder = service.recorder(info.egress_id)
    page = recorder.page.page  # type: ignore[attr-defined]
    cdp = await page.context.new_cdp_session(page)
    with pytest.raises(Exception):  # noqa: B017 - the renderer dies under the call
        await asyncio.wait_for(cdp.send("Page.crash"), 5)
    final = await service.wait_egress(info.egress_id, timeout=20)
    assert status(final) == "EGRESS_FAILED" and "crashed" in final.error, final.error
    assert Path(final.file_results[0].filename).stat().st_size > 0, "what was recorded is kept"
    assert not our_browsers()


# --- processes -------------------------------------------------------------------------------------

#: A recorder process with one page open (x11 capture: Xvfb + headful Chromium); says "open".
RECORDER = """
import asyncio, sys
from pyegress.sources.web import PageSource

async def main() -> None:
    page = PageSource(sys.argv[1], 320, 240, video=True, audio=True, capture="x11")
    await page.open()
    print("open", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.parametrize("killed", ["the recorder", "the recorder and Playwright's driver"])
async def test_nothing_outlives_a_killed_recorder(site: str, killed: str) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RECORDER, f"{site}/animated.html", stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"open\n"
        started = psutil.Process(child.pid).children(recursive=True)
        programs = {Path(p.exe()).name: p for p in started}
        assert {"Xvfb", "chromium", "node"} <= programs.keys(), programs
        targets = [child.pid]
        if killed != "the recorder":  # Playwright's driver would otherwise kill Chromium itself
            targets.append(programs["node"].pid)
        for pid in targets:
            os.kill(pid, signal.SIGKILL)
        await child.wait()
        t0 = time.monotonic()
        while (alive := [p for p in started if running(p)]) and time.monotonic() < t0 + 5:
            await asyncio.sleep(0.05)
        print(f"{len(started)} processes ended {time.monotonic() - t0:.2f} s after {killed} was killed")
        assert not alive, f"left running 5 s after {killed} was killed: {alive}"
        profiles = list(Path(tempfile.gettempdir()).glob(f"{PROFILE_PREFIX}{child.pid}-*"))
        assert not profiles, "the killed recorder's Chromium profile is deleted"
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


def test_xvfb_outlives_the_thread_that_started_it() -> None:
    """A recorder whose event loop runs in a worker thread keeps its display when that thread ends."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    thread = threading.Thread(target=lambda: started.append(asyncio.run(start_xvfb(320, 240))))
    thread.start()
    thread.join()
    xvfb, display = started[0]
    try:
        time.sleep(1.0)
        assert xvfb.poll() is None, "Xvfb died with the thread that started it"
        with av.open(f"{display}.0", format="x11grab", options={"video_size": "320x240"}) as screen:
            frame = next(screen.decode(video=0))
        assert (frame.width, frame.height) == (320, 240), "its display can be read"
    finally:
        stop_process(xvfb)


# --- room composite through a template ---------------------------------------------------------------


def template_request(
    site: str, room_name: str, width: int = 1280, height: int = 720
) -> pe.RoomCompositeEgressRequest:
    """A room composite of ``room_name`` through the sample grid template, ``width`` x
    ``height`` (1280x720) at 30 fps."""
    return pe.RoomCompositeEgressRequest(
        room_name=room_name,
        layout="grid",
        custom_base_url=f"{site}/templates/grid/index.html",
        advanced=pe.EncodingOptions(width=width, height=height, framerate=30),
        file_outputs=[pe.EncodedFileOutput(filepath="template.mp4")],
    )


async def test_template_shows_each_participant_with_sound_and_follows_layout(
    livekit_server: LiveKitServer, service: pyegress.EgressService, site: str, room_name: str
) -> None:
    pubs = []
    for identity, colour, audio in (("red", RED, True), ("blue", BLUE, False), ("moving", None, False)):
        p = publisher(
            livekit_server, room_name, identity, color=colour, audio=audio, marker_interval=NO_MARKERS,
            width=320, height=180,  # small: only colours and motion are checked, the cores are shared
        )  # fmt: skip
        await p.start()
        pubs.append(p)
        await asyncio.sleep(0.3)  # a distinct join order
    info = await service.start_room_composite_egress(template_request(site, room_name))
    active = await wait_active(service, info.egress_id)
    assert status(active) == "EGRESS_ACTIVE", active.error
    await asyncio.sleep(3.5)
    started = (await service.list_egress(pe.ListEgressRequest(egress_id=info.egress_id))).items[0].started_at
    t_switch = (time.time_ns() - started) / 1e9
    await service.update_layout(pe.UpdateLayoutRequest(egress_id=info.egress_id, layout="grid-light"))
    await asyncio.sleep(2.5)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in pubs:
        await p.stop()
    media = check_file_result(final)
    assert media.video is not None and (media.video.width, media.video.height) == (1280, 720)
    assert final.room_composite.layout == "grid-light"
    path = final.file_results[0].filename
    # 2x2 grid in join order (8 px gaps): red, blue / moving pattern, empty cell
    t = t_switch - 0.7
    assert near(region_color(path, t, box(318, 178)), RED), region_color(path, t, box(318, 178))
    assert near(region_color(path, t, box(962, 178)), BLUE), region_color(path, t, box(962, 178))
    assert near(region_color(path, t, box(962, 542)), (0, 0, 0), 30), "the dark background"
    assert near(region_color(path, media.duration - 0.5, box(962, 542)), (255, 255, 255), 30), "grid-light"
    # the moving tile is animated: it changes in at least half the pairs (a frozen one in none)
    # once the page has started. Its first 2 s are left out: with the whole room on two busy cores
    # (the CI's, and here beside two busy loops) the page's start-up showed it at 3-5 pictures a
    # second, then 20-27. Each tile's cadence from the start is measured in test_cadence_web.
    share = moving_pairs(path, min_changed_fraction=0.01, after=2.0)
    assert share is not None and share >= 0.5, share
    assert tone_present(path, 440.0, start=1.0, end=media.duration - 0.5), "the participant's audio"
    assert not our_browsers()


async def test_template_without_start_signal_fails(
    livekit_server: LiveKitServer, service: pyegress.EgressService, site: str, room_name: str
) -> None:
    p = publisher(livekit_server, room_name, "alice", audio=False)
    await p.start()
    try:
        t0 = time.monotonic()
        info = await service.start_room_composite_egress(
            pe.RoomCompositeEgressRequest(
                room_name=room_name,
                custom_base_url=f"{site}/silent.html",
                file_outputs=[pe.EncodedFileOutput(filepath="never.mp4")],
            )
        )
        final = await service.wait_egress(info.egress_id, timeout=30)
    finally:
        await p.stop()
    assert status(final) == "EGRESS_FAILED"
    assert "START_RECORDING" in final.error and "5 s" in final.error, final.error
    assert time.monotonic() - t0 < 20
    assert "token=" not in final.error
    assert not our_browsers()


async def test_template_reaches_only_its_origin_and_livekit(
    livekit_server: LiveKitServer, service: pyegress.EgressService, site: str, room_name: str
) -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="reached")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    other = web.TCPSite(runner, "127.0.0.2", 0)  # another loopback address: another host
    await other.start()
    port = runner.addresses[0][1]
    p = publisher(livekit_server, room_name, "alice", audio=False)
    await p.start()
    try:
        req = pe.RoomCompositeEgressRequest(
            room_name=room_name,
            custom_base_url=f"{site}/probe-network.html?other=http://127.0.0.2:{port}/leak",
            advanced=pe.EncodingOptions(width=640, height=360, framerate=30),
            file_outputs=[pe.EncodedFileOutput(filepath="probe.mp4")],
        )
        info = await record_for(service, await service.start_room_composite_egress(req), 1.0)
    finally:
        await p.stop()
        await runner.cleanup()
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert hits == [], "the browser reached a host other than the template's and LiveKit's"


async def test_template_url_carries_url_token_and_layout() -> None:
    from urllib.parse import parse_qs, urlsplit

    from livekit import api

    rec = pyegress.TemplateRecorder(
        pe.RoomCompositeEgressRequest(
            room_name="r1",
            layout="speaker",
            custom_base_url="https://templates.example/grid/?theme=dark",
            file_outputs=[pe.EncodedFileOutput()],
        ),
        url="http://127.0.0.1:7880",
        api_key="key",
        api_secret="secret" * 6,
    )
    parts = urlsplit(rec.template_url())
    q = parse_qs(parts.query)
    assert (parts.netloc, parts.path) == ("templates.example", "/grid/")
    assert q["theme"] == ["dark"] and q["url"] == ["ws://127.0.0.1:7880"] and q["layout"] == ["speaker"]
    claims = api.TokenVerifier("key", "secret" * 6).verify(q["token"][0])
    grants = claims.video
    assert grants is not None and grants.room == "r1" and grants.room_join and grants.hidden
    assert grants.can_subscribe and not grants.can_publish and not grants.can_publish_data
    assert '"layout": "speaker"' in (claims.metadata or "")
