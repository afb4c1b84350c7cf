"""One file of a participant's camera and microphone as their senders encoded them: H.264 +
Opus → fragmented MP4, VP8 + Opus → WebM (Opus alone → Ogg). The recorder places each frame on
the file's timeline (the senders' clocks, lined up by their RTCP sender reports); this file
muxes them, each stream's timestamps kept increasing."""

from __future__ import annotations

from typing import Any

import av

from ..media.encoded import EncodedFrame
from .file import CONTAINER_FORMATS, FileOutput, container_options
from .passthrough import add_stream, mux_frame

#: How long FFmpeg may hold one stream's packets waiting for the other's (a muted camera sends
#: nothing): one second, so the microphone reaches the disk while the camera is off.
MAX_INTERLEAVE_DELAY_US = 1_000_000


class PassthroughMuxFile(FileOutput):
    """Opened by :meth:`start` with the first frame of its video (a key frame) and its audio."""

    frames = 0

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        """Nothing to do before the first frames (:meth:`start` opens the file)."""

    @property
    def kinds(self) -> set[str]:
        """The streams the file holds ("video", "audio"), once started."""
        return set(self._streams)

    def start(self, first: dict[str, EncodedFrame]) -> None:
        """Open the file with a stream per kind of ``first`` (the first frame of each)."""
        if self.failed:
            return
        try:
            fmt = CONTAINER_FORMATS[self.path.suffix]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            options = {**container_options(fmt), "max_interleave_delta": str(MAX_INTERLEAVE_DELAY_US)}
            container = av.open(str(self.path), "w", format=fmt, options=options)
            for kind in ("video", "audio"):
                if kind in first:
                    self._streams[kind] = add_stream(container, first[kind])
            container.start_encoding()
            self._container = container
            self._last: dict[str, int] = {}
        except Exception as e:
            self.fail(f"cannot open {self.path.name}: {e}")

    def write_at(self, kind: str, frame: EncodedFrame, t: float) -> None:
        """Mux ``frame`` at ``t`` seconds of the file (just after the stream's last one when
        it would not be later)."""
        stream: Any = self._streams.get(kind)
        if stream is None or self._container is None or self.failed:
            return
        try:
            end, self._last[kind] = mux_frame(
                self._container, stream, frame, round(t * frame.clock_rate), self._last.get(kind)
            )
            self._track_end(kind, end)
            self.frames += 1
        except Exception as e:
            self.fail(f"cannot write {self.path.name}: {e}")
