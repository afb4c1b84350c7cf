"""Bad input: each case ends FAILED (or raises) with an error naming the problem, in bounded time."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer, SyntheticPublisher, probe

from .helpers import cli_env, end_reason, status

pytestmark = pytest.mark.integration


SERVICE_OPTIONS = {"wait_timeout": 2.0}


async def _final(svc: pyegress.EgressService, info: pe.EgressInfo) -> pe.EgressInfo:
    return await svc.wait_egress(info.egress_id, timeout=15)


async def test_unknown_room_fails_after_bounded_wait(service: pyegress.EgressService) -> None:
    t0 = time.monotonic()
    info = await service.start_participant_egress(
        pe.ParticipantEgressRequest(
            room_name="no-such-room", identity="x", file_outputs=[pe.EncodedFileOutput()]
        )
    )
    final = await _final(service, info)
    assert status(final) == "EGRESS_FAILED"
    assert "room_name" in final.error and "no-such-room" in final.error
    assert final.error_code == 404 and end_reason(final) == "End reason: Failure"  # LiveKit's code and reason
    assert time.monotonic() - t0 < 6


async def test_unknown_participant_and_track_fail(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with SyntheticPublisher(
        livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=livekit_server.api_secret,
        room=room_name,
        identity="alice",
        video=False,
    ):
        who = await service.start_participant_egress(
            pe.ParticipantEgressRequest(
                room_name=room_name, identity="bob", file_outputs=[pe.EncodedFileOutput()]
            )
        )
        track = await service.start_track_egress(
            pe.TrackEgressRequest(room_name=room_name, track_id="TR_missing", file=pe.DirectFileOutput())
        )
        comp = await service.start_track_composite_egress(
            pe.TrackCompositeEgressRequest(
                room_name=room_name, video_track_id="TR_gone", file_outputs=[pe.EncodedFileOutput()]
            )
        )
        who, track, comp = await asyncio.gather(*(_final(service, i) for i in (who, track, comp)))
    assert status(who) == "EGRESS_FAILED" and "identity" in who.error and "'bob'" in who.error
    assert status(track) == "EGRESS_FAILED" and "track_id" in track.error and "TR_missing" in track.error
    assert status(comp) == "EGRESS_FAILED" and "video_track_id" in comp.error
    assert [i.error_code for i in (who, track, comp)] == [404, 404, 404]


@pytest.mark.parametrize(
    ("output", "field"),
    [
        (pe.EncodedFileOutput(filepath="../outside.mp4"), "file_outputs[0].filepath"),
        (pe.EncodedFileOutput(filepath="{bogus}.mp4"), "file_outputs[0].filepath"),
        (pe.EncodedFileOutput(file_type=pe.OGG), "file_outputs[0].file_type"),
    ],
)
async def test_invalid_requests_fail_naming_the_field(
    service: pyegress.EgressService, output: pe.EncodedFileOutput, field: str
) -> None:
    info = await service.start_track_composite_egress(
        pe.TrackCompositeEgressRequest(
            room_name="r", audio_track_id="TR_a", video_track_id="TR_v", file_outputs=[output]
        )
    )
    assert status(info) == "EGRESS_FAILED"
    assert info.error.startswith(field), info.error
    assert info.error_code == 400
    listed = await service.list_egress(pe.ListEgressRequest(egress_id=info.egress_id))
    assert listed.items[0].error == info.error


async def test_invalid_options_fail(service: pyegress.EgressService) -> None:
    info = await service.start_participant_egress(
        pe.ParticipantEgressRequest(
            room_name="r",
            identity="a",
            advanced=pe.EncodingOptions(width=1281, height=720),
            file_outputs=[pe.EncodedFileOutput()],
        )
    )
    assert status(info) == "EGRESS_FAILED" and info.error.startswith("advanced.width")
    assert info.error_code == 400


async def test_unwritable_output_folder_fails(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: make the folder a file instead
            locked.chmod(0o700)
            locked.rmdir()
            locked.write_text("not a folder")
        async with pyegress.EgressService(
            livekit_server.url, livekit_server.api_key, livekit_server.api_secret, output_dir=locked / "sub"
        ) as svc:
            info = await svc.start_track_egress(
                pe.TrackEgressRequest(room_name="r", track_id="TR_x", file=pe.DirectFileOutput())
            )
            final = await svc.wait_egress(info.egress_id, timeout=10)
    finally:
        if locked.is_dir():
            locked.chmod(0o700)
    assert status(final) == "EGRESS_FAILED" and final.error.startswith("output_dir"), final.error
    assert final.error_code == 500


async def test_passthrough_raises_not_supported(service: pyegress.EgressService) -> None:
    with pytest.raises(pyegress.NotSupportedError, match=r"^preset: PASSTHROUGH"):
        await service.start_egress(
            pe.StartEgressRequest(
                room_name="r", template=pe.TemplateSource(layout="grid"), preset=pe.PASSTHROUGH
            )
        )
    bad = await service.start_room_composite_egress(
        pe.RoomCompositeEgressRequest(
            room_name="r", custom_base_url="ftp://127.0.0.1/", file_outputs=[pe.EncodedFileOutput()]
        )
    )
    assert status(bad) == "EGRESS_FAILED" and bad.error.startswith("custom_base_url"), bad.error
    assert bad.error_code == 400


async def test_bad_credentials_fail_and_secret_never_logged(
    livekit_server: LiveKitServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "definitely-wrong-secret-0123456789abcdef"
    async with pyegress.EgressService(
        livekit_server.url, livekit_server.api_key, secret, output_dir=tmp_path, wait_timeout=2
    ) as svc:
        info = await svc.start_participant_egress(
            pe.ParticipantEgressRequest(room_name="r", identity="a", file_outputs=[pe.EncodedFileOutput()])
        )
        final = await svc.wait_egress(info.egress_id, timeout=10)
        assert secret not in repr(svc)
    assert status(final) == "EGRESS_FAILED" and final.error.startswith("url"), final.error
    assert final.error_code == 401, "the server's answer to the bad credentials"
    assert secret not in caplog.text and secret not in str(final)


async def test_cli_records_request_json(
    livekit_server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    async with SyntheticPublisher(
        livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=livekit_server.api_secret,
        room=room_name,
        identity="alice",
    ):
        request = tmp_path / "participant.json"
        request.write_text(
            json.dumps(
                {
                    "roomName": room_name,
                    "identity": "alice",
                    "advanced": {"width": 640, "height": 360, "framerate": 30},
                    "fileOutputs": [{"fileType": "MP4", "filepath": "cli/{publisher_identity}"}],
                }
            )
        )
        env = cli_env(livekit_server)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyegress.cli", "record", str(request), "--duration", "4",
            "--output-dir", str(tmp_path),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    info = json.loads(out)
    assert info["status"] == "EGRESS_COMPLETE"
    assert "fps" in err.decode() and "EGRESS_ACTIVE" in err.decode()  # the progress line
    path = Path(info["file_results"][0]["filename"])
    assert path == tmp_path / "cli" / "alice.mp4"
    media = probe(path)
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    assert 3.0 < media.duration < 5.0
    assert livekit_server.api_secret not in out.decode() + err.decode()


async def test_killed_process_leaves_a_playable_mp4(
    livekit_server: LiveKitServer, tmp_path: Path, room_name: str
) -> None:
    """The anchor complaint "files lost when a process dies": MP4 is written in fragments."""
    async with SyntheticPublisher(
        livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=livekit_server.api_secret,
        room=room_name,
        identity="alice",
    ):
        request = tmp_path / "req.json"
        request.write_text(
            json.dumps(
                {
                    "room_name": room_name,
                    "identity": "alice",
                    "advanced": {"width": 640, "height": 360, "key_frame_interval": 2},
                    "file_outputs": [{"filepath": "crash.mp4"}],
                }
            )
        )
        env = cli_env(livekit_server)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyegress.cli", "record", str(request), "--duration", "60", "--quiet",
            "--output-dir", str(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(9)
        proc.kill()  # SIGKILL: no cleanup, no trailer
        await proc.wait()
    media = probe(tmp_path / "crash.mp4")
    assert media.video is not None and media.audio is not None
    assert media.video.frame_count >= 4 * 30, media  # everything up to the last key frame survives
    assert 4.0 <= media.duration <= 9.0
