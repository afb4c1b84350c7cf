"""A recorder's uploads: each finished file (then its manifest) goes to its output's store.

Local files are kept: the bucket gets a copy. When an upload fails for good, the file stays
at its local path, which becomes the result's ``location``; ``backup_storage_used`` is set
and the output fails with an error naming the store and bucket.

HLS and image outputs upload while recording (:class:`LiveUploads`): each closed segment,
then the playlists naming it, each image; their manifests go up at the end like files'.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from livekit.protocol import egress as pe

from .base import RetryPolicy, Uploader, UploadQueue, UploadResult, object_key
from .config import StorageMessage, default_storage, make_uploader, resolve_storage

if TYPE_CHECKING:
    from ..config import EgressConfig, FileTarget, ImageTarget, SegmentTarget

__all__ = ["FileUploads", "LiveUploads"]

log = logging.getLogger("pyegress.storage")


class LiveUploads:
    """One HLS or image output's uploads while it records: in order, on a worker of its own.

    :meth:`put` is called from the encode thread and only queues (files rewritten in place,
    like playlists, are queued as a snapshot copy), so encoding never waits for the store.
    One worker keeps the order: a segment is in the bucket before the playlist naming it.
    """

    def __init__(self, uploader: Uploader, root: Path, *, retry: RetryPolicy | None = None) -> None:
        self.uploader = uploader
        self.root = root
        self.queue = UploadQueue(uploader, backup_dir=None, retry=retry, workers=1, keep_local=True)
        self._copies = itertools.count()

    def key(self, local: Path) -> str:
        """The object key of a local file (its path under the output folder)."""
        return object_key(local, self.root)

    def location(self, local: Path) -> str:
        """The URL the object of ``local`` has once uploaded."""
        return self.uploader.location(self.key(local))

    def put(self, local: Path, *, snapshot: bool = False) -> concurrent.futures.Future[UploadResult]:
        """Queue ``local`` for upload; ``snapshot`` uploads a copy of it as it is now."""
        key = self.key(local)
        if not snapshot:
            return self.queue.submit(local, key)
        copy = local.with_name(f".{local.name}.{next(self._copies)}.upload")
        shutil.copyfile(local, copy)
        future = self.queue.submit(copy, key, keep_local=False)
        future.add_done_callback(lambda _: copy.unlink(missing_ok=True))  # after a failure too
        return future

    @property
    def backup_used(self) -> bool:
        """True once an upload failed for good (its file stayed local)."""
        return self.queue.backup_used

    @property
    def error(self) -> str:
        """The first upload error ("" when none)."""
        return self.queue.errors[0] if self.queue.errors else ""

    async def close(self, timeout: float = 120.0) -> bool:
        """Wait for the queued uploads (worker thread), then stop; False on timeout."""
        return await asyncio.to_thread(self.queue.close, timeout)


class FileUploads:
    """Which store each output of a recording goes to, and the uploads of files and manifests.

    ``default`` is the service-wide ``StorageConfig``; an output's own ``s3`` / ``gcp`` /
    ``azure`` wins over it. Invalid defaults raise ``InvalidRequestError`` naming
    ``storage.<provider>.<field>``. HLS and image outputs get a :class:`LiveUploads` each
    (:meth:`live`).
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
        targets: list[FileTarget | SegmentTarget | ImageTarget] = [
            *config.files,
            *config.segments,
            *config.images,
        ]
        for target in targets:
            chosen = resolve_storage(target.storage, fallback)
            if chosen is not None:
                self.storage[target.field] = chosen
        self._queues: dict[bytes, UploadQueue] = {}
        self._live: list[LiveUploads] = []

    @property
    def active(self) -> bool:
        """True when at least one file output goes to a store."""
        return bool(self.storage)

    def live(self, field: str) -> LiveUploads | None:
        """Uploads of the HLS or image output ``field`` while it records (None: it stays local)."""
        msg = self.storage.get(field)
        if msg is None:
            return None
        uploader = make_uploader(msg)
        assert uploader is not None
        live = LiveUploads(uploader, self.root, retry=self.retry)
        self._live.append(live)  # closed by its output's finish, or by close() if it never ran
        return live

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
            live = getattr(out, "uploads", None)
            if isinstance(live, LiveUploads) and live.backup_used:  # closed by the output's finish
                info.backup_storage_used = True
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
        live, self._live = self._live, []
        for lu in live:
            await lu.close()
