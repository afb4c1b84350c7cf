"""Real storage emulators on loopback for tests: MinIO (S3), fake-gcs-server (GCS), Azurite (Azure).

Each runs as a subprocess on a free 127.0.0.1 port with its data in a temporary folder, so
:meth:`restart` (same port, same data) simulates an outage the store recovers from. The
binaries are found through an environment variable, then ``<repo>/.tools`` (where
``scripts/install-storage-emulators.sh`` puts them), then ``PATH``.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from livekit.protocol import egress as pe

from .ports import free_tcp_port

__all__ = ["AzuriteServer", "EmulatorError", "FakeGcsServer", "MinioServer", "StorageEmulator"]


class EmulatorError(RuntimeError):
    """An emulator binary is missing or the emulator failed to start."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def _tools() -> Path:
    return _repo_root() / ".tools"


def _find(env: str, candidates: list[Path], on_path: str, install_hint: str) -> Path:
    value = os.environ.get(env)
    if value:
        p = Path(value)
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise EmulatorError(f"{env}={value!r} is not an executable file")
    which = shutil.which(on_path)
    for c in [*candidates, *([Path(which)] if which else [])]:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise EmulatorError(f"{on_path} not found; {install_hint} or set {env}")


_HINT = "run scripts/install-storage-emulators.sh"


class StorageEmulator:
    """Base: one subprocess, a port, a data folder that survives :meth:`restart`."""

    name = "emulator"

    def __init__(self, *, start_timeout: float = 30.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    # --- subclass hooks ----------------------------------------------------------------
    def _command(self, data: Path) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready(self) -> bool:
        raise NotImplementedError

    # --- common --------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        if self._tmp is None:
            raise EmulatorError(f"{self.name} not started")
        return Path(self._tmp.name) / "data"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def _http_status(self, path: str, method: str = "GET") -> int:
        req = urllib.request.Request(self.endpoint + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=1.0) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (OSError, ValueError):
            return 0

    def start(self) -> StorageEmulator:
        """Start (or start again, on the same port with the same data); wait until it answers."""
        if self.running:
            return self
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"pyegress-{self.name}-")
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_tcp_port()
        if self._log_path is None:
            self._log_path = Path(self._tmp.name) / "emulator.log"
        cmd = self._command(self.data_dir)
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                cwd=self._tmp.name,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise self._fail(f"exited with code {self._proc.returncode}")
            if self._ready():
                return self
            time.sleep(0.1)
        raise self._fail(f"did not answer within {self.start_timeout:.0f}s")

    def _fail(self, reason: str) -> EmulatorError:
        tail = self.log_tail()
        self.stop()
        return EmulatorError(
            f"{self.name} failed to start: {reason}" + (f"\n--- log ---\n{tail}" if tail else "")
        )

    def stop(self) -> None:
        """Stop the process (its data stays until :meth:`close`)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> StorageEmulator:
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and delete the data."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> StorageEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MinioServer(StorageEmulator):
    """MinIO, a real S3 server: checks signatures, keeps data on disk across restarts."""

    name = "minio"

    def __init__(self, *, binary: str | os.PathLike[str] | None = None, start_timeout: float = 30.0) -> None:
        super().__init__(start_timeout=start_timeout)
        self._binary = Path(binary) if binary else None
        self.access_key = "pyegress" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.region = "us-east-1"

    def _command(self, data: Path) -> list[str]:
        binary = self._binary or _find("MINIO_BIN", [_tools() / "bin" / "minio"], "minio", _HINT)
        console = free_tcp_port()
        return [
            str(binary),
            "server",
            str(data),
            "--address",
            f"127.0.0.1:{self.port}",
            "--console-address",
            f"127.0.0.1:{console}",
            "--quiet",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MINIO_ROOT_USER=self.access_key,
            MINIO_ROOT_PASSWORD=self.secret_key,
            MINIO_REGION=self.region,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
            MINIO_CI_CD="1",
        )
        return env

    def _ready(self) -> bool:
        return self._http_status("/minio/health/ready") == 200

    def upload_message(self, bucket: str, **fields: Any) -> pe.S3Upload:
        """An ``S3Upload`` for ``bucket`` on this server (path style, its credentials)."""
        base: dict[str, Any] = {
            "access_key": self.access_key,
            "secret": self.secret_key,
            "region": self.region,
            "endpoint": self.endpoint,
            "bucket": bucket,
            "force_path_style": True,
        }
        base.update(fields)
        return pe.S3Upload(**base)

    def client(self) -> Any:
        """A boto3 S3 client for checking what was stored."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def read(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def keys(self, bucket: str) -> list[str]:
        """The keys of every object in ``bucket``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


class FakeGcsServer(StorageEmulator):
    """fake-gcs-server over plain HTTP, filesystem backend (data survives restarts)."""

    name = "fake-gcs-server"

    def __init__(self, *, binary: str | os.PathLike[str] | None = None, start_timeout: float = 30.0) -> None:
        super().__init__(start_timeout=start_timeout)
        self._binary = Path(binary) if binary else None

    def _command(self, data: Path) -> list[str]:
        binary = self._binary or _find(
            "FAKE_GCS_SERVER_BIN", [_tools() / "bin" / "fake-gcs-server"], "fake-gcs-server", _HINT
        )
        return [
            str(binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(data),
            "-external-url",
            self.endpoint,
            "-public-host",
            f"127.0.0.1:{self.port}",
            "-log-level",
            "warn",
        ]

    def _ready(self) -> bool:
        return self._http_status("/storage/v1/b") == 200

    def client(self) -> Any:
        """A google-cloud-storage client on this server (anonymous)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[import-untyped]

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
            use_auth_w_custom_endpoint=False,
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(name)
        return name

    def read(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client().bucket(bucket).blob(key).download_as_bytes()
        return data

    def keys(self, bucket: str) -> list[str]:
        """The names of every object in ``bucket``."""
        return [b.name for b in self.client().list_blobs(bucket)]


class AzuriteServer(StorageEmulator):
    """Azurite's blob service (from npm), with its own random account name and key."""

    name = "azurite"

    def __init__(self, *, binary: str | os.PathLike[str] | None = None, start_timeout: float = 30.0) -> None:
        super().__init__(start_timeout=start_timeout)
        self._binary = Path(binary) if binary else None
        self.account_name = "pyegress" + secrets.token_hex(3)
        self.account_key = base64.b64encode(secrets.token_bytes(32)).decode()

    @property
    def blob_endpoint(self) -> str:
        """The account's blob service URL (the value for ``AZURE_STORAGE_BLOB_ENDPOINT``)."""
        return f"{self.endpoint}/{self.account_name}"

    def _command(self, data: Path) -> list[str]:
        binary = self._binary or _find(
            "AZURITE_BLOB_BIN",
            [_tools() / "node" / "node_modules" / ".bin" / "azurite-blob"],
            "azurite-blob",
            _HINT,
        )
        return [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(data),
            "--skipApiVersionCheck",
            "--disableProductStyleUrl",
            "--silent",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["AZURITE_ACCOUNTS"] = f"{self.account_name}:{self.account_key}"
        return env

    def _ready(self) -> bool:
        # any HTTP answer (403 without a signature) means the service is listening
        return self._http_status(f"/{self.account_name}?comp=list") in (200, 403)

    def upload_message(self, container: str, **fields: Any) -> pe.AzureBlobUpload:
        base: dict[str, Any] = {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "container_name": container,
        }
        base.update(fields)
        return pe.AzureBlobUpload(**base)

    def client(self) -> Any:
        """An azure-storage-blob service client for this account."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            self.blob_endpoint,
            credential={"account_name": self.account_name, "account_key": self.account_key},
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_container(name)
        return name

    def read(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client().get_blob_client(bucket, key).download_blob().readall()
        return data

    def keys(self, bucket: str) -> list[str]:
        """The names of every blob in container ``bucket``."""
        return [b.name for b in self.client().get_container_client(bucket).list_blobs()]
