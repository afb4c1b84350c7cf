"""The uploader interface and the upload queue (retries with backoff, then a backup store or folder)."""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import logging
import os
import queue
import random
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from urllib.parse import quote

from .. import redaction
from ..errors import OutputError

__all__ = [
    "REDACTED",
    "RetryPolicy",
    "StorageError",
    "UploadQueue",
    "UploadResult",
    "Uploader",
    "guess_content_type",
    "object_key",
]

log = logging.getLogger("pyegress.storage")

REDACTED = redaction.REDACTED

_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".webm": "video/webm",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".ts": "video/MP2T",
    ".m3u8": "application/x-mpegURL",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain",
}


def guess_content_type(key: str) -> str:
    """The Content-Type pyegress sets for an object, by its extension."""
    return _CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), "application/octet-stream")


def object_key(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> str:
    """The object key of a local ``path``: relative to ``root`` when under it, POSIX, no leading ``/``."""
    p = Path(path)
    if root is not None:
        with contextlib.suppress(ValueError):
            p = p.resolve().relative_to(Path(root).resolve())
    parts = [s for s in p.as_posix().split("/") if s not in ("", ".", "..")]
    return "/".join(parts)


def quote_key(key: str) -> str:
    """``key`` escaped for use in a URL path."""
    return quote(key, safe="/~!$&'()*+,;=:@")


class StorageError(OutputError):
    """An upload failed; the message names the store and the bucket, never a credential.

    ``transient`` says whether retrying may help (network errors, 5xx, throttling) or not
    (bad credentials, a missing bucket, a refused request).
    """

    def __init__(self, where: str, reason: str, *, transient: bool) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason
        self.transient = transient


class Uploader(abc.ABC):
    """Puts local files into one bucket of one store.

    Subclasses implement :meth:`_put`, :meth:`location` and :meth:`_classify`;
    :meth:`upload_file` is synchronous (call it from a worker thread, never the event loop)
    and thread-safe.
    """

    #: short store name used in messages: "s3", "gcs", "azure", "local"
    name: str = "storage"

    def __init__(self, bucket: str, endpoint: str = "", *, secrets: Iterable[str] = ()) -> None:
        self.bucket = bucket
        self.endpoint = endpoint.rstrip("/")
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    @property
    def where(self) -> str:
        """``s3 bucket 'x' at http://127.0.0.1:9000``: what error messages start with."""
        at = f" at {redaction.redact_url(self.endpoint)}" if self.endpoint else ""
        return f"{self.name} bucket '{self.bucket}'{at}"

    def scrub(self, text: str) -> str:
        """``text`` with every credential this uploader holds replaced by ``{redacted}``."""
        return redaction.scrub(text, self._secrets)

    def upload_file(self, local: Path, key: str, *, content_type: str | None = None) -> str:
        """Upload ``local`` to ``key`` and return the object's location (its URL).

        Raises ``StorageError`` naming the store and bucket (``transient`` set when a retry
        may succeed), or ``FileNotFoundError`` when ``local`` does not exist.
        """
        local = Path(local)
        if not local.is_file():
            raise FileNotFoundError(f"{local}: no such file to upload")
        try:
            self._put(local, key, content_type or guess_content_type(key))
        except StorageError:
            raise
        except Exception as e:
            reason, transient = self._classify(e)
            raise StorageError(self.where, self.scrub(reason), transient=transient) from None
        return self.location(key)

    @abc.abstractmethod
    def _put(self, local: Path, key: str, content_type: str) -> None:
        """Store ``local`` at ``key`` (the client library's own errors propagate)."""

    @abc.abstractmethod
    def location(self, key: str) -> str:
        """The URL of the object at ``key``."""

    def _classify(self, exc: BaseException) -> tuple[str, bool]:
        """A short reason for ``exc`` and whether a retry may help (default: network errors)."""
        transient = isinstance(exc, (ConnectionError, TimeoutError, OSError))
        return f"{type(exc).__name__}: {exc}", transient

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release clients and connections (idempotent)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where})"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing upload is retried.

    The defaults make 5 tries over about 30 s (waits of 2, 4, 8, 16 s, each ±10 %).
    """

    tries: int = 5
    first_delay: float = 2.0
    max_delay: float = 16.0
    jitter: float = 0.1

    def delays(self) -> Iterator[float]:
        """The waits before the 2nd, 3rd, ... tries."""
        delay = self.first_delay
        for _ in range(max(self.tries - 1, 0)):
            yield min(delay, self.max_delay) * (1 + random.uniform(-self.jitter, self.jitter))
            delay *= 2


@dataclass(frozen=True)
class UploadResult:
    """What became of one submitted file.

    ``location`` is the object URL when the upload succeeded, otherwise where the data is now
    on local disk (``backup_path`` when it was moved/copied to the backup folder).
    """

    key: str
    location: str
    backup_path: Path | None = None
    error: str | None = None
    attempts: int = 0
    in_backup: bool = False  # stored, but in the backup store (the primary failed)

    @property
    def ok(self) -> bool:
        """True when the object is in the store."""
        return self.error is None


@dataclass
class _Job:
    local: Path
    key: str
    content_type: str | None
    keep_local: bool
    future: concurrent.futures.Future[UploadResult]


class UploadQueue:
    """Uploads files on its own worker thread(s), retrying, and keeps what cannot be uploaded.

    With one worker (the default) uploads happen in submission order, so an HLS segment is in
    the bucket before the playlist that names it. A transient failure is retried with
    exponential backoff (``retry``); when the store stays down or refuses the file
    (credentials, missing bucket), it goes to the ``backup`` store when there is one (as do all
    later files, so an output's objects stay together, as LiveKit Egress does), and when that
    fails too (or there is none) to ``backup_dir/<key>`` and the result says where (with
    ``backup_dir=None`` it stays at its local path, which the result gives). ``backup_used`` is
    then true; ``errors`` lists only files that reached no store. Once a file has exhausted its
    retries on a store that store is considered down and later files get a single try each,
    until one succeeds, so a long outage does not pile up a backlog.
    """

    def __init__(
        self,
        uploader: Uploader,
        *,
        backup: Uploader | None = None,
        backup_dir: str | os.PathLike[str] | None,
        retry: RetryPolicy | None = None,
        workers: int = 1,
        keep_local: bool = True,
    ) -> None:
        self.uploader = uploader
        self.backup = backup
        self.on_backup = False  # the primary failed for good: files go to ``backup`` from then on
        self.backup_dir = Path(backup_dir) if backup_dir is not None else None
        self.retry = retry or RetryPolicy()
        self.keep_local = keep_local
        self.backup_used = False
        self.errors: list[str] = []
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self._down: set[str] = set()  # stores whose retries ran out: one try per file until one works
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._worker, name=f"pyegress-upload-{i}", daemon=True)
            for i in range(max(workers, 1))
        ]
        for t in self._threads:
            t.start()

    # --- public --------------------------------------------------------------------------

    def submit(
        self,
        local: str | os.PathLike[str],
        key: str,
        *,
        content_type: str | None = None,
        keep_local: bool | None = None,
    ) -> concurrent.futures.Future[UploadResult]:
        """Queue ``local`` for upload to ``key``; the future never raises, it holds the result.

        ``keep_local`` (default: the queue's) keeps the local file after a successful upload;
        otherwise it is deleted once the object is stored.
        """
        fut: concurrent.futures.Future[UploadResult] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("UploadQueue is closed")
            self._pending += 1
        keep = self.keep_local if keep_local is None else keep_local
        self._jobs.put(_Job(Path(local), key, content_type, keep, fut))
        return fut

    @property
    def pending(self) -> int:
        """Files submitted and not yet uploaded (or backed up): the queue a progress line shows."""
        return self._pending

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted file is uploaded or backed up; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Drain, then stop the workers and the uploader; returns what :meth:`drain` returned."""
        with self._cond:
            self._closed = True
        done = self.drain(timeout)
        self._stop.set()
        for _ in self._threads:
            self._jobs.put(None)
        if done:
            for t in self._threads:
                t.join(5.0)
            self.uploader.close()
            if self.backup is not None:
                self.backup.close()
        return done

    def __enter__(self) -> UploadQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the worker ----------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                result = self._run(job)
            except Exception as e:  # never lose the future, whatever happens
                log.exception("upload of %s failed unexpectedly", job.key)
                result = UploadResult(job.key, str(job.local), None, f"{type(e).__name__}: {e}")
            job.future.set_result(result)
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def _run(self, job: _Job) -> UploadResult:
        error = ""
        try:
            if not self.on_backup:
                location, failure, attempts = self._try(self.uploader, job)
                if failure is None:
                    return self._stored(job, location, attempts)
                error = str(failure)
                if self.backup is None:
                    return self._backup(job, error, attempts)
                log.error("upload of %s failed, the backup store takes it and the next: %s", job.key, error)
                self.on_backup = True  # like LiveKit Egress: one store for the rest of the output
            assert self.backup is not None
            location, failure, attempts = self._try(self.backup, job)
        except FileNotFoundError as e:
            error = f"{self.uploader.where}: {e}"
            self._record_error(error)
            return UploadResult(job.key, str(job.local), None, error, 0)
        if failure is None:
            with self._cond:
                self.backup_used = True
            return self._stored(job, location, attempts, in_backup=True)
        both = f"primary {error}; backup {failure}" if error else f"backup {failure}"
        return self._backup(job, both, attempts)

    def _try(self, up: Uploader, job: _Job) -> tuple[str, StorageError | None, int]:
        """Upload ``job`` to ``up``, retrying transient failures (one try while ``up`` is known
        to be down); returns the location, or the last error, and the tries made."""
        delays = self.retry.delays() if up.where not in self._down else iter(())
        attempts = 0
        while True:
            attempts += 1
            try:
                location = up.upload_file(job.local, job.key, content_type=job.content_type)
            except StorageError as e:
                delay = next(delays, None) if e.transient else None
                if delay is not None and not self._stop.is_set():
                    log.warning(
                        "upload of %s failed (try %d), retrying in %.1fs: %s", job.key, attempts, delay, e
                    )
                    if not self._stop.wait(delay):
                        continue
                if e.transient:
                    self._down.add(up.where)
                return "", e, attempts
            self._down.discard(up.where)
            return location, None, attempts

    def _stored(self, job: _Job, location: str, attempts: int, *, in_backup: bool = False) -> UploadResult:
        if not job.keep_local:
            with contextlib.suppress(OSError):
                job.local.unlink()
        log.debug("uploaded %s to %s", job.local, location)
        return UploadResult(job.key, location, None, None, attempts, in_backup)

    def _record_error(self, error: str) -> None:
        with self._cond:
            self.errors.append(error)

    def _backup(self, job: _Job, error: str, attempts: int) -> UploadResult:
        """Keep the file in the backup folder (moved, or copied when the local file is kept)."""
        if self.backup_dir is None:  # the file stays where it is
            with self._cond:
                self.backup_used = True
                self.errors.append(error)
            log.error("upload of %s failed, kept at %s: %s", job.key, job.local, error)
            return UploadResult(job.key, str(job.local), job.local, error, attempts)
        target = self._backup_target(self.backup_dir, job.key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if job.keep_local:
                shutil.copy2(job.local, target)
            else:
                shutil.move(str(job.local), target)
        except OSError as e:
            error = f"{error}; backup to {target} failed: {e}"
            log.error("upload of %s failed and its backup too: %s", job.key, error)
            self._record_error(error)
            return UploadResult(job.key, str(job.local), None, error, attempts)
        with self._cond:
            self.backup_used = True
            self.errors.append(error)
        log.error("upload of %s failed, kept in %s: %s", job.key, target, error)
        return UploadResult(job.key, str(target), target, error, attempts)

    def _backup_target(self, backup_dir: Path, key: str) -> Path:
        target = backup_dir / (object_key(key) or "unnamed")
        with self._cond:  # two failures of the same key keep both files
            n = 1
            candidate = target
            while candidate.exists():
                candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
                n += 1
            return candidate
