"""Pause and resume of a web egress (Chromium's picture and sound) and of a track composite (one
camera and one microphone), each cut from its file: the decoded file leaves the paused span out
(its duration is what was encoded minus the pause), markers show on both sides of the cut with
their one-second rhythm intact once the paused time is added back, and sound stays in sync with
the picture after it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer
from pyegress.testing.checks import beep_onsets, flash_onsets
from pyegress.testing.signals import MARKER_DURATION

from .helpers import SMALL, check_file_result, manifest, publisher, status, wait_active
from .test_web import site  # noqa: F401 - the test pages, served on loopback

pytestmark = pytest.mark.integration

#: Half a second over a whole one: a span left in (or cut twice) puts the later markers half a
#: second off the rhythm, far from the frame or two a capture may move one.
PAUSED = 1.5


async def _paused_recording(
    svc: pyegress.EgressService, started: pe.EgressInfo
) -> tuple[pe.EgressInfo, float]:
    """Record 2.3 s, pause for ``PAUSED``, record 2.3 s more; the final info and the seconds the
    video encoder made (every tick, the paused ones too)."""
    active = await wait_active(svc, started.egress_id)
    assert status(active) == "EGRESS_ACTIVE", active.error
    recorder = svc.recorder(started.egress_id)
    await asyncio.sleep(2.3)
    await svc.pause_egress(started.egress_id)
    await asyncio.sleep(PAUSED)
    await svc.resume_egress(started.egress_id)
    await asyncio.sleep(2.3)
    info = await svc.stop_egress(pe.StopEgressRequest(egress_id=started.egress_id))
    return info, recorder.quality().outputs[0].video_frames / 30


def _check_cut(info: pe.EgressInfo, encoded: float) -> None:
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    pause: dict[str, Any]
    (pause,) = manifest(str(path))["pauses"]
    paused, cut = pause["duration"], pause["media_start"]
    assert pause["fill"] == "cut" and pause["media_end"] == cut, pause
    assert abs(paused - PAUSED) < 0.3 and 1.8 < cut < 3.5, pause
    assert abs(media.duration - (encoded - paused)) < 0.1, (media.duration, encoded, paused)

    flashes, beeps = flash_onsets(path), beep_onsets(path)
    before = [f for f in flashes if f < cut - MARKER_DURATION]
    after = [f for f in flashes if f > cut + MARKER_DURATION]  # not one the resume cut in two
    assert before and len(after) >= 2, (flashes, cut)
    assert [b for b in beeps if b < cut] and len([b for b in beeps if b > cut]) >= 2, (beeps, cut)
    since = [f + paused - before[-1] for f in after]  # the paused time added back
    rhythm = [abs(s - round(s)) for s in since]
    sync = [min(beeps, key=lambda b, f=f: abs(b - f)) - f for f in after]  # audio - video
    print(f"after the cut: off the rhythm {_ms(rhythm)}, A/V {_ms(sync)}")
    assert max(rhythm) < 0.15, (before, after, paused)
    assert max(map(abs, sync)) <= 0.100 and abs(float(np.median(sync))) <= 0.060, sync


def _ms(values: list[float]) -> list[str]:
    return [f"{v * 1000:+.0f} ms" for v in values]


async def test_a_web_egress_cuts_the_pause(service: pyegress.EgressService, site: str) -> None:  # noqa: F811
    req = pe.WebEgressRequest(
        url=f"{site}/markers.html",
        await_start_signal=True,
        advanced=SMALL,
        file_outputs=[pe.EncodedFileOutput(filepath="web.mp4")],
    )
    info, encoded = await _paused_recording(service, await service.start_web_egress(req))
    _check_cut(info, encoded)


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
        info, encoded = await _paused_recording(service, await service.start_track_composite_egress(req))
    _check_cut(info, encoded)
