"""Amazon S3 and S3-compatible stores (MinIO, ...), on boto3; large files go up in parts."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .base import Uploader, quote_key

__all__ = ["S3Uploader"]

#: files above this size are uploaded in parts of ``multipart_chunksize`` (boto3's TransferConfig)
MULTIPART_THRESHOLD = 16 * 1024 * 1024
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024

_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "XMinioServerNotInitialized",
}


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class S3Uploader(Uploader):
    """Uploads to one S3 bucket; ``endpoint`` for S3-compatible stores.

    Without ``access_key``/``secret`` boto3's default credential chain applies (environment,
    instance profile, ...). ``metadata``, ``tagging`` (URL-encoded ``k=v&k2=v2``) and
    ``content_disposition`` are set on every object.
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        region: str = "",
        endpoint: str = "",
        access_key: str = "",
        secret: str = "",
        session_token: str = "",
        force_path_style: bool = False,
        metadata: Mapping[str, str] | None = None,
        tagging: str = "",
        content_disposition: str = "",
        proxy: str = "",
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNKSIZE,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        super().__init__(bucket, endpoint, secrets=(secret, session_token))
        self.region = region or "us-east-1"
        self.force_path_style = force_path_style
        self.metadata = dict(metadata or {})
        self.tagging = tagging
        self.content_disposition = content_disposition
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self._access_key = access_key
        self._secret = secret
        self._session_token = session_token
        self._proxy = proxy
        self._timeouts = (connect_timeout, read_timeout)
        self._client: Any = None
        self._transfer_config: Any = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        at = f" at {self.endpoint}" if self.endpoint else f" in {self.region}"
        return f"s3 bucket '{self.bucket}'{at}"

    @property
    def path_style(self) -> bool:
        """Whether objects are addressed as ``endpoint/bucket/key`` (else ``bucket.host/key``)."""
        if self.force_path_style:
            return True
        return bool(self.endpoint) and _is_ip_or_localhost(urlsplit(self.endpoint).hostname or "")

    def client(self) -> Any:
        """The boto3 S3 client (made once; boto3 clients are thread-safe)."""
        with self._lock:
            if self._client is None:
                import boto3
                from boto3.s3.transfer import TransferConfig
                from botocore.config import Config

                config = Config(
                    region_name=self.region,
                    connect_timeout=self._timeouts[0],
                    read_timeout=self._timeouts[1],
                    retries={"max_attempts": 1, "mode": "standard"},  # UploadQueue retries
                    s3={"addressing_style": "path" if self.path_style else "auto"},
                    proxies={"http": self._proxy, "https": self._proxy} if self._proxy else None,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                session = boto3.session.Session(
                    aws_access_key_id=self._access_key or None,
                    aws_secret_access_key=self._secret or None,
                    aws_session_token=self._session_token or None,
                    region_name=self.region,
                )
                self._client = session.client("s3", endpoint_url=self.endpoint or None, config=config)
                self._transfer_config = TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=self.multipart_chunksize,
                    use_threads=True,
                    max_concurrency=4,
                )
            return self._client

    def _put(self, local: Path, key: str, content_type: str) -> None:
        client = self.client()
        extra: dict[str, Any] = {"ContentType": content_type}
        if self.metadata:
            extra["Metadata"] = self.metadata
        if self.tagging:
            extra["Tagging"] = self.tagging
        if self.content_disposition:
            extra["ContentDisposition"] = self.content_disposition
        client.upload_file(str(local), self.bucket, key, ExtraArgs=extra, Config=self._transfer_config)

    def location(self, key: str) -> str:
        k = quote_key(key)
        if not self.endpoint:
            return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{k}"
        if self.path_style:
            return f"{self.endpoint}/{self.bucket}/{k}"
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{self.bucket}.{parts.netloc}{parts.path}/{k}"

    def _classify(self, exc: BaseException) -> tuple[str, bool]:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, ClientError):
                err = seen.response.get("Error", {})
                code = str(err.get("Code", "")) or "error"
                status = int(seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
                message = str(err.get("Message", "")).strip()
                reason = f"{code}: {message}" if message and message != code else code
                if status:
                    reason += f" (HTTP {status})"
                return reason, status >= 500 or code in _TRANSIENT_CODES
            if isinstance(seen, NoCredentialsError):
                return "no credentials: set access_key and secret, or configure AWS credentials", False
            if isinstance(seen, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
                return f"endpoint unreachable ({type(seen).__name__})", True
            if isinstance(seen, ReadTimeoutError):
                return "timed out", True
            seen = seen.__cause__ or seen.__context__
        return super()._classify(exc)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
