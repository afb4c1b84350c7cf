"""A recorder's uploads: each finished file (then its manifest) goes to its output's store.

Local files are kept: the bucket gets a copy. When an upload fails for good, the file stays
at its local path, which becomes the result's ``location``; ``backup_storage_used`` is set
and the output fails with an error naming the store and bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from livekit.protocol import egress as pe

from .base import RetryPolicy, UploadQueue, UploadResult, object_key
from .config import StorageMessage, default_storage, make_uploader, resolve_storage

if TYPE_CHECKING:
    from ..config import EgressConfig

__all__ = ["FileUploads"]

log = logging.getLogger("pyegress.storage")


class FileUploads:
    """Which store each file output of a recording goes to, and the uploads themselves.

    ``default`` is the service-wide ``StorageConfig``; a file output's own ``s3`` / ``gcp`` /
    ``azure`` wins over it. Invalid defaults raise ``InvalidRequestError`` naming
    ``storage.<provider>.<field>``.
    """

    def __init__(
        self,
        config: EgressConfig,
        default: pe.StorageConfig | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        fallback = default_storage(default)
        self.root = config.output_dir
        self.retry = retry
        self.storage: dict[str, StorageMessage] = {}
        for target in config.files:
            chosen = resolve_storage(target.storage, fallback)
            if chosen is not None:
                self.storage[target.field] = chosen
        self._queues: dict[bytes, UploadQueue] = {}

    @property
    def active(self) -> bool:
        """True when at least one file output goes to a store."""
        return bool(self.storage)

    def _queue(self, msg: StorageMessage) -> UploadQueue:
        ident = type(msg).__name__.encode() + msg.SerializeToString(deterministic=True)
        queue = self._queues.get(ident)
        if queue is None:
            uploader = make_uploader(msg)
            assert uploader is not None
            queue = UploadQueue(uploader, backup_dir=None, retry=self.retry, keep_local=True)
            self._queues[ident] = queue
        return queue

    async def _upload(self, msg: StorageMessage, local: Path, key: str) -> UploadResult:
        return await asyncio.wrap_future(self._queue(msg).submit(local, key))

    async def upload_files(self, info: pe.EgressInfo, outputs: Sequence[object]) -> None:
        """Upload each finished file; set its result's ``location`` (the object URL) or the failure."""
        jobs = []
        for out in outputs:
            msg = self.storage.get(getattr(out, "name", ""))
            path = getattr(out, "path", None)
            if msg is None or not isinstance(path, Path) or not path.is_file():
                continue
            result = next((r for r in info.file_results if r.filename == str(path)), None)
            jobs.append((out, result, self._upload(msg, path, object_key(path, self.root))))
        if not jobs:
            return
        done = await asyncio.gather(*(j[2] for j in jobs))
        for (out, result, _), up in zip(jobs, done, strict=True):
            if up.ok:
                if result is not None:
                    result.location = up.location
            else:
                info.backup_storage_used = True
                out.fail(up.error or "upload failed")  # type: ignore[attr-defined]

    async def upload_manifests(self, info: pe.EgressInfo, outputs: Sequence[object]) -> None:
        """Upload each written manifest beside its file (``<key>.json``), then close the queues."""
        try:
            for out in outputs:
                msg = self.storage.get(getattr(out, "name", ""))
                manifest = getattr(out, "manifest_path", None)
                if msg is None or not isinstance(manifest, Path) or not manifest.is_file():
                    continue
                up = await self._upload(msg, manifest, object_key(manifest, self.root))
                if up.ok:
                    info.manifest_location = info.manifest_location or up.location
                else:
                    info.backup_storage_used = True
                    error = f"{getattr(out, 'name', 'output')} manifest: {up.error}"
                    info.error = f"{info.error}; {error}" if info.error else error
        finally:
            await self.close()

    async def close(self) -> None:
        """Finish pending uploads and stop the worker threads (idempotent)."""
        queues, self._queues = list(self._queues.values()), {}
        for q in queues:
            await asyncio.to_thread(q.close, 120.0)
