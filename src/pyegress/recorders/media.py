"""MediaRecorder: the unified request's media source. One picture (a track, or a participant's
camera or screen share) and the audio of any number of tracks mixed into one stream, each on
the channel its route names."""

from __future__ import annotations

from typing import Any

from livekit import rtc
from livekit.protocol import egress as pe

from ..config import AudioRoute, Channel
from ..ending import EndReason
from ..errors import SourceError
from ..media.inputs import MIX_CHANNELS, MIX_RATE, AudioSource, Picture, VideoSource
from ..media.mixer import Mixer
from ..media.timeline import VideoInput
from ..selection import Selection
from ..sources.members import Participant, Publication, Track
from .base import Media, Options, require_found
from .room import RoomRecorder

_CAMERA, _SCREEN = rtc.TrackSource.SOURCE_CAMERA, rtc.TrackSource.SOURCE_SCREENSHARE


class PreferredPicture:
    """A participant's camera, or their screen share while one is published and has a frame."""

    def __init__(self) -> None:
        self.camera: VideoInput[Picture] = VideoInput()
        self.screen: VideoInput[Picture] = VideoInput()
        self._skipped_gone = 0  # frames_skipped of ended screen shares

    def input(self, screen: bool) -> VideoInput[Picture]:
        return self.screen if screen else self.camera

    def drop_screen(self) -> None:
        """The screen share ended: back to the camera (a new share starts from its first frame)."""
        self._skipped_gone += self.screen.frames_skipped
        self.screen = VideoInput()

    @property
    def frames_skipped(self) -> int:
        """Received frames never shown (late, or above the frame rate), screen and camera."""
        return self._skipped_gone + self.screen.frames_skipped + self.camera.frames_skipped

    def at(self, when: float) -> Picture | None:
        camera = self.camera.at(when)  # read while the share covers it: those frames are not dropped
        shared = self.screen.at(when)
        return shared if shared is not None else camera


def route_of(
    routes: list[AudioRoute], capture_all: bool, participant: Participant, sid: str
) -> Channel | None:
    """The channel of an audio track: its first matching route's, else both channels when
    ``capture_all``; None: not recorded."""
    kind = rtc.ParticipantKind.Name(participant.kind).removeprefix("PARTICIPANT_KIND_")
    for r in routes:
        if (
            (r.track_id and r.track_id == sid)
            or (r.identity and r.identity == participant.identity)
            or (r.participant_kind and r.participant_kind == kind)
        ):
            return r.channel
    return Channel.BOTH if capture_all else None


class MediaRecorder(RoomRecorder):
    """Records the media source of a ``StartEgressRequest``.

    The picture is ``video_track_id`` (followed across a republish by its owner) or
    ``participant_video.identity``'s camera; with ``prefer_screen_share``, their screen share
    while it is published. Audio tracks matched by ``audio.routes`` (first match wins) go to
    their channel, every other one to both with ``capture_all``. Waits (bounded) for the
    participants and tracks the request names; ends when the participant whose video is
    recorded leaves, when the room closes, or on ``stop``. ``selection`` keeps participants out
    of the mix (:mod:`pyegress.selection`; the picture is the one the request names).
    """

    _owner: tuple[str, int] | None = None  # (identity, source) of the video track
    picture: PreferredPicture | None = None
    mixer: Mixer | None = None

    def __init__(self, request: Any = None, *, selection: Selection | None = None, **kw: Any) -> None:
        super().__init__(request, **kw)
        self.selection = selection or Selection()
        self.excluded: set[str] = set()  # audio track sids kept out of the mix, now

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        return {**super()._options(options), "selection": options.selection}

    def set_selection(self, selection: Selection) -> pe.EgressInfo:
        """Change whose audio is mixed, from the next span of the mix on."""
        self.selection = selection
        for p in list(self.source.participants().values()) if not self.source.closed else []:
            self._judge(p)
        return self.info

    def _judge(self, participant: Participant) -> None:
        sids = [
            s for s, pub in participant.track_publications.items() if pub.kind == rtc.TrackKind.KIND_AUDIO
        ]
        if self.selection.records(participant):
            self.excluded.difference_update(sids)
        else:
            self.excluded.update(sids)

    async def _resolve(self) -> Media:
        cfg = self.config

        def missing() -> str | None:
            present = set(self.source.participants())
            sids = {pub.sid: (p, pub) for p, pub in self.source.publications()}
            if cfg.identity and cfg.identity not in present:
                return f"media.participant_video.identity: participant {cfg.identity!r}"
            if cfg.video_track_id and cfg.video_track_id not in sids:
                return f"media.video_track_id: track {cfg.video_track_id!r}"
            for r in cfg.audio_routes:
                if r.track_id and r.track_id not in sids:
                    return f"{r.field}.track_id: track {r.track_id!r}"
                if r.identity and r.identity not in present:
                    return f"{r.field}.participant_identity: participant {r.identity!r}"
            return None

        found = await self.source.wait_for(lambda: True if missing() is None else None, self.wait_timeout)
        require_found(found, f"{missing()} not in room {cfg.room_name!r} after {self.wait_timeout:g} s")
        kinds = {pub.sid: pub.kind for _, pub in self.source.publications()}
        if kinds.get(cfg.video_track_id, rtc.TrackKind.KIND_VIDEO) != rtc.TrackKind.KIND_VIDEO:
            raise SourceError(f"media.video_track_id: {cfg.video_track_id} is not a video track", code=400)
        for r in cfg.audio_routes:
            if kinds.get(r.track_id, rtc.TrackKind.KIND_AUDIO) != rtc.TrackKind.KIND_AUDIO:
                raise SourceError(f"{r.field}.track_id: {r.track_id} is not an audio track", code=400)
        extra = {}
        if cfg.identity:
            extra["publisher_identity"] = cfg.identity
        for p, pub in self.source.publications():
            if pub.sid == cfg.video_track_id:
                self._owner = (p.identity, pub.source)
                extra.update(publisher_identity=p.identity, track_id=pub.sid, track_type="video")
        return Media(self._template_values(extra), cfg.video, cfg.audio)

    def _route(self, participant: Participant, pub: Publication) -> str | None:
        cfg = self.config
        if pub.kind == rtc.TrackKind.KIND_AUDIO:
            if cfg.audio is None:
                return None
            found = route_of(cfg.audio_routes, cfg.capture_all_audio, participant, pub.sid)
            return None if found is None else "audio"
        if cfg.video is None:
            return None
        if cfg.video_track_id:
            wanted = pub.sid == cfg.video_track_id or (participant.identity, pub.source) == self._owner
            return "video" if wanted else None
        if participant.identity != cfg.identity:
            return None
        return "video" if pub.source == _CAMERA or (cfg.screen_share and pub.source == _SCREEN) else None

    def _make_inputs(
        self, t0: float, video: bool, audio: bool
    ) -> tuple[VideoSource | None, list[AudioSource]]:
        self.picture = PreferredPicture() if video else None
        self.mixer = Mixer(MIX_RATE, MIX_CHANNELS, t0) if audio else None
        if self.mixer is not None:
            self.mixer.excluded = self.excluded  # voices are keyed by track sid here
            self.source.on("participant_attributes_changed", lambda _changed, p: self._judge(p))
        return self.picture, [self.mixer] if self.mixer is not None else []

    def _attach(self, kind: str, track: Track, pub: Publication, participant: Participant) -> None:
        cfg = self.config
        if kind == "video" and self.picture is not None:
            self.source.pump_video(track, self.picture.input(screen=pub.source == _SCREEN))
        elif kind == "audio" and self.mixer is not None:
            channel = route_of(cfg.audio_routes, cfg.capture_all_audio, participant, pub.sid)
            self._judge(participant)  # before any of its sound reaches the mix
            if channel is not None:
                self.source.pump_audio(track, self.mixer.voice(pub.sid, side=channel.value))

    def _on_unpublished(self, participant: Participant, pub: Publication) -> None:
        if self.mixer is not None:
            self.mixer.remove(pub.sid)
        if self.picture is not None and pub.source == _SCREEN:
            self.picture.drop_screen()

    def _on_participant_left(self, participant: Participant) -> None:
        if self.mixer is not None:
            for sid in participant.track_publications:
                self.mixer.remove(sid)
        owner = self.config.identity or (self._owner[0] if self._owner else "")
        if self.config.video is not None and participant.identity == owner:
            self.end(EndReason.SOURCE_CLOSED, f"participant {participant.identity} left")
