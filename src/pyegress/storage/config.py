"""Protocol storage messages → validated settings → an ``Uploader``.

An output's own ``s3`` / ``gcp`` / ``azure`` overrides the service default (a
``StorageConfig``); an output with neither is written locally only.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlsplit

from livekit.protocol import egress as pe

from ..errors import InvalidRequestError, NotSupportedError
from ..redaction import redact_url
from .base import Uploader

__all__ = [
    "StorageMessage",
    "default_storage",
    "make_uploader",
    "output_storage",
    "resolve_storage",
    "validate_storage",
]

StorageMessage: TypeAlias = pe.S3Upload | pe.GCPUpload | pe.AzureBlobUpload
OutputMessage: TypeAlias = (
    pe.EncodedFileOutput | pe.DirectFileOutput | pe.SegmentedFileOutput | pe.ImageOutput
)


def _copy(msg: StorageMessage) -> StorageMessage:
    return copy.deepcopy(msg)


def _pick(msg: Any, which: str | None, where: str) -> StorageMessage | None:
    if not which:
        return None
    if which == "aliOSS":
        raise NotSupportedError(f"{where}.aliOSS: Alibaba Cloud OSS uploads are not supported")
    chosen: StorageMessage = getattr(msg, which)
    validate_storage(chosen, f"{where}.{which}")
    return _copy(chosen)


def output_storage(output: OutputMessage, where: str) -> StorageMessage | None:
    """The validated storage an output names itself (``where`` is its field, e.g. ``file_outputs[0]``)."""
    return _pick(output, output.WhichOneof("output"), where)


def default_storage(config: pe.StorageConfig | None, where: str = "storage") -> StorageMessage | None:
    """The validated storage of a service-wide default ``StorageConfig`` (None when unset)."""
    if config is None:
        return None
    return _pick(config, config.WhichOneof("provider"), where)


def resolve_storage(own: StorageMessage | None, default: StorageMessage | None) -> StorageMessage | None:
    """The output's own storage wins over the default."""
    return own if own is not None else default


def _check_url(value: str, field: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError(field, f"must be an http(s) URL, got {redact_url(value)!r}")


def validate_storage(msg: StorageMessage, where: str) -> None:
    """Raise ``InvalidRequestError`` naming the field (``where.region``, ...) when ``msg`` is unusable.

    Error messages never quote a credential.
    """
    if isinstance(msg, pe.S3Upload):
        if not msg.bucket.strip():
            raise InvalidRequestError(f"{where}.bucket", "is required")
        if msg.endpoint:
            _check_url(msg.endpoint, f"{where}.endpoint")
        elif not msg.region.strip():
            raise InvalidRequestError(f"{where}.region", "required when no endpoint is set")
        if bool(msg.access_key) != bool(msg.secret):
            missing = "secret" if msg.access_key else "access_key"
            raise InvalidRequestError(
                f"{where}.{missing}", "access_key and secret go together (or leave both empty)"
            )
        if msg.session_token and not msg.access_key:
            raise InvalidRequestError(f"{where}.session_token", "needs access_key and secret")
        if msg.assume_role_arn:
            raise NotSupportedError(f"{where}.assume_role_arn: assuming a role is not supported yet")
        if msg.tagging:
            try:
                parse_qsl(msg.tagging, keep_blank_values=True, strict_parsing=True)
            except ValueError:
                raise InvalidRequestError(
                    f"{where}.tagging", "must be URL-encoded key=value pairs joined by '&'"
                ) from None
        for k in msg.metadata:
            if not k or not k.isascii():
                raise InvalidRequestError(f"{where}.metadata", f"invalid key {k!r}")
        if msg.HasField("proxy") and msg.proxy.url:
            _check_url(msg.proxy.url, f"{where}.proxy.url")
    elif isinstance(msg, pe.GCPUpload):
        if not msg.bucket.strip():
            raise InvalidRequestError(f"{where}.bucket", "is required")
        if msg.credentials:
            try:
                info = json.loads(msg.credentials)
            except ValueError:
                raise InvalidRequestError(f"{where}.credentials", "is not valid JSON") from None
            if not isinstance(info, dict) or "private_key" not in info or "client_email" not in info:
                raise InvalidRequestError(
                    f"{where}.credentials",
                    "must be a service account key (JSON with client_email, private_key)",
                )
        if msg.HasField("proxy") and msg.proxy.url:
            raise NotSupportedError(f"{where}.proxy: proxies for GCS are not supported yet")
    elif isinstance(msg, pe.AzureBlobUpload):
        for name in ("account_name", "account_key", "container_name"):
            if not getattr(msg, name).strip():
                raise InvalidRequestError(f"{where}.{name}", "is required")
        try:
            base64.b64decode(msg.account_key, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"{where}.account_key", "is not base64") from None
    else:  # pragma: no cover - guarded by the type
        raise InvalidRequestError(where, f"unsupported storage {type(msg).__name__}")


def _proxy_url(proxy: pe.ProxyConfig) -> str:
    if not proxy.url or not proxy.username:
        return proxy.url
    from urllib.parse import quote

    parts = urlsplit(proxy.url)
    auth = quote(proxy.username, safe="") + (":" + quote(proxy.password, safe="") if proxy.password else "")
    return parts._replace(netloc=f"{auth}@{parts.netloc}").geturl()


def make_uploader(msg: StorageMessage | None, **options: Any) -> Uploader | None:
    """An uploader for a validated storage message (None → no upload, files stay local).

    ``options`` go to the uploader's constructor (e.g. ``multipart_threshold`` for S3).
    """
    if msg is None:
        return None
    if isinstance(msg, pe.S3Upload):
        from .s3 import S3Uploader

        return S3Uploader(
            msg.bucket.strip(),
            region=msg.region.strip(),
            endpoint=msg.endpoint.strip(),
            access_key=msg.access_key,
            secret=msg.secret,
            session_token=msg.session_token,
            force_path_style=msg.force_path_style,
            metadata=dict(msg.metadata),
            tagging=msg.tagging,
            content_disposition=msg.content_disposition,
            proxy=_proxy_url(msg.proxy) if msg.HasField("proxy") else "",
            **options,
        )
    if isinstance(msg, pe.GCPUpload):
        from .gcs import GCSUploader

        return GCSUploader(msg.bucket.strip(), credentials=msg.credentials, **options)
    if isinstance(msg, pe.AzureBlobUpload):
        from .azure import AzureUploader

        return AzureUploader(
            msg.container_name.strip(),
            account_name=msg.account_name.strip(),
            account_key=msg.account_key,
            **options,
        )
    raise InvalidRequestError("storage", f"unsupported storage {type(msg).__name__}")
