"""Progress where work is long, for the CLI and the demo (rich): a live line per running egress
(status, elapsed, size, fps, outputs, files queued for upload) and, at the end, a table of what was written.

On a terminal the lines refresh in place; elsewhere (a log, a pipe) a plain line per egress is
printed when it turns ACTIVE and every ``every`` seconds after, so logs stay short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from livekit.protocol import egress as pe
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .errors import EgressError
from .recorders import Recorder
from .service import EgressService

__all__ = ["follow_progress", "progress_line", "results_table"]


def fmt_size(n: float) -> str:
    """Bytes as a person reads them (``2.4 MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _columns(rec: Recorder) -> list[str]:
    p = rec.progress()
    failed = sum(o.failed for o in rec.outputs)
    ok = len(rec.outputs) - failed
    outputs = f"{ok} output{'s' if ok != 1 else ''}" + (f", {failed} failed" if failed else "")
    queued = sum(o.store.queue.pending for o in rec.outputs if o.store is not None)
    return [rec.egress_id, p.status, f"{p.elapsed:.1f} s", fmt_size(p.size), f"{p.fps:.1f} fps",
            outputs, f"{queued} queued"]  # fmt: skip


def progress_line(rec: Recorder) -> str:
    """One egress's progress as one line of text."""
    return "  ".join(_columns(rec))


def _table(svc: EgressService, egress_ids: Sequence[str]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    for egress_id in egress_ids:
        with contextlib.suppress(EgressError):  # over: its recorder was let go
            table.add_row(*_columns(svc.recorder(egress_id)))
    return table


async def follow_progress(
    svc: EgressService, egress_ids: Sequence[str], until: asyncio.Event, console: Console, every: float = 5.0
) -> None:
    """Show the egresses' progress until ``until`` is set (a live table on a terminal)."""
    if console.is_terminal:
        with Live(_table(svc, egress_ids), console=console, refresh_per_second=4, transient=True) as live:
            while not until.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(until.wait(), 0.5)
                live.update(_table(svc, egress_ids))
        return
    shown: dict[str, float] = {}
    while not until.is_set():
        for egress_id in egress_ids:
            with contextlib.suppress(EgressError):
                rec = svc.recorder(egress_id)
                active = rec.info.status == pe.EGRESS_ACTIVE
                if active and time.monotonic() - shown.get(egress_id, -every) >= every:
                    console.print(progress_line(rec), highlight=False, soft_wrap=True)
                    shown[egress_id] = time.monotonic()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(until.wait(), 0.5)


def results_table(infos: Iterable[pe.EgressInfo], root: Path | None = None) -> Table:
    """What the egresses wrote: each file, playlist, image series and stream, with its size,
    duration and where it went (paths under ``root`` shown relative to it)."""
    table = Table(title="written", title_justify="left")
    for column in ("egress", "status", "output", "duration", "size", "uploaded to"):
        table.add_column(column, overflow="fold")

    def shown(path: str) -> str:
        p = Path(path)
        return str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else path

    for info in infos:
        status = pe.EgressStatus.Name(info.status).removeprefix("EGRESS_")
        rows = [(shown(f.filename), f"{f.duration / 1e9:.1f} s", fmt_size(f.size),
                 "" if f.location == f.filename else f.location) for f in info.file_results]  # fmt: skip
        rows += [(shown(s.playlist_name), f"{s.duration / 1e9:.1f} s, {s.segment_count} segments",
                  fmt_size(s.size), s.playlist_location) for s in info.segment_results]  # fmt: skip
        rows += [(shown(i.filename_prefix) + "*", f"{i.image_count} images", "", "")
                 for i in info.image_results]  # fmt: skip
        rows += [(s.url, f"{s.duration / 1e9:.1f} s", "", pe.StreamInfo.Status.Name(s.status))
                 for s in info.stream_results]  # fmt: skip
        if not rows:
            rows = [("-", "", "", info.error)]
        for i, row in enumerate(rows):
            table.add_row(info.egress_id if i == 0 else "", status if i == 0 else "", *row)
    return table
