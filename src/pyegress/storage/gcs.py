"""Google Cloud Storage, on google-cloud-storage.

``credentials`` is a service-account key as a JSON string; empty means Application Default
Credentials. The endpoint defaults to ``STORAGE_EMULATOR_HOST`` when set (the variable the
client library and GCS emulators use, e.g. ``http://127.0.0.1:4443``), else Google's.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from ..redaction import secret_parts
from .base import Uploader, quote_key

__all__ = ["GCSUploader"]

PUBLIC_ENDPOINT = "https://storage.googleapis.com"
#: resumable uploads go up in chunks of this size (a multiple of 256 KiB)
CHUNK_SIZE = 8 * 1024 * 1024


class GCSUploader(Uploader):
    """Uploads to one GCS bucket."""

    name = "gcs"

    def __init__(
        self,
        bucket: str,
        *,
        credentials: str = "",
        endpoint: str | None = None,
        chunk_size: int = CHUNK_SIZE,
        timeout: tuple[float, float] = (5.0, 60.0),
    ) -> None:
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST", "") if endpoint is None else endpoint
        super().__init__(bucket, endpoint, secrets=secret_parts(credentials) if credentials else ())
        self._credentials = credentials
        self.chunk_size = chunk_size
        self._timeout = timeout
        self._local = threading.local()  # one client per thread: requests sessions are not shared

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage  # type: ignore[import-untyped]

            creds: Any = None
            project: str | None = None
            if self._credentials:
                from google.oauth2 import service_account

                info = json.loads(self._credentials)
                creds = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
                project = info.get("project_id")
            elif self.endpoint:
                creds, project = AnonymousCredentials(), "pyegress"  # type: ignore[no-untyped-call]
            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            client = storage.Client(
                project=project,
                credentials=creds,
                client_options=options,
                use_auth_w_custom_endpoint=bool(self._credentials),
            )
            self._local.client = client
        return client

    def _put(self, local: Path, key: str, content_type: str) -> None:
        bucket = self._client().bucket(self.bucket)
        blob = bucket.blob(key, chunk_size=self.chunk_size)
        # retry=None: the UploadQueue retries, with its own bounded backoff
        blob.upload_from_filename(str(local), content_type=content_type, retry=None, timeout=self._timeout)

    def location(self, key: str) -> str:
        return f"{self.endpoint or PUBLIC_ENDPOINT}/{self.bucket}/{quote_key(key)}"

    def _classify(self, exc: BaseException) -> tuple[str, bool]:
        import requests
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as aexc

        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, gexc.GoogleAPICallError):
                code = int(seen.code or 0)
                message = str(seen.message or "").strip().splitlines()[0:1]
                name = type(seen).__name__
                reason = f"{name}: {message[0]}" if message else name
                if code:
                    reason += f" (HTTP {code})"
                return reason, code >= 500 or code in (408, 429)
            if isinstance(seen, aexc.DefaultCredentialsError):
                return "no credentials: set credentials, or configure Application Default Credentials", False
            if isinstance(seen, aexc.TransportError):
                return "cannot reach the token endpoint of these credentials", True
            if isinstance(seen, aexc.RefreshError):
                return "cannot obtain an access token with these credentials", False
            if isinstance(seen, (requests.ConnectionError, requests.Timeout)):
                return f"endpoint unreachable ({type(seen).__name__})", True
            if isinstance(seen, json.JSONDecodeError):
                return "credentials are not valid JSON", False
            seen = seen.__cause__ or seen.__context__
        return super()._classify(exc)
