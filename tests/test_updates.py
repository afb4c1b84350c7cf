"""Following an egress without polling, a caller-chosen egress id, letting go of finished
recorders, and absolute paths without an output folder (real livekit-server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer, probe

from .helpers import publisher, status

pytestmark = pytest.mark.integration


async def test_updates_follow_an_egress_with_its_given_id_and_its_recorder_is_let_go(
    livekit_server: LiveKitServer, room_name: str, tmp_path: Path
) -> None:
    seen: list[pe.EgressInfo] = []
    target = tmp_path / "abs" / "{room_name}.mp4"  # absolute, and no output_dir: written there
    async with (
        pyegress.EgressService(
            livekit_server.url, livekit_server.api_key, livekit_server.api_secret, wait_timeout=4.0
        ) as svc,
        publisher(livekit_server, room_name) as pub,
    ):
        stop_listening = svc.listen(seen.append)
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=800),
            file_outputs=[pe.EncodedFileOutput(filepath=str(target))],
        )
        started = await svc.start_track_composite_egress(req, egress_id="EG_chosenByCaller")
        assert started.egress_id == "EG_chosenByCaller"
        followed: list[str] = []

        async def follow() -> None:
            async for info in svc.updates(started.egress_id):
                followed.append(status(info))
                if info.status == pe.EGRESS_ACTIVE and followed.count("EGRESS_ACTIVE") == 1:
                    asyncio.get_running_loop().call_later(3.0, lambda: asyncio.ensure_future(
                        svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))))  # fmt: skip

        await asyncio.wait_for(follow(), 30)  # the iterator ends by itself once the egress is over
        stop_listening()
        final = (await svc.list_egress(pe.ListEgressRequest(egress_id=started.egress_id))).items[0]
    # every status change reached the iterator and the listener, in order, without polling
    order = ["EGRESS_STARTING", "EGRESS_ACTIVE", "EGRESS_ENDING", "EGRESS_COMPLETE"]
    assert [s for s in dict.fromkeys(followed)] == order, followed
    assert [s for s in dict.fromkeys(status(i) for i in seen)] == order, [status(i) for i in seen]
    assert all(i.egress_id == "EG_chosenByCaller" for i in seen)
    assert status(final) == "EGRESS_COMPLETE", final.error
    # the finished egress stays listable, but its recorder (pipeline, encoders, room) is gone
    with pytest.raises(pyegress.EgressNotFoundError):
        svc.recorder(started.egress_id)
    path = Path(final.file_results[0].filename)
    assert path == tmp_path / "abs" / f"{room_name}.mp4" and path.is_file()
    media = probe(path)
    assert media.video is not None and (media.video.width, media.video.height) == (640, 360)
    assert abs(media.duration - final.file_results[0].duration / 1e9) < 0.25


async def test_an_output_folder_keeps_absolute_paths_inside_it(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str, tmp_path: Path
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.mp4"
    req = pe.ParticipantEgressRequest(
        room_name=room_name, identity="x", file_outputs=[pe.EncodedFileOutput(filepath=str(outside))]
    )
    info = await service.start_participant_egress(req)  # the service fixture has output_dir
    assert status(info) == "EGRESS_FAILED"
    assert "file_outputs[0].filepath" in info.error and "escapes the output folder" in info.error
    assert not outside.exists()
