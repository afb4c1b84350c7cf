"""RoomCompositeRecorder: the whole room in one picture and one mix, composited natively."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit import rtc
from livekit.protocol import egress as pe

from ..config import FileType
from ..errors import EgressError, InvalidRequestError
from ..media.compositor import Compositor
from ..media.inputs import MIX_CHANNELS, MIX_RATE, AudioSource, VideoSource
from ..media.layout import Layout, parse_layout
from ..media.mixer import Mixer, Mixing, SpeakerTracker
from ..outputs.file import FileOutput
from ..outputs.speakers import MULTITRACK, SpeakerTracks
from ..pauses import PauseClock
from ..selection import Selection
from ..sources.members import Participant, Publication, Track
from .base import Options
from .room import RoomRecorder

log = logging.getLogger("pyegress.room_composite")

_VIDEO_SOURCES = {rtc.TrackSource.SOURCE_CAMERA: False, rtc.TrackSource.SOURCE_SCREENSHARE: True}

#: How often the simulcast layers are matched to the tiles (seconds).
LAYER_INTERVAL = 1.0
#: A layer may be this much smaller than its tile before a larger one is asked for.
LAYER_SLACK = 0.9
_LAYERS = ((4, rtc.VideoQuality.VIDEO_QUALITY_LOW), (2, rtc.VideoQuality.VIDEO_QUALITY_MEDIUM))


def simulcast_layer(width: int, height: int, tile: tuple[int, int] | None) -> int:
    """The simulcast layer of a ``width`` x ``height`` video that fills ``tile`` without upscaling
    much: LiveKit's layers are the full size, half and a quarter; a video not on screen gets the
    smallest (it is still decoded, to be ready when it shows)."""
    if tile is None:
        return rtc.VideoQuality.VIDEO_QUALITY_LOW
    if width <= 0 or height <= 0:
        return rtc.VideoQuality.VIDEO_QUALITY_HIGH
    tw, th = tile
    for div, quality in _LAYERS:
        if width / div >= LAYER_SLACK * tw and height / div >= LAYER_SLACK * th:
            return quality
    return rtc.VideoQuality.VIDEO_QUALITY_HIGH


class RoomCompositeRecorder(RoomRecorder):
    """Records every (non-hidden) participant: grid, speaker or single-speaker, mixed audio.

    Starts at once, even in an empty room (the background is recorded); ends when the room
    closes or has stayed empty for ``empty_timeout`` seconds, or on ``stop``. ``selection``
    says who is recorded (:mod:`pyegress.selection`, changed live with :meth:`set_selection`);
    ``speaker_tracks`` adds one audio track per participant to each MP4 / Ogg / WebM file
    (:mod:`pyegress.outputs.speakers`).
    """

    def __init__(self, request: pe.RoomCompositeEgressRequest | None = None, *, empty_timeout: float = 30.0,
                 selection: Selection | None = None, speaker_tracks: bool = False,
                 **kw: Any) -> None:  # fmt: skip
        super().__init__(request, **kw)
        self.layout: Layout = parse_layout(self.config.layout)
        self.empty_timeout = empty_timeout
        self.selection = selection or Selection()
        self.excluded: set[str] = set()  # identities whose picture and sound are kept out, now
        self.speaker_tracks = speaker_tracks
        self.tracks: SpeakerTracks | None = None
        if speaker_tracks:
            for f in self.config.files:
                if f.file_type is FileType.MP3 or f.filepath.endswith(".mp3"):
                    why = "speaker_tracks: an MP3 file holds one audio track; use MP4 or OGG"
                    raise InvalidRequestError(f"{f.field}.file_type", why)
        self.compositor: Compositor | None = None
        self.mixer: Mixer | None = None
        self.speakers = SpeakerTracker()
        self._watch: asyncio.Task[None] | None = None
        self._layer_task: asyncio.Task[None] | None = None
        self.layers: dict[str, int] = {}  # the simulcast layer asked for, by track sid

    @classmethod
    def _options(cls, options: Options) -> dict[str, Any]:
        return {
            **super()._options(options),
            "empty_timeout": options.empty_timeout,
            "selection": options.selection,
            "speaker_tracks": options.speaker_tracks,
            # resolved by recorders.recorder_for: "encoded" only where it can run
            "receive_path": "encoded" if options.receive_path == "encoded" else "sdk",
        }

    # --- public -------------------------------------------------------------------------

    def set_layout(self, layout: str) -> pe.EgressInfo:
        """Switch layout live (takes effect on the next frame); raises on an unknown name."""
        parsed = parse_layout(layout)
        self.layout = parsed
        if self.compositor is not None:
            self.compositor.layout = parsed
        with self.owner.edit() as info:
            layout_holder(info).layout = layout
        return self.info

    def set_selection(self, selection: Selection) -> pe.EgressInfo:
        """Change who is recorded, from the next frame on (and the next span of the mix)."""
        self.selection = selection
        log.info("egress %s: selection %s", self.egress_id, selection.to_dict())
        if self.compositor is not None:
            self.compositor.hide_without_video = selection.hide_without_video
        for p in list(self.source.participants().values()) if not self.source.closed else []:
            self._judge(p)
        return self.info

    def _judge(self, participant: Participant) -> None:
        """Keep ``participant`` in or out of the picture and the mix by the selection as it is."""
        if self.selection.records(participant):
            self.excluded.discard(participant.identity)
        else:
            self.excluded.add(participant.identity)

    # --- hooks --------------------------------------------------------------------------

    def _route(self, participant: Participant, pub: Publication) -> str | None:
        if pub.kind == rtc.TrackKind.KIND_AUDIO:
            return "audio" if self.mixer is not None or self.config.audio is not None else None
        if pub.source in _VIDEO_SOURCES:
            return "video"
        return None

    def _make_inputs(
        self, t0: float, video: bool, audio: bool
    ) -> tuple[VideoSource | None, list[AudioSource]]:
        enc = self.config.video
        if video and enc is not None:
            self.compositor = Compositor(enc.width, enc.height, self.layout, ticks=self.ticks)
            self.compositor.excluded = self.excluded  # the same set: a judgement applies to both
            self.compositor.hide_without_video = self.selection.hide_without_video
        if audio:
            self.mixer = Mixer(MIX_RATE, MIX_CHANNELS, t0, Mixing(self.config.audio_mixing))
            self.mixer.excluded = self.excluded
            self._start_speaker_tracks(self.mixer)
        for p in sorted(self.source.participants().values(), key=_join_time):
            self._joined(p)
        self.source.on("participant_connected", self._joined)
        self.source.on("track_muted", lambda p, pub: self._muted(p, pub, True))
        self.source.on("track_unmuted", lambda p, pub: self._muted(p, pub, False))
        self.source.on("active_speakers_changed", self._room_speakers)
        self.source.on("participant_metadata_changed", self._own_metadata)
        self.source.on("participant_attributes_changed", lambda _changed, p: self._judge(p))
        for task in (self._watch, self._layer_task):  # a retry's: the first attempt's go
            if task is not None:
                task.cancel()
        self._layer_task = None
        self._watch = asyncio.get_running_loop().create_task(self._end_when_empty(self.empty_timeout))
        if self.compositor is not None and self.source.owns_room:  # never re-tune an app's own room
            self._layer_task = asyncio.get_running_loop().create_task(self._match_layers())
        audio_sources: list[AudioSource] = (
            [_SpeakerProbe(self.mixer, self.speakers, self.compositor, self.tracks, self._pauses)]
            if self.mixer
            else []
        )
        return self.compositor, audio_sources

    def _pauses(self) -> PauseClock | None:
        """The pipeline's pauses (the speaker tracks are cut as the files are)."""
        return self.pipeline.pauses if self.pipeline is not None else None

    def _start_speaker_tracks(self, mixer: Mixer) -> None:
        """One track per speaker in each file that can hold several (a retry starts them anew)."""
        if self.tracks is not None:
            self.tracks.remove_files()
            self.tracks = None
        files = [o for o in self.outputs if isinstance(o, FileOutput) and o.audio is not None]
        files = [o for o in files if o.path.suffix in MULTITRACK]
        if not self.speaker_tracks or not files:
            return
        folder = self.config.output_dir / f".{self.egress_id}.speakers"
        encodings = [o.audio for o in files if o.audio is not None]
        self.tracks = SpeakerTracks([(o.path, enc) for o, enc in zip(files, encodings, strict=True)], folder)
        mixer.keep_voices = True
        for o, enc in zip(files, encodings, strict=True):
            o.before_upload = functools.partial(self.tracks.merge, encoding=enc)

    def _attach(self, kind: str, track: Track, pub: Publication, participant: Participant) -> None:
        self._judge(participant)  # before any of its media reaches an input
        if kind == "video" and self.compositor is not None:
            self._joined(participant)
            vi = self.compositor.video(participant.identity, screen=_VIDEO_SOURCES[pub.source])
            self.compositor.set_muted(
                participant.identity, screen=_VIDEO_SOURCES[pub.source], muted=pub.muted
            )
            self.source.pump_video(track, vi)
        elif kind == "audio" and self.mixer is not None:
            agent = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            self.source.pump_audio(track, self.mixer.voice(participant.identity, agent=agent))

    def _on_unpublished(self, participant: Participant, pub: Publication) -> None:
        if self.compositor is not None and pub.source in _VIDEO_SOURCES:
            self.compositor.drop_video(participant.identity, screen=_VIDEO_SOURCES[pub.source])

    def _on_participant_left(self, participant: Participant) -> None:
        if self.compositor is not None:
            self.compositor.leave(participant.identity)
        if self.mixer is not None:
            self.mixer.remove(participant.identity)

    # --- room events --------------------------------------------------------------------

    def _joined(self, participant: Participant) -> None:
        self._judge(participant)
        if self.compositor is not None:
            self.compositor.join(participant.identity, participant.name or participant.identity)

    def _muted(self, participant: Participant, pub: Publication, muted: bool) -> None:
        if self.compositor is not None and pub.source in _VIDEO_SOURCES:
            self.compositor.set_muted(participant.identity, screen=_VIDEO_SOURCES[pub.source], muted=muted)

    def _own_metadata(self, participant: Participant, old: str, new: str) -> None:
        """``UpdateLayout`` through a LiveKit server: it sets the recorder participant's
        metadata to ``{"layout": ...}`` (the identity is the egress id)."""
        if participant.identity != self.source.identity or not self.source.owns_room:
            return
        try:
            layout = json.loads(new).get("layout") if new else None
            if isinstance(layout, str) and layout != layout_holder(self.info).layout:
                self.set_layout(layout)
        except (ValueError, AttributeError, EgressError) as e:
            log.warning("egress %s: layout from metadata %r not applied: %s", self.egress_id, new, e)

    def _room_speakers(self, speakers: list[Participant]) -> None:
        if self.mixer is None and self.compositor is not None and speakers:
            self.compositor.speaker = speakers[0].identity  # video only: the server's choice

    async def _match_layers(self) -> None:
        """Ask for the simulcast layer that fits each video's tile, as a browser's adaptive stream
        does: a 720p camera in a quarter of a 720p grid arrives at 360p (a quarter of the decode)."""
        while self.compositor is not None:
            await asyncio.sleep(LAYER_INTERVAL)
            sizes = self.compositor.tile_sizes()
            for participant, pub in self.source.publications():
                if pub.source not in _VIDEO_SOURCES or not pub.simulcasted or not pub.subscribed:
                    continue
                tile = sizes.get((participant.identity, _VIDEO_SOURCES[pub.source]))
                layer = simulcast_layer(pub.width, pub.height, tile)
                if self.layers.get(pub.sid) != layer:
                    try:
                        self.source.set_layer(pub, layer)
                        self.layers[pub.sid] = layer
                    except Exception as e:  # a publication that went away meanwhile
                        log.debug("simulcast layer for %s not set: %s", pub.sid, e)

    async def _run(self) -> None:
        try:
            await super()._run()
        finally:
            for task in (self._watch, self._layer_task):
                if task is not None:
                    task.cancel()
            if self.tracks is not None:  # merged into the files by now (or never will be)
                await asyncio.to_thread(self.tracks.remove_files)


def layout_holder(info: pe.EgressInfo) -> pe.RoomCompositeEgressRequest | pe.TemplateSource:
    """The request message of ``info`` that holds the layout (a unified request's ``template``)."""
    return info.egress.template if info.WhichOneof("request") == "egress" else info.room_composite


def _join_time(p: Participant) -> float:
    joined = p.joined_at
    return joined.timestamp() if joined is not None else float("inf")


class _SpeakerProbe:
    """The mixer as the pipeline's audio source, updating the active speaker as it reads and
    handing each voice's span to the speaker tracks."""

    def __init__(
        self,
        mixer: Mixer,
        tracker: SpeakerTracker,
        compositor: Compositor | None,
        tracks: SpeakerTracks | None,
        pauses: Callable[[], PauseClock | None] = lambda: None,
    ) -> None:
        self.mixer, self.tracker, self.compositor, self.tracks = mixer, tracker, compositor, tracks
        self.pauses = pauses

    def read(self, start: int, count: int) -> np.ndarray:
        pcm = self.mixer.read(start, count)
        if self.tracks is not None:
            clock = self.pauses()
            if clock is not None and self.tracks.cut is None:
                self.tracks.cut = clock.cut
            paused = clock is not None and clock.fill_at(round(start * clock.fps / MIX_RATE)) is not None
            self.tracks.add(start, count, {} if paused else self.mixer.last)  # paused: silence
        speaker = self.tracker.update(self.mixer.levels, start / self.mixer.sample_rate)
        if self.compositor is not None:
            self.compositor.speaker = speaker
        return pcm
