"""The one manifest writer: a JSON file beside an output, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def manifest_path(media: Path) -> Path:
    """Where the manifest of ``media`` (a file, a playlist, an image prefix) goes."""
    return media.with_name(media.name + ".json")


def write_manifest(path: Path, data: Mapping[str, object]) -> None:
    """Write ``data`` as indented JSON; readers never see half a manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
