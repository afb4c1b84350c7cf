"""The encoded receive path's rejoin after a lost connection, without a server: whatever
joining again raises, it is tried again until ``reconnect_timeout`` and then the recording
ends (FAILED, retried) saying why, never left recording a lost room for ever."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from livekit.protocol import egress as pe

if sys.version_info < (3, 11):  # aiortc 1.16 needs Python 3.11; on 3.10 there is no encoded path
    pytest.skip("aiortc 1.16 is installed on Python 3.11 and later only", allow_module_level=True)

from pyegress.errors import RoomConnectionLostError
from pyegress.recorders.decoded import DecodedRecorder
from pyegress.sources.encoded import EncodedSubscriber


async def test_a_rejoin_that_keeps_failing_ends_the_recording_at_its_bound(tmp_path: Path) -> None:
    req = pe.ParticipantEgressRequest(room_name="r", identity="a", file_outputs=[
        pe.EncodedFileOutput(filepath="a.mp4")])  # fmt: skip
    rec = DecodedRecorder(req, url="ws://127.0.0.1:1", api_key="k", api_secret="s",
                          reconnect_timeout=0.6, output_dir=tmp_path)  # fmt: skip
    tries = 0

    async def broken(timeout: float) -> EncodedSubscriber:
        nonlocal tries
        tries += 1
        raise ValueError("an answer that does not parse")  # not a connection error

    rec._join = broken  # type: ignore[method-assign]
    rec._live = True  # recording
    lost = time.monotonic()
    rec._disconnected(False, "the server closed the signaling connection")
    await asyncio.wait_for(rec._end.wait(), 5.0)
    took = time.monotonic() - lost
    error = rec._end_error
    assert isinstance(error, RoomConnectionLostError), error
    assert "lost and not regained within reconnect_timeout (0.6 s)" in str(error), error
    assert "an answer that does not parse" in str(error), error
    assert 0.6 <= took < 1.5 and tries >= 2, (took, tries)
