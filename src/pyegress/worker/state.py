"""The worker's state file: the egresses it is running, so a restart can report those a crash left.

livekit-server keeps no registry of workers and never health-checks them: an egress whose
worker was killed stays "active" in its store forever unless someone reports it ended. So the
worker writes, atomically (a temporary file renamed over the old one), the last info it sent
for each running egress (redacted, as sent) with the node id running it; when it starts again
with the same file it reports each one left there FAILED (``worker EW_x died while recording``,
``ended_at`` set) through ``IOInfo.UpdateEgress`` and forgets it.

The file is JSON: ``{"version": 1, "egresses": {egress_id: {"egress_id", "room_name",
"request", "node_id", "started_at", "info"}}}`` with ``info`` the serialized ``EgressInfo`` in
base64 (the other keys are there for people reading it). One file per worker: workers sharing an
``output_dir`` need a ``state_file`` each.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError
from livekit.protocol import egress as pe

log = logging.getLogger("pyegress.worker")

#: The state file's name in ``output_dir`` when the config names none.
DEFAULT_NAME = ".pyegress-worker-state.json"
_VERSION = 1


@dataclass
class Left:
    """An egress a previous run of the worker was running when it died."""

    node_id: str
    info: pe.EgressInfo

    def failed(self) -> pe.EgressInfo:
        """The final info to report: FAILED, naming the dead worker, ended now."""
        out = pe.EgressInfo()
        out.CopyFrom(self.info)
        now = time.time_ns()
        out.status = pe.EGRESS_FAILED
        out.error = f"worker {self.node_id} died while recording"
        out.ended_at = now
        out.updated_at = now
        return out


class StateFile:
    """The running egresses of this worker, mirrored to ``path`` on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict[str, object]] = {}

    def load(self) -> list[Left]:
        """The egresses a previous run left (they stay in the file until :meth:`remove`)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            log.error("worker state file %s unreadable (%s); ignoring it", self.path, e)
            return []
        left = []
        for egress_id, entry in (data.get("egresses") or {}).items():
            try:
                info = pe.EgressInfo.FromString(base64.b64decode(entry["info"]))
            except (KeyError, TypeError, ValueError, DecodeError) as e:
                log.error("worker state file: entry %s unreadable (%s); dropped", egress_id, e)
                continue
            self._entries[egress_id] = entry
            left.append(Left(str(entry.get("node_id", "")) or "(unknown)", info))
        return left

    def save(self, node_id: str, request: str, info: pe.EgressInfo) -> None:
        """Record (or refresh) a running egress with the info last sent for it."""
        self._entries[info.egress_id] = {
            "egress_id": info.egress_id,
            "room_name": info.room_name,
            "request": request,
            "node_id": node_id,
            "started_at": info.started_at,
            "info": base64.b64encode(info.SerializeToString()).decode(),
        }
        self._write()

    def remove(self, egress_id: str) -> None:
        """Forget an egress whose final update reached the server."""
        if self._entries.pop(egress_id, None) is not None:
            self._write()

    def __contains__(self, egress_id: object) -> bool:
        return egress_id in self._entries

    def _write(self) -> None:
        body = json.dumps({"version": _VERSION, "egresses": self._entries}, indent=1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:  # a full disk must not stop recordings; the next change retries
            log.error("worker state file %s not written: %s", self.path, e)
