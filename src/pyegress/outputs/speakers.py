"""One audio track per speaker beside the mix, in the same file (MP4, Ogg, WebM).

A container's streams are fixed when its header is written, but participants join at any
time: so each speaker's track is encoded while recording into a side file (:func:`side_format`)
and merged into the finished file by stream copy, before it is uploaded: the mix first, titled
``mix``, then one mono track per participant, titled with the identity. Every track is fed from
the same mixer read as the mix, span for span, so each holds exactly the mix's samples; a track
is silent before its participant first spoke, while they are absent, muted or excluded (one
excluded throughout gets no track). A participant who joins late has the silence before encoded
at once (about 180x real time per track: a second of one core per three minutes before the
join).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..media.encoder import AudioEncoder, EncodedPacket
from ..media.encoding import AudioEncoding
from ..media.inputs import MIX_CHANNELS, MIX_RATE
from .file import CONTAINER_FORMATS, container_options

log = logging.getLogger("pyegress.speakers")

#: A packet as the recorded files take it: None inside a cut pause, moved earlier after one.
Cut = Callable[[EncodedPacket], "EncodedPacket | None"]

#: Title of the mixed track in a file with speaker tracks.
MIX_TITLE = "mix"
#: Containers that can hold several audio streams.
MULTITRACK = frozenset({".mp4", ".ogg", ".webm"})


def side_format(suffix: str) -> str:
    """The side file format for a file ``suffix``: one that keeps the encoder's sample time base
    and ends the tracks where the file's muxer ends the mix (Ogg trims Opus's padding at the
    end, WebM and MP4 as FFmpeg writes them here do not, nor does NUT)."""
    return "ogg" if suffix == ".ogg" else "nut"


_CATCH_UP = MIX_RATE  # silence before a late joiner is encoded a second at a time


@dataclass
class _Track:
    identity: str
    target: tuple[AudioEncoding, str]  # the file's encoding (mono) and side format
    path: Path
    encoder: AudioEncoder
    container: av.container.OutputContainer
    stream: av.stream.Stream

    def encode(self, pcm: np.ndarray | None, cut: Cut | None = None) -> None:
        for p in self.encoder.encode(pcm):
            if cut is None:
                p.stream = self.stream
                self.container.mux(p)
            elif (kept := cut(EncodedPacket.of("audio", p))) is not None:
                self.container.mux(kept.to_av(self.stream))


class SpeakerTracks:
    """Encodes each identity's span of every mixer read on a thread of its own, for the audio
    encodings and containers of the ``files`` (path, audio encoding) that carry speaker tracks;
    :meth:`merge` puts them into a file. ``cut`` (set once the pipeline runs) cuts paused spans
    out of the tracks as the pipeline cuts them out of the files (:mod:`pyegress.pauses`)."""

    cut: Cut | None = None

    def __init__(self, files: list[tuple[Path, AudioEncoding]], folder: Path) -> None:
        self.targets = list(dict.fromkeys((replace(e, channels=1), side_format(p.suffix)) for p, e in files))
        self.folder = folder
        self.tracks: dict[str, list[_Track]] = {}
        self.position = 0  # timeline samples every track holds
        self.error = ""
        self._queue: queue.Queue[tuple[int, int, dict[str, np.ndarray]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="pyegress-speakers", daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self._thread.start()

    def add(self, start: int, count: int, voices: Mapping[str, np.ndarray]) -> None:
        """Timeline samples ``[start, start+count)`` of each identity heard (event loop)."""
        if not self._closed:
            self._queue.put((start, count, dict(voices)))

    def close(self) -> None:
        """Encode what is queued, flush and close every side file (idempotent, any thread)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._thread.join()

    def remove_files(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- the thread ------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if not self.error:
                    self._feed(*item)
        except Exception as e:  # a side file that cannot be written: the mix goes on alone
            log.exception("speaker tracks failed")
            self.error = str(e)
        finally:
            for track in (t for ts in self.tracks.values() for t in ts):
                with contextlib.suppress(Exception):
                    track.encode(None, self.cut)
                with contextlib.suppress(Exception):
                    track.container.close()
                track.encoder.close()

    def _feed(self, start: int, count: int, voices: dict[str, np.ndarray]) -> None:
        if start > self.position:  # never expected (ticks are contiguous): keep every track aligned
            self._silence(self.tracks, start - self.position)
        elif start < self.position:
            return
        for identity in voices:
            if identity not in self.tracks:
                added = self._open(identity)
                self._silence({identity: added}, self.position)
                self.tracks[identity] = added
        quiet = np.zeros((count, MIX_CHANNELS), np.int16)
        for identity, tracks in self.tracks.items():
            pcm = voices.get(identity, quiet)
            for t in tracks:
                t.encode(pcm, self.cut)
        self.position = start + count

    def _silence(self, tracks: Mapping[str, list[_Track]], samples: int) -> None:
        quiet = np.zeros((_CATCH_UP, MIX_CHANNELS), np.int16)
        for ts in tracks.values():
            for t in ts:
                for at in range(0, samples, _CATCH_UP):
                    t.encode(quiet[: min(_CATCH_UP, samples - at)], self.cut)

    def _open(self, identity: str) -> list[_Track]:
        self.folder.mkdir(parents=True, exist_ok=True)
        opened = []
        for k, (enc, fmt) in enumerate(self.targets):
            path = self.folder / f"{len(self.tracks)}-{k}.{fmt}"
            encoder = AudioEncoder(enc, in_rate=MIX_RATE)
            container = av.open(str(path), "w", format=fmt)
            stream = container.add_stream_from_template(encoder.stream)
            container.start_encoding()
            opened.append(_Track(identity, (enc, fmt), path, encoder, container, stream))
        return opened

    # --- the merge ---------------------------------------------------------------------------

    def merge(self, path: Path, encoding: AudioEncoding) -> None:
        """Put the speaker tracks of ``encoding`` into the finished file ``path`` (stream copy;
        the file is replaced only once the merged one is complete)."""
        self.close()
        if self.error:
            raise RuntimeError(f"speaker tracks not recorded: {self.error}")
        target = (replace(encoding, channels=1), side_format(path.suffix))
        sides = [t for ts in self.tracks.values() for t in ts if t.target == target]
        if not sides:
            return
        fmt = CONTAINER_FORMATS[path.suffix]
        tmp = path.with_name(f".{path.name}.merging")
        inputs = [av.open(str(path))] + [av.open(str(t.path)) for t in sides]
        try:
            with av.open(str(tmp), "w", format=fmt, options=container_options(fmt)) as out:
                targets: dict[tuple[int, int], av.stream.Stream] = {}
                for st in inputs[0].streams:
                    if st.type in ("video", "audio"):
                        targets[(0, st.index)] = made = out.add_stream_from_template(st)
                        if st.type == "audio":
                            _title(made, MIX_TITLE)
                for i, (inp, t) in enumerate(zip(inputs[1:], sides, strict=True), 1):
                    targets[(i, 0)] = made = out.add_stream_from_template(inp.streams.audio[0])
                    _title(made, t.identity)
                out.start_encoding()
                feeds = (
                    _packets(inp, i, [s for s in inp.streams if (i, s.index) in targets])
                    for i, inp in enumerate(inputs)
                )
                ordered = heapq.merge(*feeds, key=_when)
                for _, i, packet in ordered:
                    packet.stream = targets[(i, packet.stream.index)]
                    out.mux(packet)
            os.replace(tmp, path)
        finally:
            for inp in inputs:
                inp.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _title(stream: av.stream.Stream, title: str) -> None:
    """The stream's name as MP4 (handler name), Matroska and Ogg (title) players show it."""
    stream.metadata["title"] = title
    stream.metadata["handler_name"] = title


def _packets(
    container: av.container.InputContainer, index: int, streams: list[av.stream.Stream]
) -> Iterator[tuple[Fraction, int, Any]]:
    """The container's packets ordered by decode time (the flush packets left out)."""
    for p in container.demux(streams):
        if p.dts is not None and p.size:
            yield Fraction(p.dts) * (p.time_base or Fraction(1)), index, p


def _when(item: tuple[Fraction, int, Any]) -> tuple[Fraction, int]:
    return item[0], item[1]
