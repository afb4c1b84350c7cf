"""SRT stream outputs against a real SRT listener (``srt-live-transmit`` from Debian's
``srt-tools``, ``scripts/install-srt.sh``): what the listener received is decoded."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.outputs.stream import StreamOutput
from pyegress.testing import LiveKitServer, picture_moves, probe, tone_present
from pyegress.testing.ports import free_udp_port

from .helpers import SMALL, check_file_result, publisher, record_for, status, wait_active

pytestmark = pytest.mark.integration

PASSPHRASE = "srt-pass-0123456789"
STREAM_ID = "stream-id-abcdefgh"


class SrtListener:
    """``srt-live-transmit`` listening on loopback (with a passphrase), writing what one caller
    sends to ``path``; it exits when that caller disconnects."""

    def __init__(self, path: Path, port: int = 0) -> None:
        exe = shutil.which("srt-live-transmit")
        if exe is None:
            pytest.fail("srt-live-transmit is missing (scripts/install-srt.sh)", pytrace=False)
        self.port = port or free_udp_port()
        self.path = path
        self._out = path.open("wb")
        self.proc = subprocess.Popen(
            [
                exe,
                "-q",
                "-a:no",
                f"srt://127.0.0.1:{self.port}?mode=listener&passphrase={PASSPHRASE}",
                "file://con",
            ],
            stdout=self._out,
            stderr=subprocess.PIPE,
        )

    def url(self) -> str:
        return f"srt://127.0.0.1:{self.port}?passphrase={PASSPHRASE}&streamid={STREAM_ID}&latency=120"

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._out.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[SrtListener]:
    srt = SrtListener(tmp_path / "received.ts")
    yield srt
    srt.stop()


async def test_participant_egress_streams_to_an_srt_listener(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, listener: SrtListener
) -> None:
    async with publisher(livekit_server, room_name):
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="alice",
            advanced=SMALL,
            stream_outputs=[pe.StreamOutput(protocol=pe.SRT, urls=[listener.url()])],
        )
        info = await record_for(service, await service.start_participant_egress(req), 5.0)
    assert await asyncio.to_thread(listener.wait, 10) == 0, "the caller disconnected cleanly"
    assert status(info) == "EGRESS_COMPLETE", info.error
    (result,) = info.stream_results
    assert result.status == pe.StreamInfo.FINISHED and result.duration > 3e9, result
    assert result.url.startswith(f"srt://127.0.0.1:{listener.port}?"), result.url
    assert PASSPHRASE not in str(info) and STREAM_ID not in str(info)
    got = probe(listener.path)
    assert (
        got.video is not None
        and got.video.codec == "h264"
        and (got.video.width, got.video.height) == (640, 360)
    )
    assert got.audio is not None and got.audio.codec == "aac"
    assert got.video.duration > 3.0, got.video.duration
    assert picture_moves(listener.path)
    assert tone_present(listener.path, 440.0)


async def test_an_srt_url_with_no_listener_fails_alone(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    room_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(StreamOutput, "backoff", 0.3)
    monkeypatch.setattr(StreamOutput, "max_retries", 1)
    monkeypatch.setattr(StreamOutput, "rw_timeout", 2.0)
    dead = f"srt://127.0.0.1:{free_udp_port()}?passphrase={PASSPHRASE}&streamid={STREAM_ID}"
    async with publisher(livekit_server, room_name):
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="alice",
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="kept.mp4")],
            stream_outputs=[pe.StreamOutput(urls=[dead])],
        )
        info = await record_for(service, await service.start_participant_egress(req), 8.0)
    assert status(info) == "EGRESS_COMPLETE", info.error
    check_file_result(info)
    (bad,) = info.stream_results
    assert bad.status == pe.StreamInfo.FAILED and bad.retries == 1 and bad.error, bad
    assert PASSPHRASE not in str(info) and STREAM_ID not in str(info)


async def test_a_dropped_srt_connection_is_resumed(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    room_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listener goes away mid-stream and comes back on the same port: the sink notices
    (SRT's peer timeout), reconnects with backoff and the new listener receives a stream that
    starts on a key frame."""
    monkeypatch.setattr(StreamOutput, "backoff", 0.5)
    first = SrtListener(tmp_path / "first.ts")
    second: SrtListener | None = None
    try:
        async with publisher(livekit_server, room_name):
            req = pe.ParticipantEgressRequest(
                room_name=room_name,
                identity="alice",
                advanced=SMALL,
                stream_outputs=[pe.StreamOutput(urls=[first.url()])],
            )
            started = await service.start_participant_egress(req)
            await asyncio.sleep(4.0)
            first.stop()  # killed: no goodbye, the sender finds out by its timeout
            second = SrtListener(tmp_path / "second.ts", first.port)

            async def retried() -> None:
                while (
                    not (await service.list_egress(pe.ListEgressRequest(egress_id=started.egress_id)))
                    .items[0]
                    .stream_results[0]
                    .retries
                ):
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(retried(), 20)
            await asyncio.sleep(7.0)  # from the next key frame (every 4 s for a stream)
            info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
        assert await asyncio.to_thread(second.wait, 10) == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert status(info) == "EGRESS_COMPLETE", info.error
    (result,) = info.stream_results
    assert result.status == pe.StreamInfo.FINISHED and result.retries >= 1, result
    for path in (first.path, second.path):
        got = probe(path)
        assert got.video is not None and got.video.codec == "h264" and got.video.duration > 1.5, path
    assert tone_present(second.path, 440.0)


def command_lines() -> dict[int, bytes]:
    """Every process's command line (those readable; processes that ended meanwhile left out)."""
    lines = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return lines


async def test_srt_secrets_are_on_no_command_line(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, listener: SrtListener
) -> None:
    """While the stream runs (the listener receiving), no process but the test's own listener
    (which takes its passphrase as an argument) has the passphrase or the stream id in its
    command line: the sender is this process, not a child given the URL."""
    async with publisher(livekit_server, room_name):
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="alice",
            advanced=SMALL,
            stream_outputs=[pe.StreamOutput(protocol=pe.SRT, urls=[listener.url()])],
        )
        started = await service.start_participant_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        deadline = asyncio.get_running_loop().time() + 15
        while listener.path.stat().st_size < 100_000:  # the stream is flowing
            assert asyncio.get_running_loop().time() < deadline, "the listener received nothing"
            await asyncio.sleep(0.1)
        lines = command_lines()
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    assert await asyncio.to_thread(listener.wait, 10) == 0
    assert PASSPHRASE.encode() in lines[listener.proc.pid]  # the scan sees arguments
    for pid, line in lines.items():
        assert STREAM_ID.encode() not in line, (pid, line)
        assert pid == listener.proc.pid or PASSPHRASE.encode() not in line, (pid, line)
    assert status(info) == "EGRESS_COMPLETE", info.error
    got = probe(listener.path)
    assert got.video is not None and got.video.codec == "h264" and got.video.duration > 1.0


async def test_a_wrong_srt_passphrase_is_a_clear_error(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    room_name: str,
    listener: SrtListener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(StreamOutput, "backoff", 0.3)
    monkeypatch.setattr(StreamOutput, "max_retries", 1)
    wrong = "wrong-pass-9876543210"
    url = f"srt://127.0.0.1:{listener.port}?passphrase={wrong}&streamid={STREAM_ID}"
    async with publisher(livekit_server, room_name):
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="alice",
            advanced=SMALL,
            stream_outputs=[pe.StreamOutput(urls=[url])],
        )
        started = await service.start_participant_egress(req)
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            info = (await service.list_egress(pe.ListEgressRequest(egress_id=started.egress_id))).items[0]
            if info.status not in (pe.EGRESS_STARTING, pe.EGRESS_ACTIVE):
                break
            assert asyncio.get_running_loop().time() < deadline, "the egress did not end"
            await asyncio.sleep(0.2)
    assert status(info) == "EGRESS_FAILED", info
    (bad,) = info.stream_results
    assert bad.status == pe.StreamInfo.FAILED and bad.retries == 1, bad
    assert bad.error == "SRT connection failed: Incorrect passphrase", bad.error
    assert "Incorrect passphrase" in info.error, info.error
    assert wrong not in str(info) and STREAM_ID not in str(info)
    assert listener.proc.poll() is None  # the listener refused the caller and still waits
