"""What the pipeline needs from an output."""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from livekit.protocol import egress as pe

from ..media.encoder import Packet
from ..media.encoding import AudioEncoding, VideoEncoding

log = logging.getLogger("pyegress.outputs")


class Output:
    """An output fed with encoded packets; a failure stays on this output.

    Optional hooks for outputs that take raw media instead: ``canvas`` (the canvas frames of
    ``wants_frame`` ticks go to ``write_frame``, on the encode thread) and ``wants_pcm`` (the
    mixed 48 kHz stereo PCM of every tick goes to ``write_pcm``, on the event loop).
    """

    #: The encoding whose canvas ``write_frame`` receives (None: no frames wanted).
    canvas: VideoEncoding | None = None
    #: True to receive every tick's PCM through ``write_pcm``.
    wants_pcm: bool = False
    #: Set by the recorder; called from any thread when this output's result changed.
    notify: Callable[[], None] | None = None

    def __init__(self, name: str, video: VideoEncoding | None, audio: AudioEncoding | None) -> None:
        self.name = name
        self.video = video
        self.audio = audio
        self.error = ""
        self._end = {"video": 0.0, "audio": 0.0}

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def fail(self, error: BaseException | str) -> None:
        """Record the first error; the output stops receiving packets."""
        if not self.error:
            self.error = str(error)
            log.error("output %s failed: %s", self.name, self.error)

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        """Create streams from the encoders' template streams and start writing."""
        raise NotImplementedError

    def write(self, packet: Packet, kind: str) -> None:
        """Mux one packet of ``kind`` ("video" or "audio")."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (trailer, manifest); safe to call once after a failure too."""
        raise NotImplementedError

    def wants_frame(self, t: float) -> bool:
        """Whether the canvas at output time ``t`` is wanted (called every tick, keep it cheap)."""
        return False

    def write_frame(self, frame: av.VideoFrame, t: float) -> None:
        """Take the canvas frame of output time ``t`` (encode thread)."""
        raise NotImplementedError

    def write_pcm(self, pcm: np.ndarray, t: float) -> None:
        """Take one tick of int16 PCM, shape (n, 2) at 48 kHz, starting at ``t`` (event loop)."""
        raise NotImplementedError

    async def finish(self) -> None:
        """Loop-side end, awaited by the recorder after ``close`` (e.g. a socket's close)."""

    def add_result(self, info: pe.EgressInfo, started_at: int) -> None:
        """Add this output's entry to ``info`` (segments, streams, images; files are the
        recorder's). Event loop only, like every ``EgressInfo`` change."""

    def update_result(self, ended_at: int | None = None) -> None:
        """Copy the current state into the entry made by ``add_result`` (event loop only)."""

    def write_manifest(self) -> None:
        """Write the output's JSON manifest, if it has one."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return 0

    def _changed(self) -> None:
        if self.notify is not None:
            self.notify()

    def _track_end(self, packet: Packet, kind: str) -> None:
        if packet.pts is not None and packet.time_base is not None:
            end = Fraction(packet.pts + (packet.duration or 0)) * packet.time_base
            self._end[kind] = max(self._end[kind], float(end))

    @property
    def duration(self) -> float:
        """Seconds of media written (the longer of the two tracks)."""
        return max(self._end.values())
