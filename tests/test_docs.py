"""Every code block of the README and the docs site marked runnable (```python title="runnable")
runs, as a script of its own, against the local livekit-server: ``LIVEKIT_URL`` / ``_API_KEY`` /
``_API_SECRET`` set and ``alice`` publishing a camera and a microphone in ``my-room``, as the
docs say.

A block takes what a user keeps in the environment (a stream URL, a bucket and its
credentials); for each variable it reads (:data:`PROVIDERS`) the test starts the real server
behind it: nginx-rtmp, an SRT listener, a WebSocket receiver, a web page, MinIO,
fake-gcs-server, Azurite. A block passes when it exits cleanly and what it produced decodes:
every media file it wrote, every stream a server received and every object that landed in a
store holds alice's moving picture and her 440 Hz tone on each audio track; sidecars and
manifests parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import re
import sys
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import av
import pytest
from aiohttp import web

import pyegress
from pyegress.testing import LiveKitServer, SyntheticPublisher, picture_moves, probe, tone_present
from pyegress.testing.checks import audio_samples
from pyegress.testing.rtmp_server import RtmpServer
from pyegress.testing.storage_emulators import AzuriteServer, FakeGcsServer, MinioServer

from .helpers import cli_env
from .test_srt import SrtListener
from .test_unified import pcm_receiver

ROOT = Path(__file__).parent.parent
PAGES = Path(__file__).parent / "pages"
FENCE = re.compile(r'^```python title="runnable"\n(.*?)^```$', re.S | re.M)
#: what is decoded (HLS by its playlist, not segment by segment; ``.mpegts``: what SRT sent)
MEDIA = {".mp4", ".ogg", ".webm", ".mp3", ".m3u8", ".flv", ".mpegts", ".wav"}
RECORDED = {".mp4", ".ogg", ".webm", ".mp3", ".m3u8"}
TONE = 440.0


def runnable_blocks() -> list[tuple[str, str]]:
    """(``file:line``, code) of each runnable block, README first."""
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", m.group(1)))
    return blocks


BLOCKS = runnable_blocks()

# --- what the blocks are given ------------------------------------------------------------------


@dataclass
class Given:
    """What a provider works with: the test's fixtures, a folder of its own, the block's environment."""

    request: pytest.FixtureRequest
    where: Path
    env: dict[str, str]


#: Awaited after the block ran: the media a server or store received (as local files).
Received: TypeAlias = Callable[[], Awaitable[list[Path]]]
Provider: TypeAlias = Callable[[Given], contextlib.AbstractAsyncContextManager[Received]]


async def until(what: str, ready: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not ready():
        assert asyncio.get_running_loop().time() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def rtmp_url(given: Given) -> AsyncIterator[Received]:
    server: RtmpServer = given.request.getfixturevalue("rtmp")
    key = "sk_live_" + uuid.uuid4().hex
    given.env["RTMP_URL"] = server.url(key)

    async def received() -> list[Path]:
        await until("nginx recorded the stream", lambda: bool(server.recorded(key)))
        return server.recorded(key)

    yield received


@contextlib.asynccontextmanager
async def srt_url(given: Given) -> AsyncIterator[Received]:
    given.where.mkdir()
    listener = SrtListener(given.where / "received.mpegts")
    given.env["SRT_URL"] = listener.url()
    try:

        async def received() -> list[Path]:
            assert await asyncio.to_thread(listener.wait, 10) == 0, "the caller disconnected cleanly"
            return [listener.path]

        yield received
    finally:
        listener.stop()


@contextlib.asynccontextmanager
async def websocket_url(given: Given) -> AsyncIterator[Received]:
    async with pcm_receiver() as (url, frames, closed):
        given.env["WEBSOCKET_URL"] = url

        async def received() -> list[Path]:
            await asyncio.wait_for(closed.wait(), 10)
            given.where.mkdir()
            with wave.open(str(given.where / "received.wav"), "wb") as w:  # 48 kHz stereo s16le, as sent
                w.setnchannels(2)
                w.setsampwidth(2)
                w.setframerate(48000)
                w.writeframes(b"".join(frames))
            return [given.where / "received.wav"]

        yield received


@contextlib.asynccontextmanager
async def page_url(given: Given) -> AsyncIterator[Received]:
    """tests/pages on loopback; PAGE_URL is a page with moving stripes and a 440 Hz tone."""
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    given.env["PAGE_URL"] = f"http://127.0.0.1:{runner.addresses[0][1]}/animated.html"

    async def received() -> list[Path]:
        return []  # the page's recording is a file the block wrote

    try:
        yield received
    finally:
        await runner.cleanup()


Store: TypeAlias = MinioServer | FakeGcsServer | AzuriteServer


def store_provider(fixture: str, variables: Callable[[Any, str], dict[str, str]]) -> Provider:
    """A bucket of a fresh name on a session's emulator, named to the block by ``variables``;
    afterwards every object in it, downloaded."""

    @contextlib.asynccontextmanager
    async def provide(given: Given) -> AsyncIterator[Received]:
        store: Store = given.request.getfixturevalue(fixture)
        bucket = await asyncio.to_thread(store.make_bucket, f"docs-{uuid.uuid4().hex[:12]}")
        given.env.update(variables(store, bucket))

        async def received() -> list[Path]:
            keys = await asyncio.to_thread(store.keys, bucket)
            assert any(Path(k).suffix in RECORDED for k in keys), f"no recording landed in {fixture}: {keys}"
            for key in keys:
                (given.where / key).parent.mkdir(parents=True, exist_ok=True)
                (given.where / key).write_bytes(await asyncio.to_thread(store.read, bucket, key))
            return [given.where / k for k in keys]

        yield received

    return provide


def s3_variables(s: MinioServer, bucket: str) -> dict[str, str]:
    return {
        "S3_BUCKET": bucket,
        "S3_ENDPOINT": s.endpoint,
        "AWS_REGION": s.region,
        "AWS_ACCESS_KEY_ID": s.access_key,
        "AWS_SECRET_ACCESS_KEY": s.secret_key,
    }


def gcs_variables(s: FakeGcsServer, bucket: str) -> dict[str, str]:
    return {"GCS_BUCKET": bucket, "STORAGE_EMULATOR_HOST": s.endpoint}


def azure_variables(s: AzuriteServer, bucket: str) -> dict[str, str]:
    return {
        "AZURE_CONTAINER": bucket,
        "AZURE_STORAGE_ACCOUNT": s.account_name,
        "AZURE_STORAGE_KEY": s.account_key,
        "AZURE_STORAGE_BLOB_ENDPOINT": s.blob_endpoint,
    }


#: Variable a block reads → what provides it.
PROVIDERS: dict[str, Provider] = {
    "RTMP_URL": rtmp_url,
    "SRT_URL": srt_url,
    "WEBSOCKET_URL": websocket_url,
    "PAGE_URL": page_url,
    "S3_BUCKET": store_provider("minio", s3_variables),
    "GCS_BUCKET": store_provider("fake_gcs", gcs_variables),
    "AZURE_CONTAINER": store_provider("azurite", azure_variables),
}

# --- what the blocks produced -------------------------------------------------------------------


def check_media(path: Path) -> int:
    """``path`` plays: a second or more, alice's picture moves once it came (black before),
    her tone on every audio track. Returns the number of audio tracks."""
    info = probe(path)
    assert info.video is not None or info.audio is not None, f"{path}: no streams"
    assert info.duration >= 1.0, f"{path}: {info.summary()}"
    if info.video is not None:
        assert picture_moves(path, from_first_motion=True), f"{path}: a still picture"
    with av.open(str(path)) as c:
        tracks = len(c.streams.audio)
    for i in range(tracks):
        assert tone_present(audio_samples(path, i), TONE), f"{path}: no {TONE:g} Hz on audio track {i}"
    return tracks


def check_products(code: str, produced: list[Path]) -> str:
    """Decode and parse what a block produced; a summary for the log."""
    media = [p for p in produced if p.suffix in MEDIA]
    assert media, f"the block produced no media: {sorted(p.name for p in produced)}"
    tracks = {p: check_media(p) for p in media}
    for p in produced:
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".vtt":
            assert p.read_text().startswith("WEBVTT"), p
        elif p.suffix == ".jpg":
            with av.open(str(p)) as c:
                assert next(c.decode(video=0)).width > 0, p
    if "speaker_tracks=True" in code:
        assert max(tracks.values()) >= 2, f"a mix and a track per speaker: {tracks}"
    if ".mark(" in code:
        events = [json.loads(p.read_text()) for p in produced if p.name.endswith(".events.json")]
        assert any(e["type"] == "mark" for doc in events for e in doc["events"]), events
    return ", ".join(f"{p.name}: {probe(p).summary()}" for p in media)


# --- the tests ----------------------------------------------------------------------------------


def test_the_docs_have_runnable_examples() -> None:
    """The marker is found (a typo would silently run nothing): each request page, the storage
    and controls pages have one, and every provider is used by some block."""
    where = {name.split(":")[0] for name, _ in BLOCKS}
    assert "README.md" in where
    pages = ("requests/room-composite", "requests/participant", "requests/track-composite", "requests/track",
             "requests/web", "requests/unified", "storage", "controls/pause", "controls/selection",
             "controls/sidecars", "controls/speaker-tracks")  # fmt: skip
    for page in pages:
        assert f"docs/{page}.md" in where, sorted(where)
    for variable in PROVIDERS:
        assert any(variable in code for _, code in BLOCKS), f"no runnable block uses {variable}"


def resolve(dotted: str) -> Any:
    """The object a ``::: pyegress....`` line documents."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_public_name_is_in_the_api_reference() -> None:
    """pyegress's own public names (not the re-exported protocol messages) each have a
    ``::: name`` in a reference page, or sit in a module that has one; mkdocs build --strict
    then fails when one does not render."""
    text = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    documented = [resolve(t) for t in re.findall(r"^::: ([\w.]+)", text, re.M)]
    for name in pyegress.__all__:
        obj = getattr(pyegress, name)
        if not getattr(obj, "__module__", "").startswith("pyegress"):
            continue
        module = sys.modules[obj.__module__]
        assert any(d is obj or d is module for d in documented), f"{name} is in no reference page"


#: the service's and the pipeline's hooks into a recorder, not an application's API
RECORDER_HOOKS = {"from_config", "end", "reach_limit", "abort_at_limit", "done", "note"}


def public_methods() -> Iterator[tuple[str, Any]]:
    """The methods an application calls, of the classes the reference documents."""
    for cls in (
        pyegress.EgressService,
        pyegress.Recorder,
        pyegress.Selection,
        pyegress.Rule,
        pyegress.SessionLimits,
    ):
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or fn.__qualname__.split(".")[0] != cls.__name__:
                continue
            if cls is pyegress.Recorder and name in RECORDER_HOOKS:
                continue
            yield f"{cls.__name__}.{name}", fn


@pytest.mark.parametrize(("name", "fn"), list(public_methods()), ids=[n for n, _ in public_methods()])
def test_public_methods_say_args_returns_and_raises(name: str, fn: Any) -> None:
    """A method with parameters documents them under ``Args:``, one that returns something
    under ``Returns:`` (or ``Yields:``), each parameter by name."""
    doc = inspect.getdoc(fn) or ""
    assert doc, f"{name} has no docstring"
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters if p not in ("self", "cls")]
    if params:
        assert "Args:" in doc, f"{name}: no Args: section"
        for p in params:
            assert re.search(rf"^\s+{p}( \(.*\))?:", doc, re.M), f"{name}: Args: does not name {p}"
    returns = sig.return_annotation
    if returns not in ("None", None, inspect.Signature.empty):
        assert "Returns:" in doc or "Yields:" in doc, f"{name}: no Returns: section"


@pytest.fixture(scope="module")
async def alice(livekit_server: LiveKitServer) -> AsyncIterator[SyntheticPublisher]:
    async with SyntheticPublisher(
        livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret,
        room="my-room", identity="alice", width=640, height=360,
    ) as pub:  # fmt: skip
        yield pub


@pytest.mark.integration
@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[name for name, _ in BLOCKS])
async def test_runnable_block(
    code: str,
    livekit_server: LiveKitServer,
    alice: SyntheticPublisher,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    env = cli_env(livekit_server)
    async with contextlib.AsyncExitStack() as stack:
        wanted = [name for name in PROVIDERS if name in code]
        receivers = [
            await stack.enter_async_context(PROVIDERS[name](Given(request, tmp_path / name.lower(), env)))
            for name in wanted
        ]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, cwd=run, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        log = out.decode()[-3000:]
        assert proc.returncode == 0, log
        assert "Traceback" not in log, log
        received = [path for receive in receivers for path in await receive()]
    written = [p for p in run.rglob("*") if p.is_file()]
    summary = await asyncio.to_thread(check_products, code, written + received)
    print(log, "checked:", summary, sep="\n")
