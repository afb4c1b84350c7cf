"""HLS output: MPEG-TS segments cut on key frames, playlists rewritten as each segment closes.

Segments are written one container at a time (``<prefix>_00000.ts`` ...); timestamps run on
across segments, so the playlist plays as one stream. A retry of the egress continues the same
playlist (:meth:`SegmentOutput.resume`): its first segment carries ``#EXT-X-DISCONTINUITY``
(timestamps start again), numbering goes on. The playlist is an ``EVENT`` playlist
while recording (playable at once) and gets ``#EXT-X-ENDLIST`` at the end; the optional live
playlist keeps only the last few segments (a sliding window).

With a store, each closed segment and then the playlists naming it are uploaded
while recording, in that order, so the bucket always holds a playable stream.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import av
from livekit.protocol import egress as pe

from ..config import SegmentSuffix
from ..config.paths import SegmentPaths, segment_paths
from ..filenames import timestamp_suffix
from ..media.encoder import EncodedPacket
from ..media.encoding import AudioEncoding, VideoEncoding
from ..storage.base import UploadResult
from ..storage.upload import Store
from .base import Output, PacketOutput
from .manifest import manifest_path

__all__ = ["SegmentOutput", "SegmentPaths", "render_playlist", "segment_name", "segment_paths"]

#: Segments listed by the live (sliding window) playlist.
LIVE_WINDOW = 5


def segment_name(prefix: str, suffix: SegmentSuffix, index: int, wall: float) -> str:
    """``<prefix>_00003.ts`` (INDEX) or ``<prefix>_20240131235959123.ts`` (TIMESTAMP, UTC)."""
    if suffix is SegmentSuffix.TIMESTAMP:
        return f"{prefix}_{timestamp_suffix(wall)}.ts"
    return f"{prefix}_{index:05d}.ts"


@dataclass
class Segment:
    """One closed segment."""

    name: str  # relative to the playlist's folder
    path: Path
    start: float  # output time, seconds
    duration: float
    size: int
    wall: float  # unix time of its start
    discontinuity: bool = False  # the first segment of a retry: timestamps start again


def render_playlist(
    segments: list[Segment], *, target: int, ended: bool, live: bool = False, first_index: int = 0
) -> str:
    """An HLS media playlist: ``EVENT`` (or a sliding window when ``live``), ENDLIST once ended."""
    longest = max((s.duration for s in segments), default=0.0)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max(target, math.floor(longest + 0.5))}",
        f"#EXT-X-MEDIA-SEQUENCE:{first_index}",
    ]
    if not live:
        lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
    for s in segments:
        stamp = dt.datetime.fromtimestamp(s.wall, dt.timezone.utc).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        if s.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXT-X-PROGRAM-DATE-TIME:{stamp}", f"#EXTINF:{s.duration:.6f},", s.name]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class SegmentOutput(PacketOutput):
    """HLS: MPEG-TS segments of about ``segment_duration`` seconds, each starting on a key frame."""

    def __init__(
        self,
        name: str,
        paths: SegmentPaths,
        *,
        segment_duration: int,
        suffix: SegmentSuffix = SegmentSuffix.INDEX,
        video: VideoEncoding | None,
        audio: AudioEncoding | None,
        manifest: bool = False,
        live_window: int = LIVE_WINDOW,
        store: Store | None = None,
    ) -> None:
        path = manifest_path(paths.playlist) if manifest else None
        super().__init__(name, video, audio, store=store, manifest_path=path)
        self.paths = paths
        self._uploaded: dict[Path, concurrent.futures.Future[UploadResult]] = {}
        self.segment_duration = segment_duration
        self.suffix = suffix
        self.live_window = live_window
        self.segments: list[Segment] = []
        self._templates: dict[str, av.VideoStream | av.AudioStream] = {}
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._current: Segment | None = None
        self._wall0 = 0.0
        self._ended = False
        self._result: pe.SegmentsInfo | None = None
        self._resume_at = 0  # index of the first segment after a retry (0: not resumed)
        self._cut = False  # a paused span was cut: the next key frame starts a discontinuity

    def resume(self, previous: Output) -> None:
        """Go on with ``previous``'s playlist when it is the same one: its segments stay listed,
        the next one is numbered after them and marked as a discontinuity."""
        if isinstance(previous, SegmentOutput) and previous.paths == self.paths and previous.segments:
            self.segments = list(previous.segments)
            self._uploaded.update(previous._uploaded)
            self._resume_at = len(self.segments)

    @property
    def continued_after(self) -> float | None:
        """Seconds the earlier attempts' segments of the playlist this attempt goes on with
        last (None: a playlist of its own)."""
        return sum(s.duration for s in self.segments[: self._resume_at]) if self._resume_at else None

    # --- pipeline side (encode thread) ---------------------------------------------------

    def open(self, video: av.VideoStream | None, audio: av.AudioStream | None) -> None:
        if video is not None and self.video is not None:
            self._templates["video"] = video
        if audio is not None and self.audio is not None:
            self._templates["audio"] = audio
        if not self._templates:
            raise ValueError("nothing to segment")
        for p in (self.paths.playlist, self.paths.prefix):
            p.parent.mkdir(parents=True, exist_ok=True)
        self._wall0 = time.time()
        self._write_playlists()

    @property
    def _split_kind(self) -> str:
        return "video" if "video" in self._templates else "audio"

    def write(self, packet: EncodedPacket) -> None:
        kind = packet.kind
        if kind not in self._templates or packet.pts is None:
            return
        t = packet.start
        if kind == self._split_kind:
            due = self._current is None or t - self._current.start >= self.segment_duration - 1e-3
            if (due or self._cut) and (kind == "audio" or packet.keyframe):
                self._next_segment(t)
        if self._container is None:
            return  # nothing opened yet: wait for the first key frame
        self._track_end(kind, packet.end)
        self._container.mux(packet.to_av(self._streams[kind]))

    def on_cut(self) -> None:
        """A paused span was cut out: a new segment, marked as a discontinuity, starts at the
        next key frame (the encoder makes one there)."""
        self._cut = True

    def close(self) -> None:
        self._close_segment(max(self.duration, self._current.start if self._current else 0.0))
        self._ended = True
        self._write_playlists()

    # --- segments ------------------------------------------------------------------------

    def _next_segment(self, t: float) -> None:
        self._close_segment(t)
        index = len(self.segments)
        wall = self._wall0 + t
        path = self.paths.prefix.with_name(segment_name(self.paths.prefix.name, self.suffix, index, wall))
        name = os.path.relpath(path, self.paths.playlist.parent).replace(os.sep, "/")
        container = av.open(str(path), "w", format="mpegts")
        self._streams = {k: container.add_stream_from_template(s) for k, s in self._templates.items()}
        container.start_encoding()
        self._container = container
        cut, self._cut = self._cut and index > 0, False
        self._current = Segment(name, path, t, 0.0, 0, wall, 0 < self._resume_at == index or cut)

    def _close_segment(self, end: float) -> None:
        container, seg = self._container, self._current
        if container is None or seg is None:
            return
        self._container = None
        container.close()
        seg.duration = max(0.0, end - seg.start)
        seg.size = seg.path.stat().st_size
        self.segments.append(seg)
        self._current = None
        self._upload(seg.path)  # before the playlist that names it
        self._write_playlists()
        self._changed()

    def _write_playlists(self) -> None:
        done = list(self.segments)
        _write_atomic(
            self.paths.playlist, render_playlist(done, target=self.segment_duration, ended=self._ended)
        )
        self._upload(self.paths.playlist, snapshot=True)
        if self.paths.live_playlist is not None:
            first = max(0, len(done) - self.live_window)
            text = render_playlist(
                done[first:], target=self.segment_duration, ended=self._ended, live=True, first_index=first
            )
            _write_atomic(self.paths.live_playlist, text)
            self._upload(self.paths.live_playlist, snapshot=True)

    def _upload(self, path: Path, *, snapshot: bool = False) -> None:
        """Queue ``path`` for the store (never waits for it); playlists go as a snapshot."""
        if self.store is not None:
            self._uploaded[path] = self.store.put(path, snapshot=snapshot)

    def _location(self, path: Path) -> str:
        """The object URL of ``path`` unless its (latest) upload failed: then the local path."""
        return str(path) if self.store is None else self.store.where(path, self._uploaded.get(path))

    # --- results (event loop) ------------------------------------------------------------

    @property
    def size(self) -> int:
        return sum(s.size for s in list(self.segments))

    def attach(self, info: pe.EgressInfo, started_at: int) -> None:
        live = self.paths.live_playlist
        playlist = str(self.paths.playlist)
        if self._resume_at:  # the playlist goes on after a retry: so does its result
            for res in info.segment_results:
                if res.playlist_name == playlist:
                    self._result = res
                    return
        self._result = info.segment_results.add(
            playlist_name=playlist,
            playlist_location=self._location(self.paths.playlist),
            live_playlist_name=str(live or ""),
            live_playlist_location=self._location(live) if live is not None else "",
            started_at=started_at,
        )

    def refresh(self, ended_at: int | None = None) -> None:
        if self._result is None:
            return
        done = list(self.segments)
        self._result.segment_count = len(done)
        self._result.duration = int(sum(s.duration for s in done) * 1e9)
        self._result.size = sum(s.size for s in done)
        if ended_at is not None:
            self._result.ended_at = ended_at
            self._result.playlist_location = self._location(self.paths.playlist)
            if self.paths.live_playlist is not None:
                self._result.live_playlist_location = self._location(self.paths.live_playlist)

    def manifest_entries(self) -> dict[str, object]:
        """Every segment with its times, beside the egress info."""
        return {
            "segments": [
                {
                    "filename": s.name,
                    "location": self._location(s.path),
                    "start": round(s.start, 6),
                    "duration": round(s.duration, 6),
                    "size": s.size,
                    "timestamp": int(s.wall * 1e9),
                }
                for s in self.segments
            ]
        }
