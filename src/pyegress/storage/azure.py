"""Azure Blob Storage, on azure-storage-blob (shared-key auth).

The blob service URL is ``https://<account_name>.blob.core.windows.net`` unless
``endpoint`` is given or the environment variable ``AZURE_STORAGE_BLOB_ENDPOINT`` is set:
the account's full blob service URL, as ``BlobEndpoint`` in an Azure connection string
(for Azurite: ``http://127.0.0.1:10000/<account_name>``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .base import Uploader, quote_key

__all__ = ["ENDPOINT_ENV", "AzureUploader"]

ENDPOINT_ENV = "AZURE_STORAGE_BLOB_ENDPOINT"
#: files above this go up as staged blocks of ``block_size``, committed at the end
SINGLE_PUT_SIZE = 16 * 1024 * 1024
BLOCK_SIZE = 8 * 1024 * 1024


class AzureUploader(Uploader):
    """Uploads block blobs to one container."""

    name = "azure"

    def __init__(
        self,
        container_name: str,
        *,
        account_name: str,
        account_key: str,
        endpoint: str | None = None,
        max_single_put_size: int = SINGLE_PUT_SIZE,
        max_block_size: int = BLOCK_SIZE,
        timeout: tuple[float, float] = (5.0, 60.0),
    ) -> None:
        if endpoint is None:
            endpoint = os.environ.get(ENDPOINT_ENV, "") or f"https://{account_name}.blob.core.windows.net"
        super().__init__(container_name, endpoint, secrets=(account_key,))
        self.account_name = account_name
        self._account_key = account_key
        self._sizes = (max_single_put_size, max_block_size)
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"azure container '{self.bucket}' of account '{self.account_name}' at {self.endpoint}"

    def _container(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.storage.blob import BlobServiceClient

                service = BlobServiceClient(
                    self.endpoint,
                    credential={"account_name": self.account_name, "account_key": self._account_key},
                    retry_total=0,  # the UploadQueue retries
                    connection_timeout=self._timeout[0],
                    read_timeout=self._timeout[1],
                    max_single_put_size=self._sizes[0],
                    max_block_size=self._sizes[1],
                )
                self._client = service.get_container_client(self.bucket)
            return self._client

    def _put(self, local: Path, key: str, content_type: str) -> None:
        from azure.storage.blob import ContentSettings

        blob = self._container().get_blob_client(key)
        with local.open("rb") as f:
            blob.upload_blob(
                f,
                length=local.stat().st_size,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
                max_concurrency=4,
            )

    def location(self, key: str) -> str:
        return f"{self.endpoint}/{quote_key(self.bucket)}/{quote_key(key)}"

    def _classify(self, exc: BaseException) -> tuple[str, bool]:
        from azure.core import exceptions as aexc

        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, aexc.HttpResponseError) and seen.status_code:
                status = int(seen.status_code)
                code = getattr(seen, "error_code", None)
                code = str(getattr(code, "value", code) or "") or (seen.reason or "error")
                return f"{code} (HTTP {status})", status >= 500 or status in (408, 429)
            if isinstance(seen, (aexc.ServiceRequestError, aexc.ServiceResponseError)):
                return f"endpoint unreachable ({type(seen).__name__})", True
            seen = seen.__cause__ or seen.__context__
        if isinstance(exc, ValueError):  # e.g. a key that is not base64
            return f"invalid account key or settings ({type(exc).__name__})", False
        return super()._classify(exc)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
