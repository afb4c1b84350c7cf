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
from pyegress.storage.azure import ENDPOINT_ENV
from pyegress.testing import LiveKitServer, probe
from pyegress.testing.storage_emulators import AzuriteServer, MinioServer

from .helpers import publisher, record_for, status, wait_active

pytestmark = pytest.mark.integration

SMALL = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1200)


async def record(
    svc: pyegress.EgressService, req: pe.TrackCompositeEgressRequest, seconds: float
) -> pe.EgressInfo:
    return await record_for(svc, await svc.start_track_composite_egress(req), seconds)


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


async def test_backup_store_takes_the_recording_when_the_primary_bucket_is_missing(
    livekit_server: LiveKitServer,
    minio: MinioServer,
    azurite: AzuriteServer,
    bucket_name: str,
    room_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LiveKit Egress's ``backup``: the default S3 store has no such bucket, so the file, its
    HLS segments and the manifests go to the backup store (Azurite); the egress completes."""
    monkeypatch.setenv(ENDPOINT_ENV, azurite.blob_endpoint)
    azurite.make_bucket(bucket_name)
    async with (
        pyegress.EgressService(
            livekit_server.url,
            livekit_server.api_key,
            livekit_server.api_secret,
            output_dir=tmp_path / "out",
            wait_timeout=4.0,
            storage=pe.StorageConfig(s3=minio.upload_message("no-such-default-bucket")),
            backup_storage=pe.StorageConfig(azure=azurite.upload_message(bucket_name)),
        ) as svc,
        publisher(livekit_server, room_name) as pub,
    ):
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="rec/composite.mp4")],
            segment_outputs=[pe.SegmentedFileOutput(filename_prefix="rec/seg", segment_duration=1)],
        )
        info = await record(svc, req, 3.0)
    assert status(info) == "EGRESS_COMPLETE", info.error
    assert info.backup_storage_used and not info.error
    base = f"{azurite.blob_endpoint}/{bucket_name}"
    res = info.file_results[0]
    assert res.location == f"{base}/rec/composite.mp4"
    downloaded = tmp_path / "downloaded.mp4"
    downloaded.write_bytes(azurite.read(bucket_name, "rec/composite.mp4"))
    media = probe(downloaded)
    assert media.video is not None and media.audio is not None
    assert abs(media.duration - res.duration / 1e9) < 0.25 and 2.5 < media.duration < 5.0
    seg = info.segment_results[0]
    assert seg.playlist_location == f"{base}/rec/seg.m3u8"
    hls = tmp_path / "hls"
    for line in ["seg.m3u8", *azurite.read(bucket_name, "rec/seg.m3u8").decode().splitlines()]:
        if line and not line.startswith("#"):
            (hls / line).parent.mkdir(parents=True, exist_ok=True)
            (hls / line).write_bytes(azurite.read(bucket_name, f"rec/{line}"))
    stream = probe(hls / "seg.m3u8")  # the playlist and every segment it names, from the backup
    assert stream.video is not None and abs(stream.duration - seg.duration / 1e9) < 0.3
    assert info.manifest_location.startswith(base)
    assert json.loads(azurite.read(bucket_name, "rec/composite.mp4.json"))["egress_id"] == info.egress_id
    segments = json.loads(azurite.read(bucket_name, "rec/seg.m3u8.json"))["segments"]
    assert segments and all(s["location"] == f"{base}/rec/{s['filename']}" for s in segments), segments
    assert minio.secret_key not in str(info) and azurite.account_key not in str(info)


def test_invalid_default_storage_names_the_field() -> None:
    with pytest.raises(InvalidRequestError) as e:
        pyegress.EgressService(
            "ws://127.0.0.1:1", "k", "s", storage=pe.StorageConfig(s3=pe.S3Upload(bucket="b"))
        )
    assert str(e.value) == "storage.s3.region: required when no endpoint is set"


def _bucket_keys(minio: MinioServer, bucket: str) -> set[str]:
    pages = minio.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _named_segments(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


async def test_hls_is_uploaded_while_recording(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    minio: MinioServer,
    bucket_name: str,
    room_name: str,
    tmp_path: Path,
) -> None:
    minio.make_bucket(bucket_name)
    s3 = minio.upload_message(bucket_name)
    base = f"{minio.endpoint}/{bucket_name}/{room_name}"
    async with publisher(livekit_server, room_name) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=SMALL,
            segment_outputs=[
                pe.SegmentedFileOutput(
                    filename_prefix="{room_name}/seg",
                    playlist_name="{room_name}/index.m3u8",
                    live_playlist_name="live.m3u8",
                    segment_duration=2,
                    s3=s3,
                )
            ],
        )
        started = await service.start_track_composite_egress(req)
        active = await wait_active(service, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        await asyncio.sleep(5.0)
        # while recording: the bucket's playlist names only segments already in the bucket
        mid = (await service.list_egress(pe.ListEgressRequest(egress_id=started.egress_id))).items[0]
        assert mid.segment_results[0].playlist_location == f"{base}/index.m3u8"
        assert mid.segment_results[0].live_playlist_location == f"{base}/live.m3u8"
        live_text = minio.read(bucket_name, f"{room_name}/index.m3u8").decode()
        keys = _bucket_keys(minio, bucket_name)
        named = _named_segments(live_text)
        assert "#EXT-X-ENDLIST" not in live_text and len(named) >= 1, live_text
        assert {f"{room_name}/{n}" for n in named} <= keys, (named, keys)
        window = _named_segments(minio.read(bucket_name, f"{room_name}/live.m3u8").decode())
        assert {f"{room_name}/{n}" for n in window} <= keys
        await asyncio.sleep(3.0)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))

    assert status(info) == "EGRESS_COMPLETE", info.error
    assert not info.backup_storage_used and not info.error
    seg = info.segment_results[0]
    assert seg.playlist_location == f"{base}/index.m3u8"
    assert seg.live_playlist_location == f"{base}/live.m3u8"
    local_dir = tmp_path / room_name
    assert seg.playlist_name == str(local_dir / "index.m3u8")
    # the bucket holds the final playlists and every segment they name, byte for byte
    playlist = minio.read(bucket_name, f"{room_name}/index.m3u8")
    assert playlist == (local_dir / "index.m3u8").read_bytes()
    assert playlist.decode().rstrip().endswith("#EXT-X-ENDLIST")
    assert minio.read(bucket_name, f"{room_name}/live.m3u8") == (local_dir / "live.m3u8").read_bytes()
    names = _named_segments(playlist.decode())
    assert len(names) == seg.segment_count >= 3
    assert _bucket_keys(minio, bucket_name) == {
        f"{room_name}/{n}" for n in [*names, "index.m3u8", "live.m3u8", "index.m3u8.json"]
    }
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name in [*names, "index.m3u8"]:
        data = minio.read(bucket_name, f"{room_name}/{name}")
        if name != "index.m3u8":
            assert data == (local_dir / name).read_bytes(), name
        (downloaded / name).write_bytes(data)
    head = minio.client().head_object(Bucket=bucket_name, Key=f"{room_name}/{names[0]}")
    assert head["ContentType"] == "video/MP2T"
    # the playlist from the bucket plays as one stream of the recorded length
    media = probe(downloaded / "index.m3u8")
    assert media.video is not None and media.audio is not None
    assert (media.video.codec, media.audio.codec) == ("h264", "aac")
    assert abs(media.duration - seg.duration / 1e9) < 0.3, (media.duration, seg.duration)
    assert 6.5 < media.duration < 10.0
    manifest = json.loads(minio.read(bucket_name, f"{room_name}/index.m3u8.json"))
    assert [s["location"] for s in manifest["segments"]] == [f"{base}/{n}" for n in names]
    assert not list(local_dir.glob(".*")), "no upload snapshot left behind"
    assert minio.secret_key not in str(info)


async def test_images_are_uploaded_as_they_are_taken(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    minio: MinioServer,
    bucket_name: str,
    room_name: str,
    tmp_path: Path,
) -> None:
    minio.make_bucket(bucket_name)
    s3 = minio.upload_message(bucket_name)
    async with publisher(livekit_server, room_name) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=SMALL,
            image_outputs=[
                pe.ImageOutput(capture_interval=1, width=320, height=180, filename_prefix="shots/img", s3=s3)
            ],
        )
        started = await service.start_track_composite_egress(req)
        active = await wait_active(service, started.egress_id)
        assert status(active) == "EGRESS_ACTIVE", active.error
        await asyncio.sleep(2.6)
        mid = (await service.list_egress(pe.ListEgressRequest(egress_id=started.egress_id))).items[0]
        taken = mid.image_results[0].image_count
        assert taken >= 2
        await asyncio.sleep(1.0)  # uploads are queued as each image is written: they are there by now
        keys = _bucket_keys(minio, bucket_name)
        assert {f"shots/img_{i:05d}.jpeg" for i in range(taken)} <= keys, keys
        await asyncio.sleep(1.5)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))

    assert status(info) == "EGRESS_COMPLETE", info.error
    assert not info.backup_storage_used
    img = info.image_results[0]
    seconds = (img.ended_at - img.started_at) / 1e9
    assert abs(img.image_count - (seconds + 1)) <= 1.5, (img.image_count, seconds)
    names = [f"shots/img_{i:05d}.jpeg" for i in range(img.image_count)]
    assert _bucket_keys(minio, bucket_name) == {*names, "shots/img.json"}
    for key in names:
        assert minio.read(bucket_name, key) == (tmp_path / key).read_bytes()
    manifest = json.loads(minio.read(bucket_name, "shots/img.json"))
    base = f"{minio.endpoint}/{bucket_name}"
    assert [i["location"] for i in manifest["images"]] == [f"{base}/{k}" for k in names]
    assert info.manifest_location == f"{base}/shots/img.json"


async def test_hls_to_a_missing_bucket_keeps_the_segments_local(
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
            # no store of its own: the service default, whose bucket does not exist
            segment_outputs=[pe.SegmentedFileOutput(filename_prefix="kept/seg", segment_duration=1)],
        )
        info = await record(service, req, 2.5)
    assert status(info) == "EGRESS_FAILED"
    assert info.backup_storage_used
    assert "segment_outputs[0]" in info.error and "NoSuchBucket" in info.error
    seg = info.segment_results[0]
    assert seg.playlist_location == seg.playlist_name == str(tmp_path / "kept" / "seg.m3u8")
    media = probe(seg.playlist_location)  # the recording is complete locally
    assert media.video is not None and abs(media.duration - seg.duration / 1e9) < 0.3
    assert minio.secret_key not in str(info)


async def test_store_outage_mid_hls_loses_no_segment(
    livekit_server: LiveKitServer,
    service: pyegress.EgressService,
    fresh_minio: MinioServer,
    bucket_name: str,
    room_name: str,
    tmp_path: Path,
) -> None:
    minio = fresh_minio
    minio.make_bucket(bucket_name)
    async with publisher(livekit_server, room_name) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=SMALL,
            segment_outputs=[
                pe.SegmentedFileOutput(
                    filename_prefix="{room_name}/seg",
                    playlist_name="{room_name}/index.m3u8",
                    segment_duration=1,
                    s3=minio.upload_message(bucket_name),
                )
            ],
        )
        started = await service.start_track_composite_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        await asyncio.sleep(2.5)
        await asyncio.to_thread(minio.stop)  # the store goes away mid-HLS ...
        await asyncio.sleep(3.0)  # ... while about three segments close
        await asyncio.to_thread(minio.start)  # and comes back
        await asyncio.sleep(2.5)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    local_dir = tmp_path / room_name
    playlist = (local_dir / "index.m3u8").read_text()
    names = _named_segments(playlist)
    seg = info.segment_results[0]
    assert len(names) == seg.segment_count >= 6
    # every segment is complete locally, and the local playlist plays as one stream
    assert all((local_dir / n).is_file() for n in names)
    media = probe(local_dir / "index.m3u8")
    assert media.video is not None and abs(media.duration - seg.duration / 1e9) < 0.3
    if info.backup_storage_used:  # the store stayed down too long: kept locally, and said so
        assert "s3 bucket" in info.error and bucket_name in info.error
    else:  # retried through the outage: the bucket holds every segment, byte for byte
        assert status(info) == "EGRESS_COMPLETE", info.error
        keys = _bucket_keys(minio, bucket_name)
        for n in names:
            assert f"{room_name}/{n}" in keys, n
            assert minio.read(bucket_name, f"{room_name}/{n}") == (local_dir / n).read_bytes()
        assert minio.read(bucket_name, f"{room_name}/index.m3u8").decode() == playlist
    assert minio.secret_key not in str(info)
