"""Shared pytest fixtures.

pytest-asyncio runs every test and fixture on one session-scoped event loop
(``asyncio_default_*_loop_scope = "session"`` in pyproject.toml), because the LiveKit
FFI client is process-global and binds to the loop that first uses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pyegress.testing import LiveKitServer, LiveKitServerError

pytest_plugins = ["tests.conftest_storage"]


@pytest.fixture(scope="session")
def livekit_server() -> Iterator[LiveKitServer]:
    """A real livekit-server on loopback, shared by the whole session.

    Never skipped: if the server cannot start the requesting test fails with the reason
    (install it with ``scripts/install-livekit-server.sh`` or set ``LIVEKIT_SERVER_BIN``).
    """
    server = LiveKitServer()
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
