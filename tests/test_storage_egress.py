"""End to end: a track composite recorded by a real livekit-server egress, uploaded to MinIO."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.errors import InvalidRequestError
from pyegress.testing import LiveKitServer, SyntheticPublisher, probe
from pyegress.testing.storage_emulators import MinioServer

from .helpers import status, wait_active

pytestmark = pytest.mark.integration

SMALL = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1200)


def publisher(server: LiveKitServer, room: str) -> SyntheticPublisher:
    return SyntheticPublisher(
        server.url, api_key=server.api_key, api_secret=server.api_secret, room=room, identity="alice"
    )


async def record(
    svc: pyegress.EgressService, req: pe.TrackCompositeEgressRequest, seconds: float
) -> pe.EgressInfo:
    started = await svc.start_track_composite_egress(req)
    active = await wait_active(svc, started.egress_id)
    assert status(active) == "EGRESS_ACTIVE", active.error
    await asyncio.sleep(seconds)
    return await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))


@pytest.fixture
async def service(
    livekit_server: LiveKitServer, minio: MinioServer, tmp_path: Path
) -> AsyncIterator[pyegress.EgressService]:
    async with pyegress.EgressService(
        livekit_server.url,
        livekit_server.api_key,
        livekit_server.api_secret,
        output_dir=tmp_path,
        wait_timeout=4.0,
        # the default store: a bucket that does not exist (the request's own s3 must win)
        storage=pe.StorageConfig(s3=minio.upload_message("no-such-default-bucket")),
    ) as svc:
        yield svc


async def test_track_composite_is_uploaded_to_s3(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    minio: MinioServer,
    bucket_name: str,
    room_name: str,
    tmp_path: Path,
) -> None:
    minio.make_bucket(bucket_name)
    s3 = minio.upload_message(bucket_name, metadata={"room": room_name})
    async with publisher(livekit_server, room_name) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="{room_name}/composite.mp4", s3=s3)],
        )
        info = await record(service, req, 3.0)

    assert status(info) == "EGRESS_COMPLETE", info.error
    assert not info.backup_storage_used and not info.error
    res = info.file_results[0]
    key = f"{room_name}/composite.mp4"
    assert res.location == f"{minio.endpoint}/{bucket_name}/{key}"
    # the object is the recording, byte for byte (the local file is kept too)
    local = Path(res.filename)
    assert local == tmp_path / key
    data = minio.read(bucket_name, key)
    assert data == local.read_bytes() and len(data) == res.size
    downloaded = tmp_path / "downloaded.mp4"
    downloaded.write_bytes(data)
    media = probe(downloaded)
    assert media.video is not None and media.video.codec == "h264"
    assert media.audio is not None and media.audio.codec == "aac"
    assert abs(media.duration - res.duration / 1e9) < 0.25, (media.duration, res.duration)
    assert 2.5 < media.duration < 5.0
    head = minio.client().head_object(Bucket=bucket_name, Key=key)
    assert head["ContentType"] == "video/mp4" and head["Metadata"] == {"room": room_name}
    # the manifest is uploaded beside the file
    assert info.manifest_location == f"{minio.endpoint}/{bucket_name}/{key}.json"
    manifest = json.loads(minio.read(bucket_name, key + ".json"))
    assert manifest["egress_id"] == info.egress_id
    # no credential anywhere in what is returned or stored
    for text in (str(info), json.dumps(manifest)):
        assert minio.secret_key not in text
        assert minio.access_key not in text


async def test_default_storage_with_missing_bucket_fails_and_keeps_the_file(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    minio: MinioServer,
    room_name: str,
    tmp_path: Path,
) -> None:
    async with publisher(livekit_server, room_name) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="kept.mp4")],
        )
        info = await record(service, req, 1.5)
    assert status(info) == "EGRESS_FAILED"
    assert info.backup_storage_used
    assert f"s3 bucket 'no-such-default-bucket' at {minio.endpoint}" in info.error
    assert "NoSuchBucket" in info.error and "file_outputs[0]" in info.error
    res = info.file_results[0]
    assert res.location == res.filename == str(tmp_path / "kept.mp4")
    media = probe(res.location)  # the recording survived, complete
    assert media.video is not None and abs(media.duration - res.duration / 1e9) < 0.25
    assert minio.secret_key not in str(info)


def test_invalid_default_storage_names_the_field() -> None:
    with pytest.raises(InvalidRequestError) as e:
        pyegress.EgressService(
            "ws://127.0.0.1:1", "k", "s", storage=pe.StorageConfig(s3=pe.S3Upload(bucket="b"))
        )
    assert str(e.value) == "storage.s3.region: required when no endpoint is set"
