"""DecodedRecorder: participant and track composite egress from the encoded receive path,
decoded by PyAV and encoded again as the request asks (``receive_path="encoded"``).

The same tracks through the rtc SDK come out of its jitter buffers with no RTP time, so a
participant's audio and camera are lined up by what the buffers say they hold, which under
jitter is off by tens of milliseconds (``docs/motion.md``). Here every frame keeps its sender's
RTP time and is placed by the frames that came soonest (:mod:`pyegress.sources.encoded.decode`):
lip sync is the sender's from the first frame on, whatever the network does. It also costs less
CPU than the SDK's receive path (``bench/receive_path.py``).

Joining, routing (participant or track composite), republish and a participant leaving are
:class:`PassthroughMuxRecorder`'s; recording (pipeline, encoders, outputs, pause) the base
:class:`Recorder`'s. A lost connection is ridden out as the mux recorder's is (the room
joined again), the recording going on with a held picture and silence meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from livekit.protocol import models as pm

from ..errors import SourceError
from ..quality import AudioQuality, VideoQuality, audio_quality, video_quality
from ..sources.encoded import EncodedSubscriber, RemoteTrack
from ..sources.encoded.decode import DECODERS, OpusDecoder, VideoDecoder, decoder_for
from ..sources.encoded.subscriber import participant_fields, track_fields
from .base import Media, Recorder
from .passthrough_mux import PassthroughMuxRecorder

log = logging.getLogger("pyegress.recorder")


class DecodedRecorder(PassthroughMuxRecorder):
    """Records a participant's (or two tracks') camera and microphone, decoded and encoded
    again; follows mute, unpublish and republish; ends when the participant leaves."""

    _prepare = Recorder._prepare
    _record = Recorder._record
    pause = Recorder.pause
    resume = Recorder.resume
    _pause_clock = Recorder._pause_clock

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._decoders: dict[str, VideoDecoder | OpusDecoder] = {}  # by track sid
        self._names: dict[str, str] = {}  # kind -> "identity/source" of its first track
        self._left_out: set[str] = set()  # routed tracks not recorded (no input of their kind)

    async def _resolve(self) -> Media:
        routed, field_name = await self._find_routed()
        for kind, track in routed.items():
            codec = track.codec
            if (kind == "audio" and codec != "opus") or (kind == "video" and codec not in DECODERS):
                why = f"track {track.sid} has codec {track.info.mime_type!r}, which pyegress cannot decode"
                raise SourceError(f"{field_name}: {why} (H.264, VP8, VP9, AV1 and Opus it can)", code=400)
        values = self._source_values(routed, {})
        return Media(values, self.config.video, self.config.audio)

    def _on_active(self) -> None:
        if self.sidecars is not None and self.subscriber is not None:
            for p in self.subscriber.participants.values():
                self.sidecars.present(participant_fields(p), [track_fields(t) for t in p.tracks])
        self._start_following()

    def _hook(self, sub: EncodedSubscriber) -> None:
        super()._hook(sub)
        sub.on_muted = self._muted
        sub.on_event = self._room_event

    def _room_event(self, name: str, data: dict[str, Any]) -> None:
        """The events sidecar's room events, from the signaling (as an rtc.Room's are)."""
        if self.sidecars is not None:
            self.sidecars.room_event(name, **data)

    def _subscribe(self, track: RemoteTrack) -> None:
        kind = self._route(track)
        if kind is None or track.sid in self._decoders or self.subscriber is None:
            return
        sub, sid = self.subscriber, track.sid
        sink = self.video_input if kind == "video" else self.audio_input
        decoder = decoder_for(track.codec, sink, lambda: sub.want_keyframe(sid)) if sink is not None else None
        if decoder is None:  # not recorded (no input of its kind, or a codec left out): seen, not asked for
            self._left_out.add(sid)
            return
        self._decoders[sid] = decoder
        source = pm.TrackSource.Name(track.info.source).lower()
        self._names.setdefault(kind, f"{track.participant}/{source}")
        sub.subscribe(track, decoder, top_first=False)

    def _taken(self, sid: str) -> bool:
        return sid in self._decoders or sid in self._left_out

    def _unpublished(self, track: RemoteTrack) -> None:
        self._left_out.discard(track.sid)
        if self._decoders.pop(track.sid, None) is not None:
            log.info("egress %s: track %s unpublished: a gap until it is back", self.egress_id, track.sid)

    def _muted(self, track: RemoteTrack, muted: bool) -> None:
        """Tell raw PCM receivers (WebSocket) when the recorded audio is muted or unmuted."""
        if track.sid in self._decoders and track.kind == "audio":
            self._tell_pcm_muted(muted)

    async def _disconnect(self) -> None:
        await super()._disconnect()
        self._forget()

    def _forget(self) -> None:
        self._decoders.clear()
        self._left_out.clear()

    def _subscribed_sids(self) -> list[str]:
        return list(self._decoders)

    def _quality_inputs(self) -> tuple[list[VideoQuality], list[AudioQuality]]:
        vi, ai = self.video_input, self.audio_input
        video = [video_quality(self._names.get("video", "video"), vi)] if vi is not None else []
        audio = [audio_quality(self._names.get("audio", "audio"), ai)] if ai is not None else []
        return video, audio


__all__ = ["DecodedRecorder"]
