"""Time-aligned sidecars against a real livekit-server: an agent-like publisher speaks (its
marker beeps) and publishes the transcription of each beep as LiveKit Agents do (``lk.transcription``
text streams: an interim stream when the beep starts, the final one when it ends); the
recording's WebVTT cues start where the decoded file's beeps start, also after a cut pause.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer
from pyegress.testing.checks import beep_onsets
from pyegress.testing.signals import MARKER_DURATION

from .helpers import check_file_result, publisher, status, wait_active

pytestmark = pytest.mark.integration

SERVICE_OPTIONS = {"sidecars": ("events", "transcript", "chat")}
SMALL = pe.EncodingOptions(width=320, height=180, framerate=30, video_bitrate=500)
FINAL = "lk.transcription_final"


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.monotonic()))


async def transcribe_beep(room: rtc.Room, n: int, at: float, track: str, delta: bool) -> None:
    """Beep ``n`` (due at monotonic ``at``) transcribed as an agent does: the agent's own speech
    as one delta stream closed final, or a user's as interim and final streams."""
    attrs = {"lk.segment_id": f"SG_{n}", "lk.transcribed_track_id": track, FINAL: "false"}
    await _sleep_until(at)
    lp = room.local_participant
    if delta:
        writer = await lp.stream_text(topic="lk.transcription", attributes=attrs)
        await writer.write(f"beep {n}")
        await _sleep_until(at + MARKER_DURATION)
        await writer.write(" done")
        await writer.aclose(attributes={FINAL: "true"})
    else:
        await lp.send_text("bee", topic="lk.transcription", attributes=attrs)
        await _sleep_until(at + MARKER_DURATION)
        await lp.send_text(f"beep {n} done", topic="lk.transcription", attributes={**attrs, FINAL: "true"})


def vtt_cues(text: str) -> list[tuple[float, float, str]]:
    def sec(stamp: str) -> float:
        h, m, s = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    assert text.startswith("WEBVTT\n")
    found = re.findall(r"^(\S+) --> (\S+)\n(.+)$", text, re.M)
    return [(sec(a), sec(b), body) for a, b, body in found]


async def test_transcript_cues_match_the_beeps_they_describe(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name, identity="agent", marker_interval=1.0) as pub:
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity="agent",
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="talk.mp4")],
        )
        started = await service.start_participant_egress(req)
        assert status(await wait_active(service, started.egress_id)) == "EGRESS_ACTIVE"
        assert pub.t0 is not None and pub.audio_track_sid is not None
        first = int(time.monotonic() - pub.t0) + 1  # the next beep
        room, track = pub.room, pub.audio_track_sid
        spoken = [first, first + 1, first + 3, first + 4]
        talk = [
            asyncio.create_task(transcribe_beep(room, n, pub.t0 + n, track, delta=i % 2 == 0))
            for i, n in enumerate([*spoken[:2], first + 2, *spoken[2:]])
        ]
        await _sleep_until(pub.t0 + first + 1.5)
        await service.mark(started.egress_id, "chapter", {"title": "two"})
        await room.local_participant.send_text("hello there", topic="lk.chat")
        await _sleep_until(pub.t0 + first + 1.7)
        await service.pause_egress(started.egress_id)  # beep first+2 is cut, and its transcript
        await _sleep_until(pub.t0 + first + 2.6)
        await service.resume_egress(started.egress_id)
        await asyncio.gather(*talk)
        await _sleep_until(pub.t0 + first + 4.6)
        info = await service.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    check_file_result(info)
    path = Path(info.file_results[0].filename)
    listed = {
        s["kind"] + "." + s["format"]: s for s in json.loads(Path(f"{path}.json").read_text())["sidecars"]
    }
    assert set(listed) == {"events.json", "transcript.json", "transcript.vtt", "chat.vtt"}
    assert all(Path(s["location"]).is_file() for s in listed.values())

    # every transcribed beep that was recorded is a cue where the decoded beep starts
    onsets = beep_onsets(path)
    cues = vtt_cues(Path(f"{path}.transcript.vtt").read_text())
    assert [c[2] for c in cues] == [f"<v agent>beep {n} done" for n in spoken], cues
    errors = [c[0] - onsets[int(np.argmin(np.abs(np.asarray(onsets) - c[0])))] for c in cues]
    print(f"cue start - beep onset: {[f'{e * 1000:+.0f} ms' for e in errors]}")
    assert max(map(abs, errors)) <= 0.100, (cues, onsets)
    assert all(abs((end - start) - MARKER_DURATION) <= 0.100 for start, end, _ in cues), cues
    segments = json.loads(Path(f"{path}.transcript.json").read_text())["segments"]
    assert all(s["final"] and s["track_id"] == track and s["speaker"] == "agent" for s in segments)

    # events: the agent present, the mark, the pause; chat as WebVTT
    events = json.loads(Path(f"{path}.events.json").read_text())
    kinds = [e["type"] for e in events["events"]]
    assert "participant_present" in kinds and kinds.index("mark") < kinds.index("paused") < kinds.index(
        "resumed"
    )
    (mark,) = [e for e in events["events"] if e["type"] == "mark"]
    assert mark["label"] == "chapter" and mark["data"] == {"title": "two"}
    (pause,) = events["pauses"]
    assert abs(mark["media_time"] - (pause["media_start"] - 0.2)) < 0.1, (mark, pause)
    (chat,) = vtt_cues(Path(f"{path}.chat.vtt").read_text())
    assert chat[2] == "<v agent>hello there" and abs(chat[0] - mark["media_time"]) < 0.1, chat
