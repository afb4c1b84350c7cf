"""What the pipeline needs from an output."""

from __future__ import annotations

import logging
from fractions import Fraction

import av

from ..media.encoder import Packet
from ..media.encoding import AudioEncoding, VideoEncoding

log = logging.getLogger("pyegress.outputs")


class Output:
    """An output fed with encoded packets; a failure stays on this output."""

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

    def _track_end(self, packet: Packet, kind: str) -> None:
        if packet.pts is not None and packet.time_base is not None:
            end = Fraction(packet.pts + (packet.duration or 0)) * packet.time_base
            self._end[kind] = max(self._end[kind], float(end))

    @property
    def duration(self) -> float:
        """Seconds of media written (the longer of the two tracks)."""
        return max(self._end.values())
