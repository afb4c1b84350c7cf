"""The storage layer against real emulators: MinIO (S3), fake-gcs-server (GCS), Azurite (Azure)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from livekit.protocol import egress as pe

from pyegress.errors import InvalidRequestError, NotSupportedError
from pyegress.storage import (
    LocalUploader,
    RetryPolicy,
    StorageError,
    Uploader,
    UploadQueue,
    UploadResult,
    default_storage,
    make_uploader,
    output_storage,
    resolve_storage,
)
from pyegress.storage.azure import ENDPOINT_ENV
from pyegress.testing import probe
from pyegress.testing.ports import free_tcp_port as free_port
from pyegress.testing.storage_emulators import (
    AzuriteServer,
    FakeGcsServer,
    MinioServer,
    StorageEmulator,
)

from .helpers import service_account

FAST = RetryPolicy(tries=3, first_delay=0.05, max_delay=0.2)
STORES = ["s3", "gcs", "azure"]


# --- helpers ------------------------------------------------------------------------------


def emulator_for(request: pytest.FixtureRequest, store: str) -> StorageEmulator:
    name = {"s3": "minio", "gcs": "fake_gcs", "azure": "azurite"}[store]
    emu: StorageEmulator = request.getfixturevalue(name)
    return emu


def uploader_for(
    store: str,
    emu: StorageEmulator,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    **options: Any,
) -> Uploader:
    """An uploader built from the protocol message, the way a request builds one."""
    if store == "s3":
        assert isinstance(emu, MinioServer)
        msg: Any = emu.upload_message(bucket)
    elif store == "gcs":
        assert isinstance(emu, FakeGcsServer)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.endpoint)
        msg = pe.GCPUpload(bucket=bucket)
    else:
        assert isinstance(emu, AzuriteServer)
        monkeypatch.setenv(ENDPOINT_ENV, emu.blob_endpoint)
        msg = emu.upload_message(bucket)
    up = make_uploader(msg, **options)
    assert up is not None
    return up


def secrets_of(emu: StorageEmulator) -> list[str]:
    if isinstance(emu, MinioServer):
        return [emu.secret_key]
    if isinstance(emu, AzuriteServer):
        return [emu.account_key]
    return []


def copy_to(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


# --- config: messages → uploader ----------------------------------------------------------


def test_s3_region_required_without_endpoint() -> None:
    out = pe.EncodedFileOutput(filepath="x.mp4", s3=pe.S3Upload(bucket="b", access_key="a", secret="s"))
    with pytest.raises(InvalidRequestError) as e:
        output_storage(out, "file_outputs[0]")
    assert e.value.field == "file_outputs[0].s3.region"
    assert str(e.value) == "file_outputs[0].s3.region: required when no endpoint is set"


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (pe.S3Upload(region="r"), "file.s3.bucket"),
        (pe.S3Upload(bucket="b", region="r", access_key="AKIA"), "file.s3.secret"),
        (pe.S3Upload(bucket="b", endpoint="ftp://x", secret="s3cr3t"), "file.s3.endpoint"),
        (pe.S3Upload(bucket="b", region="r", tagging="a=1&&"), "file.s3.tagging"),
        (pe.GCPUpload(bucket="b", credentials="{not json"), "file.gcp.credentials"),
        (pe.GCPUpload(credentials=""), "file.gcp.bucket"),
        (pe.AzureBlobUpload(account_name="a", container_name="c"), "file.azure.account_key"),
        (
            pe.AzureBlobUpload(account_name="a", account_key="!!notbase64", container_name="c"),
            "file.azure.account_key",
        ),
    ],
)
def test_invalid_storage_names_the_field(msg: Any, field: str) -> None:
    kind = {pe.S3Upload: "s3", pe.GCPUpload: "gcp", pe.AzureBlobUpload: "azure"}[type(msg)]
    out = pe.DirectFileOutput(filepath="x", **{kind: msg})
    with pytest.raises(InvalidRequestError) as e:
        output_storage(out, "file")
    assert e.value.field == field
    for secret in ("s3cr3t", "!!notbase64", "{not json"):
        assert secret not in str(e.value)


def test_alioss_is_refused() -> None:
    out = pe.SegmentedFileOutput(aliOSS=pe.AliOSSUpload(bucket="b", access_key="a", secret="s"))
    with pytest.raises(NotSupportedError, match=r"segment_outputs\[0\]\.aliOSS"):
        output_storage(out, "segment_outputs[0]")
    with pytest.raises(NotSupportedError, match=r"storage\.aliOSS"):
        default_storage(pe.StorageConfig(aliOSS=pe.AliOSSUpload(bucket="b")))


def test_request_storage_overrides_the_default_and_none_means_local() -> None:
    default = default_storage(pe.StorageConfig(s3=pe.S3Upload(bucket="default", region="eu-west-1")))
    own = output_storage(pe.ImageOutput(gcp=pe.GCPUpload(bucket="own")), "image_outputs[0]")
    assert isinstance(resolve_storage(own, default), pe.GCPUpload)
    none = output_storage(pe.EncodedFileOutput(filepath="x.mp4"), "file_outputs[0]")
    assert none is None
    chosen = resolve_storage(none, default)
    assert isinstance(chosen, pe.S3Upload) and chosen.bucket == "default"
    assert resolve_storage(None, None) is None and make_uploader(None) is None
    up = make_uploader(chosen)
    assert (
        up is not None
        and up.location("a b/c.mp4") == "https://default.s3.eu-west-1.amazonaws.com/a%20b/c.mp4"
    )


# --- uploads, read back -------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("store", STORES)
def test_upload_is_byte_identical_and_decodes(
    request: pytest.FixtureRequest,
    store: str,
    bucket_name: str,
    recorded_mp4: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = emulator_for(request, store)
    emu.make_bucket(bucket_name)  # type: ignore[attr-defined]
    up = uploader_for(store, emu, bucket_name, monkeypatch)
    local = copy_to(recorded_mp4, tmp_path / "rec.mp4")
    key = "room/alice-2024/recording.mp4"
    with UploadQueue(up, backup_dir=tmp_path / "backup", retry=FAST, keep_local=False) as q:
        result = q.submit(local, key).result(30)
    assert result.ok, result.error
    assert result.backup_path is None and not q.backup_used
    assert not local.exists(), "keep_local=False deletes the local file once uploaded"
    assert result.location.startswith(emu.endpoint) and result.location.endswith("/" + key)
    assert bucket_name in result.location
    data = emu.read(bucket_name, key)  # type: ignore[attr-defined]
    assert data == recorded_mp4.read_bytes()
    copy = tmp_path / "downloaded.mp4"
    copy.write_bytes(data)
    media = probe(copy)
    assert media.video is not None and media.video.codec == "h264" and media.video.frame_count == 50
    assert media.audio is not None and media.audio.codec == "aac"
    assert abs(media.duration - 2.0) < 0.1


@pytest.mark.integration
@pytest.mark.parametrize("store", STORES)
def test_large_file_goes_up_in_parts(
    request: pytest.FixtureRequest,
    store: str,
    bucket_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = emulator_for(request, store)
    emu.make_bucket(bucket_name)  # type: ignore[attr-defined]
    mib = 1024 * 1024
    options: dict[str, Any] = {
        "s3": {"multipart_threshold": 5 * mib, "multipart_chunksize": 5 * mib},
        "gcs": {"chunk_size": 4 * mib},
        "azure": {"max_single_put_size": 4 * mib, "max_block_size": 4 * mib},
    }[store]
    up = uploader_for(store, emu, bucket_name, monkeypatch, **options)
    payload = os.urandom(20 * mib + 12345)
    local = tmp_path / "big.mp4"
    local.write_bytes(payload)
    location = up.upload_file(local, "big/recording.mp4")
    assert location.endswith("/big/recording.mp4")
    assert emu.read(bucket_name, "big/recording.mp4") == payload  # type: ignore[attr-defined]
    if isinstance(emu, MinioServer):
        head = emu.client().head_object(Bucket=bucket_name, Key="big/recording.mp4")
        assert head["ETag"].strip('"').endswith("-5"), head["ETag"]  # 5 parts of ≤ 5 MiB
    elif isinstance(emu, AzuriteServer):
        blocks = emu.client().get_blob_client(bucket_name, "big/recording.mp4").get_block_list("committed")
        assert len(blocks[0]) == 6  # 20 MiB + a bit in 4 MiB blocks
    up.close()


@pytest.mark.integration
def test_s3_metadata_tagging_and_content_disposition(
    minio: MinioServer, bucket_name: str, recorded_mp4: Path, tmp_path: Path
) -> None:
    minio.make_bucket(bucket_name)
    msg = minio.upload_message(
        bucket_name,
        metadata={"room": "standup", "egress": "EG_test"},
        tagging="team=media&purpose=test%20run",
        content_disposition='attachment; filename="standup.mp4"',
    )
    up = make_uploader(default_storage(pe.StorageConfig(s3=msg)))
    assert up is not None
    up.upload_file(copy_to(recorded_mp4, tmp_path / "a.mp4"), "meta/a.mp4")
    client = minio.client()
    head = client.head_object(Bucket=bucket_name, Key="meta/a.mp4")
    assert head["Metadata"] == {"room": "standup", "egress": "EG_test"}
    assert head["ContentDisposition"] == 'attachment; filename="standup.mp4"'
    assert head["ContentType"] == "video/mp4"
    tags = client.get_object_tagging(Bucket=bucket_name, Key="meta/a.mp4")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "media", "purpose": "test run"}


@pytest.mark.integration
def test_s3_session_token_is_sent(minio: MinioServer, bucket_name: str, tmp_path: Path) -> None:
    """MinIO rejects an unknown session token: proof that it reached the request."""
    minio.make_bucket(bucket_name)
    up = make_uploader(minio.upload_message(bucket_name, session_token="not-a-real-token-123"))
    assert up is not None
    (tmp_path / "f.ts").write_bytes(b"x" * 100)
    with pytest.raises(StorageError) as e:
        up.upload_file(tmp_path / "f.ts", "f.ts")
    assert not e.value.transient
    assert "not-a-real-token-123" not in str(e.value)


@pytest.mark.integration
def test_content_type_and_order_for_segments(minio: MinioServer, bucket_name: str, tmp_path: Path) -> None:
    """One worker uploads in submission order: a segment is stored before its playlist."""
    minio.make_bucket(bucket_name)
    up = make_uploader(minio.upload_message(bucket_name))
    assert up is not None
    seen: list[str] = []

    class Recording(Uploader):
        name = "s3"

        def _put(self, local: Path, key: str, content_type: str) -> None:
            seen.append(key)
            up._put(local, key, content_type)  # type: ignore[union-attr]

        def location(self, key: str) -> str:
            return up.location(key)  # type: ignore[union-attr]

    with UploadQueue(Recording(bucket_name), backup_dir=tmp_path / "backup") as q:
        futures = []
        for i in range(5):
            seg = tmp_path / f"seg_{i}.ts"
            seg.write_bytes(os.urandom(1000))
            futures.append(q.submit(seg, f"hls/seg_{i}.ts"))
            pl = tmp_path / "playlist.m3u8"
            pl.write_text("#EXTM3U\n" + "".join(f"seg_{j}.ts\n" for j in range(i + 1)))
            futures.append(q.submit(pl, "hls/playlist.m3u8"))
        assert q.drain(30)
    assert all(f.result().ok for f in futures)
    assert seen == [k for i in range(5) for k in (f"hls/seg_{i}.ts", "hls/playlist.m3u8")]
    head = minio.client().head_object(Bucket=bucket_name, Key="hls/playlist.m3u8")
    assert head["ContentType"] == "application/x-mpegURL"
    assert minio.read(bucket_name, "hls/playlist.m3u8").decode().count(".ts") == 5


def test_local_uploader_and_drain(tmp_path: Path) -> None:
    src = tmp_path / "a" / "b.mp4"
    src.parent.mkdir()
    src.write_bytes(b"data")
    assert LocalUploader().upload_file(src, "b.mp4") == str(src.resolve())
    bucket = LocalUploader(tmp_path / "bucket")
    with UploadQueue(bucket, backup_dir=tmp_path / "backup") as q:
        res = q.submit(src, "x/y.mp4").result(5)
        assert q.drain(0)
    assert res.ok and Path(res.location).read_bytes() == b"data" and src.exists()


# --- failures: named store + bucket, local data kept ---------------------------------------


def _fail_case(
    request: pytest.FixtureRequest, case: str, store: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Uploader, list[str], str]:
    """(uploader, secrets it holds, what the error must say) for a failure case."""
    emu = emulator_for(request, store)
    if case != "missing_bucket":
        emu.make_bucket(bucket)  # type: ignore[attr-defined]
    dead = f"http://127.0.0.1:{free_port()}"
    if store == "s3":
        assert isinstance(emu, MinioServer)
        fields: dict[str, Any] = {}
        if case == "bad_credentials":
            fields["secret"] = "WRONG-secret-" + emu.secret_key[:6]
        if case == "unreachable":
            fields["endpoint"] = dead
        msg = emu.upload_message(bucket, **fields)
        up = make_uploader(msg)
        secrets = [msg.secret]
        expect = {
            "bad_credentials": "SignatureDoesNotMatch",
            "missing_bucket": "NoSuchBucket",
            "unreachable": "unreachable",
        }[case]
    elif store == "gcs":
        assert isinstance(emu, FakeGcsServer)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", dead if case == "unreachable" else emu.endpoint)
        up = make_uploader(pe.GCPUpload(bucket=bucket))
        secrets = []
        expect = {"missing_bucket": "NotFound", "unreachable": "unreachable"}[case]
    else:
        assert isinstance(emu, AzuriteServer)
        endpoint = f"{dead}/{emu.account_name}" if case == "unreachable" else emu.blob_endpoint
        monkeypatch.setenv(ENDPOINT_ENV, endpoint)
        key = emu.account_key
        if case == "bad_credentials":
            key = "V1JPTkcta2V5LW9mLXRoaXJ0eS10d28tYnl0ZXMhISE="
        up = make_uploader(emu.upload_message(bucket, account_key=key))
        secrets = [key]
        expect = {
            "bad_credentials": "AuthorizationFailure",
            "missing_bucket": "ContainerNotFound",
            "unreachable": "unreachable",
        }[case]
    assert up is not None
    return up, secrets, expect


FAIL_CASES = [
    ("bad_credentials", "s3"),
    ("bad_credentials", "azure"),
    ("missing_bucket", "s3"),
    ("missing_bucket", "gcs"),
    ("missing_bucket", "azure"),
    ("unreachable", "s3"),
    ("unreachable", "gcs"),
    ("unreachable", "azure"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("case", "store"), FAIL_CASES)
def test_failure_names_store_and_bucket_and_keeps_the_file(
    request: pytest.FixtureRequest,
    case: str,
    store: str,
    bucket_name: str,
    recorded_mp4: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    up, secrets, expect = _fail_case(request, case, store, bucket_name, monkeypatch)
    local = copy_to(recorded_mp4, tmp_path / "out" / "rec.mp4")
    t0 = time.monotonic()
    with UploadQueue(up, backup_dir=tmp_path / "backup", retry=FAST, keep_local=False) as q:
        result = q.submit(local, "room/rec.mp4").result(60)
    assert not result.ok and result.error is not None
    assert f"bucket '{bucket_name}'" in result.error or f"container '{bucket_name}'" in result.error
    assert up.endpoint in result.error and up.name in result.error
    assert expect in result.error, result.error
    # transient failures are retried, refusals are not
    assert result.attempts == (FAST.tries if case == "unreachable" else 1), result
    assert time.monotonic() - t0 < 30
    # nothing lost: the file is in the backup folder, byte for byte
    assert q.backup_used
    assert result.backup_path == tmp_path / "backup" / "room" / "rec.mp4"
    assert result.location == str(result.backup_path)
    assert result.backup_path.read_bytes() == recorded_mp4.read_bytes()
    for secret in secrets:
        assert secret not in result.error
        assert secret not in caplog.text, f"a credential reached the logs ({case}, {store})"


# --- a backup store -------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("case", ["bad_credentials", "missing_bucket", "unreachable"])
def test_backup_store_takes_what_the_primary_refuses(
    request: pytest.FixtureRequest,
    case: str,
    azurite: AzuriteServer,
    bucket_name: str,
    recorded_mp4: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An S3 primary that fails for good: the file and every later one go to the backup store
    (Azurite), byte for byte; the results are ``ok`` and say so, and nothing stays behind."""
    caplog.set_level(logging.WARNING, "pyegress.storage")
    primary, secrets, expect = _fail_case(request, case, "s3", bucket_name, monkeypatch)
    monkeypatch.setenv(ENDPOINT_ENV, azurite.blob_endpoint)
    backup = make_uploader(azurite.upload_message(azurite.make_bucket(bucket_name + "-bk")))
    assert backup is not None
    first = copy_to(recorded_mp4, tmp_path / "out" / "a.mp4")
    second = copy_to(recorded_mp4, tmp_path / "out" / "b.mp4")
    with UploadQueue(primary, backup=backup, backup_dir=tmp_path / "bk", retry=FAST, keep_local=False) as q:
        results = [q.submit(first, "room/a.mp4").result(60), q.submit(second, "room/b.mp4").result(60)]
    assert q.backup_used and q.on_backup and not q.errors
    for r in results:
        assert r.ok and r.in_backup and r.backup_path is None, r
        assert r.location == f"{azurite.blob_endpoint}/{bucket_name}-bk/{r.key}"
        assert azurite.read(bucket_name + "-bk", r.key) == recorded_mp4.read_bytes()
    assert not first.exists() and not second.exists() and not (tmp_path / "bk").exists()
    # the primary's failure is logged (no credential); the second file did not try the primary
    switched = [r.getMessage() for r in caplog.records if "the backup store takes it" in r.getMessage()]
    assert len(switched) == 1 and "room/a.mp4" in switched[0] and expect in switched[0], switched
    assert "room/b.mp4" not in caplog.text
    assert all(secret not in caplog.text for secret in secrets)


@pytest.mark.integration
def test_failing_backup_store_keeps_the_file_and_names_both_errors(
    minio: MinioServer,
    azurite: AzuriteServer,
    recorded_mp4: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary = make_uploader(minio.upload_message("no-such-primary"))
    monkeypatch.setenv(ENDPOINT_ENV, azurite.blob_endpoint)
    backup = make_uploader(azurite.upload_message("no-such-backup"))
    assert primary is not None and backup is not None
    local = copy_to(recorded_mp4, tmp_path / "out" / "a.mp4")
    with UploadQueue(primary, backup=backup, backup_dir=tmp_path / "bk", retry=FAST, keep_local=False) as q:
        result = q.submit(local, "a.mp4").result(60)
    assert not result.ok and not result.in_backup and q.backup_used and q.errors
    assert result.error is not None
    assert "primary s3 bucket 'no-such-primary'" in result.error and "NoSuchBucket" in result.error
    assert "backup azure container 'no-such-backup'" in result.error and "ContainerNotFound" in result.error
    assert result.backup_path == tmp_path / "bk" / "a.mp4"
    assert result.backup_path.read_bytes() == recorded_mp4.read_bytes()


# --- an outage in the middle of a stream ---------------------------------------------------


@pytest.mark.integration
def test_outage_mid_stream_loses_nothing(
    fresh_minio: MinioServer, bucket_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Segments keep coming while the store goes down: some recover, some go to backup; none lost.

    Phase 1: the store stops for ~1.5 s (shorter than the retry window) and comes back with its
    data; every segment ends up in the bucket. Phase 2: the store stays down; the segments go to
    the backup folder. Every segment is then either in the bucket or in the backup, byte-identical.
    """
    caplog.set_level(logging.DEBUG)
    minio = fresh_minio
    minio.make_bucket(bucket_name)
    up = make_uploader(minio.upload_message(bucket_name))
    assert up is not None
    retry = RetryPolicy(tries=6, first_delay=0.25, max_delay=1.0)  # ~3.5 s window
    segments: dict[str, bytes] = {}
    futures = []

    def produce(q: UploadQueue, start: int, count: int, on: Callable[[int], None] | None = None) -> None:
        for i in range(start, start + count):
            data = os.urandom(50_000 + i)
            seg = tmp_path / "out" / f"seg_{i:03d}.ts"
            seg.parent.mkdir(parents=True, exist_ok=True)
            seg.write_bytes(data)
            key = f"hls/seg_{i:03d}.ts"
            segments[key] = data
            futures.append(q.submit(seg, key))
            if on is not None:
                on(i)
            time.sleep(0.1)

    def outage(i: int) -> None:
        if i == 5:
            minio.stop()
            threading.Timer(1.5, minio.start).start()

    q = UploadQueue(up, backup_dir=tmp_path / "backup", retry=retry, keep_local=False)
    produce(q, 0, 15, outage)
    assert q.drain(60)
    phase1: list[UploadResult] = [f.result() for f in futures]
    assert all(r.ok for r in phase1), [r.error for r in phase1 if not r.ok]
    assert any(r.attempts > 1 for r in phase1), "the outage was not hit"
    assert not q.backup_used

    minio.stop()  # phase 2: down for good
    produce(q, 15, 5)
    assert q.drain(60)
    phase2 = [f.result() for f in futures[15:]]
    assert all(not r.ok and r.backup_path is not None for r in phase2)
    assert q.backup_used
    # once the store is known down, later segments get one try each: no backlog builds up
    assert [r.attempts for r in phase2[1:]] == [1] * 4
    q.close(10)

    minio.start()  # to read back what it holds (same data folder)
    stored = in_backup = 0
    for f in futures:
        r = f.result()
        data = segments[r.key]
        if r.ok:
            assert minio.read(bucket_name, r.key) == data, r.key
            stored += 1
        else:
            assert r.backup_path is not None and r.backup_path.read_bytes() == data, r.key
            in_backup += 1
    assert (stored, in_backup) == (15, 5)
    assert not list((tmp_path / "out").iterdir()), "uploaded or backed-up files leave the output folder"
    assert minio.secret_key not in caplog.text


@pytest.mark.integration
def test_gcs_service_account_credentials_are_used_and_never_printed(
    fake_gcs: FakeGcsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A credentials JSON becomes service-account credentials (their token endpoint is asked first).

    The emulator issues no tokens, so the key's token_uri points at a closed loopback port: the
    upload fails naming the store and bucket, and no part of the key shows anywhere.
    """
    caplog.set_level(logging.DEBUG)
    creds, parts = service_account(f"http://127.0.0.1:{free_port()}/token", key_id="0123456789abcdef0123")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    msg = output_storage(
        pe.EncodedFileOutput(gcp=pe.GCPUpload(bucket="creds-bucket", credentials=creds)), "file"
    )
    up = make_uploader(msg)
    assert up is not None
    (tmp_path / "a.mp4").write_bytes(b"data")
    with UploadQueue(up, backup_dir=tmp_path / "backup", retry=FAST) as q:
        res = q.submit(tmp_path / "a.mp4", "a.mp4").result(30)
    assert not res.ok and res.error is not None
    assert f"gcs bucket 'creds-bucket' at {fake_gcs.endpoint}: cannot reach the token endpoint" in res.error
    for secret in (parts[4], "0123456789abcdef0123"):  # the key id, and a line of the key body
        assert secret not in res.error and secret not in caplog.text
