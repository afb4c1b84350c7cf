"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import api
from livekit.protocol import egress as pe

import pyegress
from pyegress.testing import LiveKitServer, MediaInfo, SyntheticPublisher, probe
from pyegress.testing.checks import beep_onsets, flash_onsets
from pyegress.testing.publisher import TrackKind
from pyegress.testing.rtmp_server import RtmpServer, RtmpServerError
from pyegress.testing.signals import MARKER_DURATION

#: A small picture: markers and colours read well, cheap to encode.
SMALL = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1200)
#: A room composite's canvas.
CANVAS = pe.EncodingOptions(width=1280, height=720, framerate=30, video_bitrate=2000)
#: A publisher's ``marker_interval`` for no white flashes or beeps (colour and tone tests).
NO_MARKERS = 3600.0


def status(info: pe.EgressInfo) -> str:
    return pe.EgressStatus.Name(info.status)


async def wait_active(svc: object, egress_id: str, timeout: float = 15.0) -> pe.EgressInfo:
    """Poll list_egress until the egress is ACTIVE (or ended)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        res = await svc.list_egress(pe.ListEgressRequest(egress_id=egress_id))  # type: ignore[attr-defined]
        info: pe.EgressInfo = res.items[0]
        if info.status != pe.EGRESS_STARTING or loop.time() > deadline:
            return info
        await asyncio.sleep(0.1)


def check_file_result(info: pe.EgressInfo, index: int = 0) -> MediaInfo:
    """The file result agrees with the file on disk and its decoded duration; returns the probe."""
    assert status(info) == "EGRESS_COMPLETE", info.error
    res = info.file_results[index]
    path = Path(res.filename)
    assert path.is_file(), path
    assert res.size == path.stat().st_size
    assert res.location == str(path)
    assert res.started_at > 0 and res.ended_at >= res.started_at
    media = probe(path)
    assert abs(media.duration - res.duration / 1e9) < 0.25, (media.duration, res.duration)
    return media


def manifest(path: str) -> dict[str, Any]:
    """The manifest written beside the output at ``path``."""
    data: dict[str, Any] = json.loads(Path(path + ".json").read_text())
    return data


def publisher(
    server: LiveKitServer, room: str, identity: str = "alice", *, kind: str = "", **kw: object
) -> SyntheticPublisher:
    """A synthetic participant of ``room`` on the test server (not started yet); ``kind``: an
    agent, SIP... participant (its token says so)."""
    if kind:
        token = (
            api.AccessToken(server.api_key, server.api_secret)
            .with_identity(identity)
            .with_kind(kind)  # type: ignore[arg-type]
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )
        return SyntheticPublisher(server.url, token, **kw)  # type: ignore[arg-type]
    return SyntheticPublisher(
        server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        room=room,
        identity=identity,
        **kw,  # type: ignore[arg-type]
    )


def near(color: tuple[int, int, int], expected: tuple[int, int, int], tol: int = 40) -> bool:
    """Each channel of ``color`` within ``tol`` of ``expected``'s."""
    return all(abs(a - b) <= tol for a, b in zip(color, expected, strict=True))


def box(cx: int, cy: int, r: int = 20) -> tuple[int, int, int, int]:
    """The square of half-side ``r`` around (``cx``, ``cy``), as ``mean_color`` takes it."""
    return (cx - r, cy - r, cx + r, cy + r)


def start_rtmp() -> RtmpServer:
    """A real RTMP(S) server (nginx-rtmp) on loopback; the test fails saying how to install it."""
    server = RtmpServer()
    try:
        return server.start()
    except RtmpServerError as e:
        pytest.fail(f"cannot start the RTMP server (scripts/install-rtmp-server.sh): {e}", pytrace=False)


def egress_request(
    kind: str, room: str, pub: SyntheticPublisher, encoding: pe.EncodingOptions, name: str = ""
) -> Any:
    """A request recording ``pub`` (alice) to ``{name or kind}.mp4``: ``kind`` "participant",
    "track_composite" (its camera and microphone) or "track" (its camera, as sent)."""
    path = f"{name or kind}.mp4"
    out = [pe.EncodedFileOutput(filepath=path)]
    if kind == "track_composite":
        return pe.TrackCompositeEgressRequest(room_name=room, video_track_id=pub.video_track_sid,
                                              audio_track_id=pub.audio_track_sid, advanced=encoding,
                                              file_outputs=out)  # fmt: skip
    if kind == "participant":
        return pe.ParticipantEgressRequest(
            room_name=room, identity="alice", advanced=encoding, file_outputs=out
        )
    return pe.TrackEgressRequest(
        room_name=room, track_id=pub.video_track_sid, file=pe.DirectFileOutput(filepath=path)
    )


async def mute_then_republish(
    pub: SyntheticPublisher, republished: tuple[TrackKind, ...], after: float
) -> None:
    """The scripted life of a recorded participant: 2 s on air, camera and microphone muted for
    1.5 s, 1 s back, ``republished`` tracks unpublished for 1.5 s and published anew, ``after``
    s more."""
    await asyncio.sleep(2)
    await pub.mute("video")
    await pub.mute("audio")
    await asyncio.sleep(1.5)
    await pub.unmute("video")
    await pub.unmute("audio")
    await asyncio.sleep(1)
    for kind in republished:
        await pub.unpublish(kind)
    await asyncio.sleep(1.5)
    for kind in republished:
        await pub.republish(kind)
    await asyncio.sleep(after)


async def record_for(svc: pyegress.EgressService, info: pe.EgressInfo, seconds: float) -> pe.EgressInfo:
    """Wait until ``info``'s egress is ACTIVE, record ``seconds``, stop it, return the final info."""
    active = await wait_active(svc, info.egress_id)
    assert status(active) == "EGRESS_ACTIVE", active.error
    await asyncio.sleep(seconds)
    return await svc.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))


def assert_audio_was_held(server: LiveKitServer, seconds: float) -> None:
    """Stop ``server``'s relay (``bursty_server``) and check it held the publisher's audio for
    ``seconds`` at least (50 packets a second), so the network the test ran on was bursty."""
    assert server.relay is not None
    stats = server.relay.stop()
    assert stats is not None and stats.held >= 50 * seconds, stats


def cli_env(server: LiveKitServer) -> dict[str, str]:
    """The environment a ``pyegress`` CLI subprocess needs to reach the test server."""
    import os

    return {
        **os.environ,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
    }


def service_account(token_uri: str, key_id: str = "") -> tuple[str, list[str]]:
    """A Google service-account key JSON with a real RSA key made now (none is kept in the tree),
    and the parts of it that must never show: the key id and every line of the key body."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key_id = key_id or "gcpkeyid" + secrets.token_hex(8)
    creds = {
        "type": "service_account",
        "project_id": "pyegress-test",
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": "recorder@pyegress-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    return json.dumps(creds), [key_id, *body]


def end_reason(info: pe.EgressInfo) -> str:
    """``details`` without the quality summary that follows the end reason."""
    return info.details.split("; quality: ", 1)[0]


def check_cut(info: pe.EgressInfo, encoded: float, paused: float) -> None:
    """A recording of the self-describing signal with one pause of about ``paused`` seconds cut
    from its file (``encoded``: the seconds the video encoder made, the paused ticks too): the
    file lasts ``encoded`` minus the pause, markers show on both sides of the cut with their
    one-second rhythm intact once the paused time is added back, and sound is in sync after it.
    Pause for a whole number of seconds and a half: a span left in or cut twice then puts the
    markers 0.5 s off the rhythm, a capture moves one by a frame or two (web: 33-67 ms)."""
    media = check_file_result(info)
    path = Path(info.file_results[0].filename)
    (pause,) = manifest(str(path))["pauses"]
    listed, cut = pause["duration"], pause["media_start"]
    assert pause["fill"] == "cut" and pause["media_end"] == cut, pause
    assert abs(listed - paused) < 0.3 and cut > 1.5, pause
    assert abs(media.duration - (encoded - listed)) < 0.1, (media.duration, encoded, listed)
    flashes, beeps = flash_onsets(path), beep_onsets(path)
    before = [f for f in flashes if f < cut - MARKER_DURATION]
    after = [f for f in flashes if f > cut + MARKER_DURATION]  # not one the resume cut in two
    assert before and len(after) >= 2, (flashes, cut)
    assert [b for b in beeps if b < cut] and len([b for b in beeps if b > cut]) >= 2, (beeps, cut)
    since = [f + listed - before[-1] for f in after]  # the paused time added back
    rhythm = [abs(s - round(s)) for s in since]
    sync = [min(beeps, key=lambda b, f=f: abs(b - f)) - f for f in after]  # audio - video
    print(f"after the cut: off the rhythm {_ms(rhythm)}, A/V {_ms(sync)}")
    assert max(rhythm) < 0.25, (before, after, listed)
    assert max(map(abs, sync)) <= 0.100 and abs(float(np.median(sync))) <= 0.060, sync


def _ms(values: list[float]) -> list[str]:
    return [f"{v * 1000:+.0f} ms" for v in values]
