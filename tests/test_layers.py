"""The house as the dependency graph draws it: no package imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

from livekit.protocol import egress as pe

import pyegress
from pyegress.sources.room import RoomSource

SRC = Path(pyegress.__file__).parent


def _unit(module: str) -> str:
    """The package a module belongs to (``pyegress.outputs.file`` → ``outputs``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        unit = _unit(module)
        for node in ast.walk(ast.parse(path.read_text())):
            target = ""
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyegress"):
                target = node.module or ""
            elif isinstance(node, ast.Import):
                target = next((a.name for a in node.names if a.name.startswith("pyegress.")), "")
            if target.startswith("pyegress.") and _unit(target) != unit:
                graph.setdefault(unit, set()).add(_unit(target))
    return graph


def test_no_package_imports_one_that_imports_it_back() -> None:
    graph = _imports()
    # `testing` is a toolbox for users and tests; it may drive anything (it is above everything)
    cycles = []
    for a, targets in graph.items():
        for b in targets:
            seen, todo = set(), [b]
            while todo:
                node = todo.pop()
                if node == a:
                    cycles.append((a, b))
                    break
                if node not in seen:
                    seen.add(node)
                    todo.extend(graph.get(node, ()))
    assert not cycles, f"import cycles between packages: {sorted(cycles)}"


def test_the_layers_point_down() -> None:
    graph = _imports()
    below = {
        "redaction": set(),
        "media": {"errors"},
        "storage": {"errors", "redaction"},
        "config": {"errors", "filenames", "media", "storage", "redaction"},
        "outputs": {"errors", "filenames", "media", "storage", "config", "redaction"},
        "pauses": {"errors", "media"},
        "pipeline": {"media", "outputs", "pauses"},
    }
    for unit, allowed in below.items():
        extra = graph.get(unit, set()) - allowed - {"compat"}
        assert not extra, f"{unit} imports {sorted(extra)}, which sit above it"


def test_a_recorder_without_a_room_builds_no_room_source() -> None:
    web = pyegress.WebRecorder(
        pe.WebEgressRequest(url="http://127.0.0.1:9/", file_outputs=[pe.EncodedFileOutput(filepath="w.mp4")])
    )
    assert not hasattr(web, "source")
    composite = pyegress.RoomCompositeRecorder(
        pe.RoomCompositeEgressRequest(room_name="r", file_outputs=[pe.EncodedFileOutput(filepath="r.mp4")])
    )
    assert isinstance(composite.source, RoomSource)
