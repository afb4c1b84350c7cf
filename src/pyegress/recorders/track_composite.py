"""TrackCompositeRecorder: one audio and one video track, synchronised, into one output."""

from __future__ import annotations

from typing import Any

from livekit import rtc

from ..ending import EndReason
from ..sources.members import Participant, Publication
from .base import Media, require_found
from .room import RoomRecorder


class TrackCompositeRecorder(RoomRecorder):
    """Starts with whichever track is there first; follows a republish of the same source."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # track sid -> (identity, source): kept across a retry, whose room has the same
        # participants' tracks under new sids after a server restart
        self._owners: dict[str, tuple[str, int]] = {}

    async def _resolve(self) -> Media:
        cfg = self.config
        wanted = {cfg.audio_track_id, cfg.video_track_id} - {""}

        def probe() -> list[tuple[Participant, Publication]] | None:
            hits = [(p, pub) for p, pub in self.source.publications() if self._route(p, pub)]
            return hits or None

        hits = await self.source.wait_for(probe, self.wait_timeout)
        require_found(
            hits,
            f"video_track_id/audio_track_id: no track {sorted(wanted)} in room "
            f"{cfg.room_name!r} after {self.wait_timeout:g} s",
        )
        assert hits is not None
        for participant, pub in hits:
            self._owners[pub.sid] = (participant.identity, pub.source)
        first_p, first_pub = hits[0]
        values = self._template_values(
            {
                "publisher_identity": first_p.identity,
                "track_id": first_pub.sid,
                "track_type": "video" if cfg.video_track_id else "audio",
                "track_source": rtc.TrackSource.Name(first_pub.source).removeprefix("SOURCE_").lower(),
            }
        )
        return Media(values, cfg.video, cfg.audio)

    def _route(self, participant: Participant, pub: Publication) -> str | None:
        cfg = self.config
        kind = "video" if pub.kind == rtc.TrackKind.KIND_VIDEO else "audio"
        wanted = cfg.video_track_id if kind == "video" else cfg.audio_track_id
        if not wanted:
            return None
        if pub.sid == wanted:
            self._owners[pub.sid] = (participant.identity, pub.source)
            return kind
        # a republish: same participant, same source as the requested track had
        owner = self._owners.get(wanted)
        if owner == (participant.identity, pub.source):
            return kind
        return None

    def _on_participant_left(self, participant: Participant) -> None:
        owners = {identity for identity, _ in self._owners.values()}
        remaining = {identity for identity in owners if identity in self.source.participants()} - {
            participant.identity
        }
        if participant.identity in owners and not remaining:
            self.end(EndReason.SOURCE_CLOSED, f"participant {participant.identity} left")
