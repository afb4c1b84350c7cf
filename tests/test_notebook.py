"""examples/record.ipynb runs headless, every cell, in a real Jupyter kernel (nbclient + ipykernel):
it starts its own livekit-server and synthetic participant, records, previews and plays the file.
A failing cell fails the test (``CellExecutionError`` names it)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).parent.parent / "examples" / "record.ipynb"


def _outputs(nb: nbformat.NotebookNode) -> list[dict[str, object]]:
    return [data for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
            for data in [o.get("data", {})]]  # fmt: skip


async def test_the_example_notebook_runs(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    where = {"metadata": {"path": str(tmp_path)}}  # the kernel's working folder
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources=where)
    await client.async_execute()
    outputs = _outputs(nb)
    # the preview cell showed the widget, the last cells the video inline, and the file is there
    assert any("application/vnd.jupyter.widget-view+json" in d for d in outputs), outputs
    videos = [d["text/html"] for d in outputs if "<video" in str(d.get("text/html", ""))]
    assert videos and "base64" in str(videos[0])
    files = list((tmp_path / "recordings").glob("notebook-*.mp4"))
    assert len(files) == 1 and files[0].stat().st_size > 50_000, files
