"""A fragmented MP4 continued by a retry: the next attempt's fragments appended to the same file.

A retry opens new encoders and a new muxer. Its ``moov`` must be the one the file already has
(same codecs, sizes, extradata: the same encodings give the same), then its fragments go on
where the file ends: ``ftyp``/``moov`` dropped, each ``moof``'s sequence number continued and
every track's ``baseMediaDecodeTime`` (``tfdt``) moved to where the file's media ends, so the
timeline runs on without a hole and the file plays (and decodes) as one recording. The random
access index (``mfra``, written by FFmpeg at the end) would point into the wrong places: it is
cut from the file and left out of what follows; players walk the fragments instead.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class CannotContinue(ValueError):
    """The file cannot take the next attempt's fragments (and why)."""


def _boxes(buf: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, payload start, box end) of each box in ``buf[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        head = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise CannotContinue(f"a damaged {kind!r} box")
        yield kind, pos, pos + head, pos + size
        pos += size


def _child(buf: bytes | bytearray, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(payload start, end) of the first ``kind`` box in ``buf[start:end]``."""
    return next(((p, e) for k, _, p, e in _boxes(buf, start, end) if k == kind), None)


def _versioned(buf: bytes | bytearray, at: int) -> tuple[int, int]:
    """(version, flags) of the full box whose payload starts at ``at``."""
    word = struct.unpack_from(">I", buf, at)[0]
    return word >> 24, word & 0xFFFFFF


def _u32_after_times(buf: bytes | bytearray, at: int) -> int:
    """The 32-bit field after a full box's creation and modification times (tkhd, mdhd)."""
    return int(struct.unpack_from(">I", buf, at + (20 if _versioned(buf, at)[0] else 12))[0])


@dataclass
class Tracks:
    """What a ``moov`` says of its tracks: the time scale and default sample duration of each."""

    timescale: dict[int, int] = field(default_factory=dict)
    default_duration: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, moov: bytes) -> Tracks:
        tracks = cls()
        for kind, _, p, e in _boxes(moov, 8, len(moov)):
            if kind == b"trak":
                tkhd, mdia = _child(moov, p, e, b"tkhd"), _child(moov, p, e, b"mdia")
                mdhd = _child(moov, *mdia, b"mdhd") if mdia else None
                if tkhd is None or mdhd is None:
                    raise CannotContinue("a track without tkhd/mdhd")
                # both after the creation and modification times (64-bit in version 1)
                tid = _u32_after_times(moov, tkhd[0])
                tracks.timescale[tid] = _u32_after_times(moov, mdhd[0])
            elif kind == b"mvex":
                for k2, _, p2, _ in _boxes(moov, p, e):
                    if k2 == b"trex":
                        tid, _, duration = struct.unpack_from(">III", moov, p2 + 4)
                        tracks.default_duration[tid] = duration
        return tracks


def _traf_span(moof: bytes | bytearray, p: int, e: int, tracks: Tracks) -> tuple[int, int, int]:
    """(track id, tfdt payload start, end of its samples in the track's time scale) of a traf."""
    tfhd, tfdt = _child(moof, p, e, b"tfhd"), _child(moof, p, e, b"tfdt")
    if tfhd is None or tfdt is None:
        raise CannotContinue("a fragment without tfhd/tfdt")
    _, flags = _versioned(moof, tfhd[0])
    tid = struct.unpack_from(">I", moof, tfhd[0] + 4)[0]
    at = tfhd[0] + 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
    default = struct.unpack_from(">I", moof, at)[0] if flags & 0x08 else tracks.default_duration.get(tid, 0)
    version, _ = _versioned(moof, tfdt[0])
    base = struct.unpack_from(">Q" if version else ">I", moof, tfdt[0] + 4)[0]
    total = 0
    for kind, _, tp, _ in _boxes(moof, p, e):
        if kind != b"trun":
            continue
        _, tflags = _versioned(moof, tp)
        count = struct.unpack_from(">I", moof, tp + 4)[0]
        at = tp + 8 + (4 if tflags & 0x01 else 0) + (4 if tflags & 0x04 else 0)
        if not tflags & 0x100:
            total += count * default
            continue
        stride = 4 * bin(tflags & 0xF00).count("1")
        total += sum(struct.unpack_from(">I", moof, at + i * stride)[0] for i in range(count))
    return tid, tfdt[0], base + total


@dataclass
class ResumePoint:
    """Where a fragmented MP4 ends: its ``moov``, fragments, each track's end, the byte to cut at."""

    moov: bytes
    tracks: Tracks
    fragments: int
    ends: dict[int, int]  # track id → end of its media, in its time scale
    cut_at: int  # file size without a trailer or an incomplete last fragment

    @property
    def seconds(self) -> float:
        """Where the media ends (the later track)."""
        return max((end / self.tracks.timescale[t] for t, end in self.ends.items()), default=0.0)


def resume_point(path: Path) -> ResumePoint:
    """Read ``path``'s box structure (headers and ``moof`` boxes only, never the media)."""
    moov: bytes | None = None
    tracks = Tracks()
    fragments, ends, cut_at, pos = 0, {}, 0, 0
    pending: tuple[int, dict[int, int]] | None = None  # a moof waiting for its mdat
    with path.open("rb") as f:
        size = f.seek(0, io.SEEK_END)
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            box, kind = struct.unpack_from(">I4s", head)
            if box == 1:
                (box,) = struct.unpack_from(">Q", head, 8)
            if box < 8 or pos + box > size:
                break  # cut off by a crash: what came before stays
            if kind == b"moov":
                f.seek(pos)
                moov = f.read(box)
                tracks = Tracks.of(moov)
            elif kind == b"moof":
                f.seek(pos)
                moof = f.read(box)
                spans = {}
                for k, _, p, e in _boxes(moof, 8, len(moof)):
                    if k == b"traf":
                        tid, _, end = _traf_span(moof, p, e, tracks)
                        spans[tid] = end
                pending = (pos, spans)
            elif kind == b"mdat" and pending is not None:
                fragments += 1
                ends.update(pending[1])
                pending = None
            elif kind == b"mfra":
                break
            pos += box
            if pending is None:
                cut_at = pos
    if moov is None or not fragments:
        raise CannotContinue(f"{path.name} is not a fragmented MP4 with fragments")
    return ResumePoint(moov, tracks, fragments, ends, cut_at)


class FragmentAppender(io.RawIOBase):
    """A writable file for FFmpeg's MP4 muxer that appends its fragments to ``path`` (see the
    module). Bytes go to disk as each box completes (an ``mdat``'s as they come)."""

    def __init__(self, path: Path, point: ResumePoint) -> None:
        super().__init__()
        self._point = point
        seconds = point.seconds
        self._shift = {t: round(seconds * scale) for t, scale in point.tracks.timescale.items()}
        self._buf = bytearray()
        self._through = 0  # bytes of an mdat still to pass straight to the file
        self._moov_checked = False
        self._file = path.open("r+b", buffering=0)
        self._file.truncate(point.cut_at)
        self._file.seek(point.cut_at)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        if self._through:
            n = min(self._through, len(view))
            self._file.write(view[:n])
            self._through -= n
            view = view[n:]
        self._buf += view
        while len(self._buf) >= 8 and not self._through:
            size, kind = struct.unpack_from(">I4s", self._buf)
            head = 8
            if size == 1:
                if len(self._buf) < 16:
                    break
                (size,) = struct.unpack_from(">Q", self._buf, 8)
                head = 16
            if kind == b"mdat":  # header now, payload as it comes
                self._file.write(self._buf[:head])
                rest = self._buf[head:size]
                self._file.write(rest)
                self._through = size - head - len(rest)
                del self._buf[:size]
                continue
            if len(self._buf) < size:
                break
            self._box(kind, self._buf[:size])
            del self._buf[:size]
        return len(data)

    def _box(self, kind: bytes, box: bytearray) -> None:
        if kind == b"moov":
            if bytes(box) != self._point.moov:
                raise OSError("the retry's tracks differ from the file's: it cannot continue it")
            self._moov_checked = True
        elif kind == b"moof":
            if not self._moov_checked:
                raise OSError("a fragment before the track header")
            self._file.write(self._renumbered(box))
        elif kind not in (b"ftyp", b"mfra", b"free", b"sidx"):
            self._file.write(box)

    def _renumbered(self, moof: bytearray) -> bytearray:
        """``moof`` with its sequence number after the file's and its tfdt moved on."""
        for kind, _, p, e in _boxes(moof, 8, len(moof)):
            if kind == b"mfhd":
                seq = struct.unpack_from(">I", moof, p + 4)[0]
                struct.pack_into(">I", moof, p + 4, seq + self._point.fragments)
            elif kind == b"traf":
                tid, tfdt, _ = _traf_span(moof, p, e, self._point.tracks)
                version, _ = _versioned(moof, tfdt)
                fmt = ">Q" if version else ">I"
                base = struct.unpack_from(fmt, moof, tfdt + 4)[0] + self._shift.get(tid, 0)
                if not version and base >= 1 << 32:
                    raise OSError("the continued timeline does not fit a 32-bit tfdt")
                struct.pack_into(fmt, moof, tfdt + 4, base)
        return moof

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
