"""What a recording's sidecars are made of, collected while it records, written when it ends.

- ``events``: joins, leaves, tracks published / unpublished / muted / unmuted, active speaker
  changes, layout changes, pauses and resumes, retries, and the application's marks
  (:meth:`Sidecars.note`), in ``<media>.events.json``; from an ``rtc.Room`` (:meth:`attach`) or
  from the encoded receive path's signaling (:meth:`present`, :meth:`room_event`);
- ``transcript``: the room's ``lk.transcription`` text streams as LiveKit Agents publish them
  (``lk.segment_id``, ``lk.transcription_final``, ``lk.transcribed_track_id``): one cue per
  segment from when its first stream opened to when its final one ended, the speaker the
  stream's participant, interim text replaced by the final; ``<media>.transcript.vtt`` and
  ``.json``;
- ``chat``: ``lk.chat`` text streams, one cue per message, ``<media>.chat.vtt``.

Transcription and chat opened while the egress is paused are not recorded (nothing of the room
is); events are, at the media time of the cut. A retry that continues the same file or playlist
continues its sidecars too (``earlier``: the attempt before, on the same media clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import rtc

from ..errors import InvalidRequestError
from ..pauses import PauseClock
from ..storage.upload import Store
from .vtt import Cue, render_vtt

log = logging.getLogger("pyegress.sidecars")

SIDECAR_KINDS = ("events", "transcript", "chat")
TRANSCRIPTION_TOPIC = "lk.transcription"
CHAT_TOPIC = "lk.chat"
ATTR_SEGMENT = "lk.segment_id"
ATTR_FINAL = "lk.transcription_final"
ATTR_TRACK = "lk.transcribed_track_id"
#: How long a chat message stays on screen (or until the recording ends).
CHAT_CUE = 4.0
#: How much later the media of an instant lands on the timeline than the room's signalling and
#: text streams of that instant arrive: media waits in the senders' and the receiver's buffers
#: (jitter buffer, 40 ms audio chunks), data does not. Room events and text are placed this much
#: later (measured: transcript cues 22-78 ms, mean 46 ms, before the beeps they describe).
DATA_LEAD = 0.045


def _arrived() -> float:
    """Where something of the room that arrives now belongs on the media clock (monotonic)."""
    return time.monotonic() + DATA_LEAD


def check_kinds(kinds: Collection[str], name: str = "sidecars") -> frozenset[str]:
    """``kinds`` as a set of known sidecar kinds, or ``InvalidRequestError`` naming ``name``."""
    if isinstance(kinds, str):
        kinds = [kinds]
    unknown = sorted(set(kinds) - set(SIDECAR_KINDS))
    if unknown:
        raise InvalidRequestError(name, f"unknown sidecar {unknown[0]!r} (one of {', '.join(SIDECAR_KINDS)})")
    return frozenset(kinds)


@dataclass
class Segment:
    """One transcription segment (monotonic times until written)."""

    id: str
    speaker: str
    track_id: str
    start: float
    end: float
    text: str = ""
    final: bool = False


@dataclass
class Sidecars:
    """Collects the sidecars ``kinds`` of one recording on ``clock`` (the pipeline's pauses);
    ``earlier``: the sidecars of the attempt before a retry that continues its media, written
    first."""

    kinds: frozenset[str]
    clock: PauseClock
    earlier: Sidecars | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    segments: dict[str, Segment] = field(default_factory=dict)
    chat: list[tuple[float, str, str]] = field(default_factory=list)  # opened, who, text
    _room: rtc.Room | None = None
    _handlers: list[tuple[str, Callable[..., None]]] = field(default_factory=list)
    _topics: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _end: float | None = None
    _stop: float | None = None  # when the recording was asked to stop (monotonic)

    # --- collecting ----------------------------------------------------------------------

    def _times(self, when: float | None = None) -> dict[str, Any]:
        when = time.monotonic() if when is None else when
        wall = self.clock.wall0 + (when - self.clock.t0)
        return {"media_time": round(self.clock.media_time(when), 3), "wall_time": int(wall * 1e9)}

    def note(self, event: str, /, *, at: float | None = None, **data: Any) -> None:
        """Add an event at monotonic ``at`` (default: now) (kept only with the ``events`` sidecar)."""
        if "events" in self.kinds:
            self.events.append({"type": event, **self._times(at), **data})

    def room_event(self, event: str, /, **data: Any) -> None:
        """An event of the room that arrives now (placed where its media lands); left out when
        it arrives after the recording was asked to stop (:meth:`stop_at`): what happens in
        the room after the stop is not part of the recording (one that ends it, a participant
        leaving, still is)."""
        if self._stop is None or time.monotonic() <= self._stop:
            self.note(event, at=_arrived(), **data)

    def stop_at(self, when: float) -> None:
        """The recording was asked to stop at monotonic ``when``: its media ends there."""
        self._stop = when if self._stop is None else min(self._stop, when)

    def present(self, who: dict[str, Any], tracks: Collection[dict[str, Any]]) -> None:
        """A participant, and its tracks, in the room as the recording starts."""
        self.note("participant_present", **who)
        for track in tracks:
            self.note("track_present", **who, **track)

    def attach(self, room: rtc.Room) -> None:
        """Follow ``room``: its state now, then its events and text streams."""
        self._room = room
        for p in room.remote_participants.values():
            self.present(_who(p), [_track(pub) for pub in p.track_publications.values()])
        note = self.room_event
        listeners: dict[str, Callable[..., None]] = {
            "participant_connected": lambda p: note("participant_joined", **_who(p)),
            "participant_disconnected": lambda p: note("participant_left", **_who(p)),
            "track_published": lambda pub, p: note("track_published", **_who(p), **_track(pub)),
            "track_unpublished": lambda pub, p: note("track_unpublished", **_who(p), **_track(pub)),
            "track_muted": lambda p, pub: note("track_muted", **_who(p), **_track(pub)),
            "track_unmuted": lambda p, pub: note("track_unmuted", **_who(p), **_track(pub)),
            "active_speakers_changed": lambda ps: note(
                "active_speakers_changed", speakers=[p.identity for p in ps]
            ),
        }
        if "events" in self.kinds:
            for name, fn in listeners.items():
                room.on(name, fn)  # type: ignore[arg-type]
                self._handlers.append((name, fn))
        topics = {"transcript": (TRANSCRIPTION_TOPIC, self._transcription), "chat": (CHAT_TOPIC, self._chat)}
        for kind, (topic, handler) in topics.items():
            if kind not in self.kinds:
                continue
            try:
                room.register_text_stream_handler(topic, self._spawn(handler))
                self._topics.append(topic)
            except ValueError:  # the application's own room already reads them
                log.warning("sidecar %s: the room already has a handler for %r; not recorded", kind, topic)

    def _spawn(self, read: Callable[[rtc.TextStreamReader, str, float], Any]) -> Callable[..., None]:
        def handler(reader: rtc.TextStreamReader, identity: str) -> None:
            if self._end is not None or self.clock.paused:
                return
            task = asyncio.get_running_loop().create_task(read(reader, identity, _arrived()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handler

    async def _transcription(self, reader: rtc.TextStreamReader, identity: str, opened: float) -> None:
        info = reader.info
        attrs = dict(info.attributes or {})
        sid = attrs.get(ATTR_SEGMENT) or info.stream_id
        seg = self.segments.get(sid)
        if seg is None:
            seg = Segment(sid, identity, attrs.get(ATTR_TRACK, ""), opened, opened)
            self.segments[sid] = seg
        text = ""
        with contextlib.suppress(Exception):  # a stream cut off keeps what came
            async for chunk in reader:
                text += chunk
                if not seg.final:
                    seg.text, seg.end = text, _arrived()
        final = (info.attributes or {}).get(ATTR_FINAL, attrs.get(ATTR_FINAL)) == "true"  # eos may add it
        if not seg.final:
            seg.text, seg.end, seg.final = text or seg.text, _arrived(), final

    async def _chat(self, reader: rtc.TextStreamReader, identity: str, opened: float) -> None:
        with contextlib.suppress(Exception):
            text = await reader.read_all()
            self.chat.append((opened, identity, text))

    async def close(self) -> None:
        """Stop following the room (the recording ended); streams still open are read as far
        as they came."""
        self._end = time.monotonic()
        if self._room is not None:
            for name, fn in self._handlers:
                with contextlib.suppress(Exception):
                    self._room.off(name, fn)  # type: ignore[arg-type]
            for topic in self._topics:
                self._room.unregister_text_stream_handler(topic)
        self._room, self._handlers, self._topics = None, [], []
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- writing -------------------------------------------------------------------------

    def documents(self, header: dict[str, Any]) -> dict[str, str]:
        """Each sidecar's file suffix and text."""
        docs: dict[str, str] = {}
        events, items, cues = self._entries()
        if "events" in self.kinds:
            body = {**header, "pauses": self.clock.to_list(), "events": events}
            docs["events.json"] = json.dumps(body, indent=2)
        if "transcript" in self.kinds:
            docs["transcript.json"] = json.dumps({**header, "segments": items}, indent=2)
            docs["transcript.vtt"] = render_vtt(
                Cue(float(i["start"]), float(i["end"]), str(i["text"]), str(i["speaker"])) for i in items
            )
        if "chat" in self.kinds:
            docs["chat.vtt"] = render_vtt(cues)
        return docs

    def _entries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Cue]]:
        """The events, transcript segments and chat cues on the media clock, the earlier
        attempts' first."""
        events, items, cues = self.earlier._entries() if self.earlier is not None else ([], [], [])
        events = [*events, *self.events]
        end = self.clock.media_time(self._end or time.monotonic())
        if "transcript" in self.kinds:
            segs = sorted(self.segments.values(), key=lambda s: s.start)
            items += [
                {
                    "id": s.id,
                    "speaker": s.speaker,
                    "track_id": s.track_id,
                    "start": round(self.clock.media_time(s.start), 3),
                    "end": round(self.clock.media_time(s.end), 3),
                    "wall_start": self._times(s.start)["wall_time"],
                    "wall_end": self._times(s.end)["wall_time"],
                    "text": s.text,
                    "final": s.final,
                }
                for s in segs
                if s.text.strip()
            ]
        if "chat" in self.kinds:
            for opened, who, text in self.chat:
                start = self.clock.media_time(opened)
                cues.append(Cue(start, min(start + CHAT_CUE, max(end, start)), text, who))
        return events, items, cues

    async def publish(self, media: Path, store: Store | None, header: dict[str, Any]) -> list[dict[str, str]]:
        """Write each sidecar beside ``media`` (``<media>.<suffix>``), upload it to ``store``;
        their manifest entries."""
        entries = []
        for suffix, text in self.documents(header).items():
            path = media.with_name(f"{media.name}.{suffix}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            except OSError as e:
                log.warning("cannot write sidecar %s: %s", path, e)
                continue
            entry = {"kind": suffix.split(".")[0], "format": suffix.split(".")[-1], "filename": str(path)}
            entry["location"] = str(path)
            if store is not None:
                up = await store.upload(path)
                entry["location"] = up.location if up.ok else str(path)
                if not up.ok:
                    entry["error"] = up.error or "upload failed"
            entries.append(entry)
        return entries


def _who(p: rtc.Participant) -> dict[str, Any]:
    kind = rtc.ParticipantKind.Name(p.kind).removeprefix("PARTICIPANT_KIND_").lower()
    return {"participant": p.identity, "participant_sid": p.sid, "participant_kind": kind}


def _track(pub: rtc.TrackPublication) -> dict[str, Any]:
    return {
        "track_sid": pub.sid,
        "track_kind": "video" if pub.kind == rtc.TrackKind.KIND_VIDEO else "audio",
        "source": rtc.TrackSource.Name(pub.source).removeprefix("SOURCE_").lower(),
        "muted": pub.muted,
    }
