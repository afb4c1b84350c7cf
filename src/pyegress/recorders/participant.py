"""ParticipantRecorder: one participant's camera (or screen share) and microphone."""

from __future__ import annotations

from livekit import rtc

from ..ending import EndReason
from ..sources.members import Participant, Publication
from .base import Media, require_found
from .room import RoomRecorder

_VIDEO = {False: rtc.TrackSource.SOURCE_CAMERA, True: rtc.TrackSource.SOURCE_SCREENSHARE}
_AUDIO = {False: rtc.TrackSource.SOURCE_MICROPHONE, True: rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO}


class ParticipantRecorder(RoomRecorder):
    """Records a participant across mute, unpublish and republish; ends when they leave."""

    async def _resolve(self) -> Media:
        identity = self.config.identity
        found = await self.source.wait_for(
            lambda: self.source.participants().get(identity), self.wait_timeout
        )
        require_found(
            found,
            f"identity: participant {identity!r} not in room {self.config.room_name!r} "
            f"after {self.wait_timeout:g} s",
        )
        values = self._template_values({"publisher_identity": identity})
        return Media(values, self.config.video, self.config.audio)

    def _route(self, participant: Participant, pub: Publication) -> str | None:
        if participant.identity != self.config.identity:
            return None
        share = self.config.screen_share
        if pub.source == _VIDEO[share]:
            return "video"
        if pub.source == _AUDIO[share] or (
            not share
            and pub.source == rtc.TrackSource.SOURCE_UNKNOWN
            and pub.kind == rtc.TrackKind.KIND_AUDIO
        ):
            return "audio"
        return None

    def _on_participant_left(self, participant: Participant) -> None:
        if participant.identity == self.config.identity:
            self.end(EndReason.SOURCE_CLOSED, f"participant {participant.identity} left")
