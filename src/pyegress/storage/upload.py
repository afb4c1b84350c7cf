"""An output's store: its files go up in order on a worker of its own, and stay local too.

Every output that names a store (its own ``s3`` / ``gcp`` / ``azure``, or the service default)
gets one :class:`Store`. :meth:`Store.put` only queues, so the encode thread never waits for a
bucket; one worker keeps the order (an HLS segment is in the bucket before the playlist that
names it). When an upload to the primary store fails for good, that file and every later one
go to the backup store, when there is one (``backup_used`` turns true, nothing fails); when
that fails too, or there is none, the file stays at its local path, ``backup_used`` turns true
and the output reports the failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import shutil
from pathlib import Path

from .base import RetryPolicy, Uploader, UploadQueue, UploadResult, object_key
from .config import StorageMessage, make_uploader

__all__ = ["Store", "open_store"]

log = logging.getLogger("pyegress.storage")


class Store:
    """One output's uploads: queued in order, on a worker thread of its own."""

    def __init__(
        self,
        uploader: Uploader,
        root: Path,
        *,
        backup: Uploader | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.uploader = uploader
        self.root = root
        self.queue = UploadQueue(
            uploader, backup=backup, backup_dir=None, retry=retry, workers=1, keep_local=True
        )
        self._copies = itertools.count()

    def key(self, local: Path) -> str:
        """The object key of a local file (its path under the output folder)."""
        return object_key(local, self.root)

    def location(self, local: Path) -> str:
        """The URL the object of ``local`` has once uploaded (in the backup store once the
        primary failed)."""
        backup = self.queue.backup if self.queue.on_backup else None
        return (backup or self.uploader).location(self.key(local))

    def where(self, local: Path, upload: concurrent.futures.Future[UploadResult] | None) -> str:
        """Where ``local`` is as far as its (latest) ``upload`` tells: the object's URL once
        stored, the URL it is expected at while queued, its local path when it went nowhere."""
        if upload is None:
            return str(local)
        if not upload.done():
            return self.location(local)
        result = upload.result()
        return result.location if result.ok else str(local)

    def put(self, local: Path, *, snapshot: bool = False) -> concurrent.futures.Future[UploadResult]:
        """Queue ``local`` for upload; ``snapshot`` uploads a copy of it as it is now (for files
        rewritten in place, like playlists)."""
        key = self.key(local)
        if not snapshot:
            return self.queue.submit(local, key)
        copy = local.with_name(f".{local.name}.{next(self._copies)}.upload")
        shutil.copyfile(local, copy)
        future = self.queue.submit(copy, key, keep_local=False)
        future.add_done_callback(lambda _: copy.unlink(missing_ok=True))  # after a failure too
        return future

    async def upload(self, local: Path) -> UploadResult:
        """Upload ``local`` now and wait for the result (on the queue's worker, not the loop)."""
        return await asyncio.wrap_future(self.put(local))

    async def drain(self, timeout: float = 120.0) -> bool:
        """Wait until everything queued so far went up (or failed for good); False on timeout."""
        return await asyncio.to_thread(self.queue.drain, timeout)

    @property
    def backup_used(self) -> bool:
        """True once an upload to the primary failed for good (its file went to the backup
        store, or stayed local)."""
        return self.queue.backup_used

    @property
    def error(self) -> str:
        """The first upload that reached no store ("" when none)."""
        return self.queue.errors[0] if self.queue.errors else ""

    async def close(self, timeout: float = 120.0) -> bool:
        """Wait for the queued uploads (worker thread), then stop; False on timeout. Idempotent."""
        return await asyncio.to_thread(self.queue.close, timeout)


def open_store(
    msg: StorageMessage | None,
    root: Path,
    *,
    backup: StorageMessage | None = None,
    retry: RetryPolicy | None = None,
) -> Store | None:
    """The store of a validated storage message (None: the output stays local), with the
    ``backup`` store it falls back to."""
    uploader = make_uploader(msg)
    if uploader is None:
        return None
    return Store(uploader, root, backup=make_uploader(backup), retry=retry)
