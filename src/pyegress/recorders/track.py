"""TrackRecorder: one track to a file in the container its codec calls for."""

from __future__ import annotations

from livekit import rtc

from ..config import audio_for
from ..ending import EndReason
from ..errors import SourceError
from ..media.encoding import AudioEncoding, VideoEncoding
from ..sources.members import Participant, Publication
from .base import Media, require_found
from .room import RoomRecorder

# codec (from the publication's mime type) -> (container extension, our encoder)
_CONTAINERS = {
    "h264": (".mp4", "h264"),
    "vp8": (".webm", "vp8"),
    "opus": (".ogg", "opus"),
    "red": (".ogg", "opus"),  # Opus with redundancy (RED), as browsers and the SDK publish it
}


class TrackRecorder(RoomRecorder):
    """Ends by itself when its track is unpublished or its participant leaves.

    The SDK hands over decoded frames, so the track is re-encoded in the same codec at a
    bitrate matched to its size; the container follows the codec (H.264 MP4, VP8 WebM,
    Opus OGG).
    """

    _owner = ""
    _source = -1  # the track's source, to follow it when a server restart gives it a new sid

    async def _resolve(self) -> Media:
        sid = self.config.track_id
        hit = await self.source.wait_for(
            lambda: next(((p, pub) for p, pub in self.source.publications() if self._route(p, pub)), None),
            self.wait_timeout,
        )
        require_found(
            hit,
            f"track_id: track {sid!r} not in room {self.config.room_name!r} after {self.wait_timeout:g} s",
        )
        assert hit is not None
        participant, pub = hit
        self._owner, self._source = participant.identity, pub.source
        codec = pub.mime_type.split("/")[-1].lower()
        if codec not in _CONTAINERS:
            raise SourceError(
                f"track_id: track {sid} has codec {pub.mime_type!r}, which is not supported", code=400
            )
        ext, enc = _CONTAINERS[codec]
        video: VideoEncoding | None = None
        audio: AudioEncoding | None = None
        if pub.kind == rtc.TrackKind.KIND_VIDEO:
            w, h = await self._video_size(pub)
            kbps = max(300, min(8000, int(w * h * 30 * 0.08 / 1000)))
            video = VideoEncoding(
                width=w, height=h, fps=30, codec=enc, bitrate_kbps=kbps, keyframe_interval=2.0
            )
        else:
            audio = audio_for(AudioEncoding(sample_rate=48000, bitrate_kbps=96), ext)
        values = self._template_values(
            {
                "publisher_identity": participant.identity,
                "track_id": sid,
                "track_type": "video" if video else "audio",
                "track_source": rtc.TrackSource.Name(pub.source).removeprefix("SOURCE_").lower(),
                "extension": ext,
            }
        )
        return Media(values, video, audio)

    async def _video_size(self, pub: Publication) -> tuple[int, int]:
        w, h = pub.width, pub.height
        w, h = (w or 1280) - (w or 1280) % 2, (h or 720) - (h or 720) % 2
        return max(16, w), max(16, h)

    def _route(self, participant: Participant, pub: Publication) -> str | None:
        same = (participant.identity, pub.source) == (self._owner, self._source)
        if pub.sid != self.config.track_id and not same:
            return None
        return "video" if pub.kind == rtc.TrackKind.KIND_VIDEO else "audio"

    def _on_unpublished(self, participant: Participant, pub: Publication) -> None:
        self.end(EndReason.SOURCE_CLOSED, f"track {pub.sid} unpublished")

    def _on_participant_left(self, participant: Participant) -> None:
        if participant.identity == self._owner:
            self.end(EndReason.SOURCE_CLOSED, f"participant {participant.identity} left")
