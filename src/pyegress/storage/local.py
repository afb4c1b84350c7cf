"""Local "storage": the file stays on disk, or is copied into a folder that stands for a bucket."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .base import Uploader, object_key

__all__ = ["LocalUploader"]


class LocalUploader(Uploader):
    """With ``root`` unset, a no-op whose location is the file's own path; else copies to ``root/key``."""

    name = "local"

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(str(root) if root is not None else "", "")
        self.root = Path(root) if root is not None else None

    @property
    def where(self) -> str:
        return f"local folder '{self.root}'" if self.root is not None else "local disk"

    def _put(self, local: Path, key: str, content_type: str) -> None:
        if self.root is None:
            return
        target = self.root / object_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if local.resolve() != target.resolve():
            shutil.copyfile(local, target)

    def upload_file(self, local: Path, key: str, *, content_type: str | None = None) -> str:
        super().upload_file(local, key, content_type=content_type)
        return str(Path(local).resolve()) if self.root is None else self.location(key)

    def location(self, key: str) -> str:
        return str((self.root or Path.cwd()) / object_key(key))
