"""Pause and resume of a web egress (Chromium's picture and sound) and of a track composite (one
camera and one microphone), each cut from its file: the decoded file leaves the paused span out
(its duration is what was encoded minus the pause), markers show on both sides of the cut with
their one-second rhythm intact once the paused time is added back, and sound stays in sync with
the picture after it.
"""

from __future__ import annotations

import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer

from .helpers import SMALL, check_cut, publisher
from .test_pause import _paused_recording
from .test_web import site  # noqa: F401 - the test pages, served on loopback

pytestmark = pytest.mark.integration

#: Half a second over a whole one: a span left in (or cut twice) puts the later markers half a
#: second off the rhythm, far from the frame or two a capture may move one.
PAUSED = 1.5


async def _recorded(svc: pyegress.EgressService, started: pe.EgressInfo) -> tuple[pe.EgressInfo, float]:
    """2.3 s recorded, ``PAUSED`` paused, 2.3 s more: the final info and the seconds the video
    encoder made (every tick, the paused ones too)."""
    recorder = svc.recorder(started.egress_id)
    info = await _paused_recording(svc, started.egress_id, "cut", 2.3, PAUSED, 2.3)
    return info, recorder.quality().outputs[0].video_frames / 30


async def test_a_web_egress_cuts_the_pause(service: pyegress.EgressService, site: str) -> None:  # noqa: F811
    req = pe.WebEgressRequest(
        url=f"{site}/markers.html",
        await_start_signal=True,
        advanced=SMALL,
        file_outputs=[pe.EncodedFileOutput(filepath="web.mp4")],
    )
    info, encoded = await _recorded(service, await service.start_web_egress(req))
    check_cut(info, encoded, PAUSED)


async def test_a_track_composite_cuts_the_pause(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    async with publisher(livekit_server, room_name) as pub:
        req = pe.TrackCompositeEgressRequest(
            room_name=room_name,
            audio_track_id=pub.audio_track_sid,
            video_track_id=pub.video_track_sid,
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="tracks.mp4")],
        )
        info, encoded = await _recorded(service, await service.start_track_composite_egress(req))
    check_cut(info, encoded, PAUSED)
