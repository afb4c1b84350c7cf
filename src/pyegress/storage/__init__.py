"""Storage: uploaders (local, S3, GCS, Azure) behind one small interface, and the upload queue.

The client libraries are optional extras (``pip install pyegress[s3]``, ``[gcs]``,
``[azure]`` or ``[all]``) and are imported only when an uploader of that kind is used.
"""

from __future__ import annotations

from .base import (
    RetryPolicy,
    StorageError,
    Uploader,
    UploadQueue,
    UploadResult,
    guess_content_type,
    object_key,
)
from .config import (
    StorageMessage,
    default_storage,
    make_uploader,
    output_storage,
    resolve_storage,
    validate_storage,
)
from .local import LocalUploader

__all__ = [
    "LocalUploader",
    "RetryPolicy",
    "StorageError",
    "StorageMessage",
    "UploadQueue",
    "UploadResult",
    "Uploader",
    "default_storage",
    "guess_content_type",
    "make_uploader",
    "object_key",
    "output_storage",
    "resolve_storage",
    "validate_storage",
]
