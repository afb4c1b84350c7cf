"""The output contract: open / write / close / result, and the three kinds of input.

An output is opened on the encode thread with the encoders' stream templates, fed there, and
closed there; then :meth:`Output.finish` runs on the event loop (uploads, a socket's close).
Each output owns its entry in ``EgressInfo`` (:meth:`attach`, :meth:`refresh`), its store
(uploads) and its manifest. What it is fed depends on its kind:

- :class:`PacketOutput` muxes encoded packets (files, HLS, RTMP); each call gets an immutable
  :class:`~pyegress.media.encoder.EncodedPacket` and builds its own ``av.Packet``;
- :class:`FrameOutput` takes canvas frames on the ticks it asks for (images);
- :class:`PcmOutput` takes the mixed PCM of every tick on the event loop (WebSocket).

A failure stays on its output (:meth:`fail`); the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from livekit.protocol import egress as pe

from ..media.encoder import EncodedPacket
from ..media.encoding import AudioEncoding, VideoEncoding
from ..storage.upload import Store
from .manifest import write_manifest

log = logging.getLogger("pyegress.outputs")


class Output:
    """Base of every output. ``video`` / ``audio``: the encodings whose packets it takes."""

    #: Set by the recorder; called from any thread when this output's result changed.
    notify: Callable[[], None] | None = None
    #: A live destination (RTMP, SRT, WebSocket): it takes the slate while the egress is paused
    #: and is never cut (:mod:`pyegress.pauses`).
    streams_live = False

    def __init__(
        self,
        name: str,
        video: VideoEncoding | None = None,
        audio: AudioEncoding | None = None,
        *,
        store: Store | None = None,
        manifest_path: Path | None = None,
    ) -> None:
        self.name = name
        self.video = video
        self.audio = audio
        self.store = store
        self.manifest_path = manifest_path
        self.error = ""
        self._end = {"video": 0.0, "audio": 0.0}

    # --- failure ---------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def fail(self, error: BaseException | str) -> None:
        """Record the first error; the output stops receiving media."""
        if not self.error:
            self.error = str(error)
            log.error("output %s failed: %s", self.name, self.error)

    def on_cut(self) -> None:
        """The next packet comes after a paused span that was cut out (encode thread; HLS marks
        it with a discontinuity)."""

    def resume(self, previous: Output) -> None:
        """Continue what ``previous`` (this output in the attempt before a retry, finished)
        wrote, where the container allows it (default: a new file of its own)."""

    # --- the encode thread ---------------------------------------------------------------

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        """Start writing; ``video`` / ``audio`` are the encoders' template streams (or None)."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish writing (trailer, last segment); called once, after a failure too."""
        raise NotImplementedError

    # --- the event loop ------------------------------------------------------------------

    async def finish(self) -> None:
        """Loop-side end after :meth:`close`: wait for this output's uploads; a failed one
        fails the output (its files stay local)."""
        if self.store is not None:
            await self.store.drain()
            if self.store.error:
                self.fail(f"upload failed, files kept locally: {self.store.error}")

    def attach(self, info: pe.EgressInfo, started_at: int) -> None:
        """Add this output's entry to ``info`` (event loop only, like every info change)."""
        raise NotImplementedError

    def refresh(self, ended_at: int | None = None) -> None:
        """Copy the current state into the entry made by :meth:`attach` (event loop only)."""
        raise NotImplementedError

    @property
    def frames_dropped(self) -> int:
        """Frames (video or audio) this output could not send: a live receiver too slow or
        away. Files never drop."""
        return 0

    @property
    def backup_used(self) -> bool:
        """True when something of this output could not reach its store (it went to the backup
        store, or stayed local)."""
        return self.store is not None and self.store.backup_used

    def manifest_entries(self) -> dict[str, object]:
        """What this output adds to its manifest beside the egress info (segments, images)."""
        return {}

    async def publish_manifest(self, info: dict[str, object]) -> tuple[str, str]:
        """Write the manifest (when enabled) and upload it beside the media; returns its
        location ("" when it stayed local) and the upload error ("" when none)."""
        if self.manifest_path is None:
            return "", ""
        try:
            write_manifest(self.manifest_path, {**info, **self.manifest_entries()})
        except OSError as e:
            log.warning("cannot write manifest of %s: %s", self.name, e)
            return "", ""
        if self.store is None:
            return "", ""
        up = await self.store.upload(self.manifest_path)
        return (up.location, "") if up.ok else ("", f"{self.name} manifest: {up.error}")

    async def release(self) -> None:
        """Let go of the store's worker (after the manifest went up)."""
        if self.store is not None:
            await self.store.close()

    # --- progress ------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes written (or sent) so far."""
        return 0

    @property
    def duration(self) -> float:
        """Seconds of media written (the longer of the two tracks)."""
        return max(self._end.values())

    def _changed(self) -> None:
        if self.notify is not None:
            self.notify()

    def _track_end(self, kind: str, end: float) -> None:
        self._end[kind] = max(self._end[kind], end)


class PacketOutput(Output):
    """An output that muxes encoded packets of its ``video`` / ``audio`` encodings."""

    def write(self, packet: EncodedPacket) -> None:
        """Mux one packet (encode thread)."""
        raise NotImplementedError


class FrameOutput(Output):
    """An output that takes canvas frames of the ``canvas`` encoding's size (encode thread)."""

    def __init__(self, name: str, canvas: VideoEncoding, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.canvas = canvas

    def wants_frame(self, t: float) -> bool:
        """Whether the canvas at output time ``t`` is wanted (called every tick, keep it cheap)."""
        raise NotImplementedError

    def write_frame(self, frame: av.VideoFrame, t: float) -> None:
        """Take the canvas frame of output time ``t``."""
        raise NotImplementedError


class PcmOutput(Output):
    """An output that takes every tick's mixed 48 kHz stereo int16 PCM (event loop)."""

    def write_pcm(self, pcm: np.ndarray, t: float) -> None:
        """Take one tick of PCM, shape (n, 2), starting at output time ``t``."""
        raise NotImplementedError

    def set_muted(self, muted: bool) -> None:
        """The recorded audio was muted or unmuted (default: nothing to tell)."""
