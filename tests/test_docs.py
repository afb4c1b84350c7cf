"""Every code block of the README and the docs site marked runnable (```python title="runnable")
runs, as a script of its own, against the local livekit-server: ``LIVEKIT_URL`` / ``_API_KEY`` /
``_API_SECRET`` set and ``alice`` publishing a camera and a microphone in ``my-room``, as the
docs say. A block that exits non-zero fails, with its output."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pyegress.testing import LiveKitServer, SyntheticPublisher

from .helpers import cli_env

ROOT = Path(__file__).parent.parent
FENCE = re.compile(r'^```python title="runnable"\n(.*?)^```$', re.S | re.M)


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


def test_the_docs_have_runnable_examples() -> None:
    """The marker is found (a typo would silently run nothing): each request page has one."""
    where = {name.split(":")[0] for name, _ in BLOCKS}
    assert "README.md" in where
    for page in ("room-composite", "participant", "track-composite", "track", "unified"):
        assert f"docs/requests/{page}.md" in where, sorted(where)


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
    code: str, livekit_server: LiveKitServer, alice: SyntheticPublisher, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=tmp_path, env=cli_env(livekit_server),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert "Traceback" not in out.decode(), out.decode()[-3000:]
