"""Shared pytest fixtures.

pytest-asyncio runs every test and fixture on one session-scoped event loop
(``asyncio_default_*_loop_scope = "session"`` in pyproject.toml), because the LiveKit
FFI client is process-global and binds to the loop that first uses it.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import pyegress
from pyegress.testing import LiveKitServer, LiveKitServerError, netns
from pyegress.testing.relay import BurstRelay
from pyegress.testing.rtmp_server import RtmpServer

from .helpers import start_rtmp

pytest_plugins = ["tests.conftest_storage"]


_status: list[int] = [0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status[0] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the run with pytest's status, without the interpreter's teardown: there livekit's
    FFI runtime (livekit 1.2.1) aborted the process once, after every test had run and its
    summary was printed ("panic in a function that cannot unwind" in a tokio thread, exit 134),
    which made a finished run fail. Every fixture and report is done by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status[0])


@pytest.fixture(scope="session")
def livekit_server() -> Iterator[LiveKitServer]:
    """A real livekit-server on loopback, shared by the whole session.

    Never skipped: if the server cannot start the requesting test fails with the reason
    (install it with ``scripts/install-livekit-server.sh`` or set ``LIVEKIT_SERVER_BIN``).
    Only inside a network namespace of pyegress's: libwebrtc never gathers loopback candidates,
    so outside one the media would run over this machine's own interface address.
    """
    yield from _running(LiveKitServer())


@pytest.fixture
def bursty_server() -> Iterator[LiveKitServer]:
    """A livekit-server its clients reach through a jittery network: a relay that holds the
    audio they send and lets it go every 200 ms (``pyegress.testing.relay``); its ``relay``
    says what it carried. The sender's own timing is left as it is."""
    yield from _running(LiveKitServer(relay=BurstRelay(burst=0.2), udp_ports=100))


def _running(server: LiveKitServer) -> Iterator[LiveKitServer]:
    if netns.current() is None:
        pytest.fail(
            "WebRTC tests run inside a network namespace: "
            "python -m pyegress.testing.netns -- pytest ... (scripts/test.sh does)",
            pytrace=False,
        )
    try:
        server.start()
    except LiveKitServerError as e:
        pytest.fail(f"cannot start livekit-server: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def room_name(request: pytest.FixtureRequest) -> str:
    """A room name unique to this test invocation."""
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:40]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def service(
    livekit_server: LiveKitServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[pyegress.EgressService]:
    """An EgressService on the test server writing into ``tmp_path``.

    A test module may set ``SERVICE_OPTIONS = {...}`` to pass other keyword arguments (for
    example a shorter ``wait_timeout``).
    """
    options = {"wait_timeout": 4.0, **getattr(request.module, "SERVICE_OPTIONS", {})}
    async with pyegress.EgressService(
        livekit_server.url, livekit_server.api_key, livekit_server.api_secret, output_dir=tmp_path, **options
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
def rtmp() -> Iterator[RtmpServer]:
    """A real RTMP(S) server (nginx-rtmp) on loopback for the module's tests."""
    server = start_rtmp()
    yield server
    server.stop()
