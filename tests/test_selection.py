"""Live selection (consent rules) and per-speaker audio tracks of the room composite, measured on
the decoded files: who is seen in the grid, who is heard in the mix and on which track."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
from livekit import api, rtc
from livekit.protocol import egress as pe

import pyegress
from pyegress import Rule, Selection, cli
from pyegress.errors import InvalidRequestError
from pyegress.testing import LiveKitServer, mean_color
from pyegress.testing.checks import AudioData, audio_samples, beep_onsets
from pyegress.worker.config import ConfigError, load_config

from .helpers import CANVAS, NO_MARKERS, box, check_file_result, near, publisher, status, wait_active

RED, BLUE = (220, 40, 40), (40, 60, 220)
CONSENT = "attribute:recording_consent=false"


# --- rules, without a room --------------------------------------------------------------------


def test_rules_parse_and_name_the_bad_field() -> None:
    sel = Selection.of(include=["kind:agent", "identity:bob"], exclude=[CONSENT], hide_without_video=True)
    assert sel.include == (Rule(kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT), Rule(identity="bob"))
    assert sel.exclude == (Rule(attribute=("recording_consent", "false")),)
    assert sel.to_dict() == {
        "include": ["kind:agent", "identity:bob"],
        "exclude": [CONSENT],
        "hide_without_video": True,
    }
    with pytest.raises(InvalidRequestError, match=r"selection\.exclude\[1\].*unknown kind; known: standard"):
        Selection.of(exclude=["kind:sip", "kind:robot"])
    with pytest.raises(InvalidRequestError, match=r"selection\.include\[0\].*attribute:<key>=<value>"):
        Selection.of(include=["attribute:consent"])
    with pytest.raises(InvalidRequestError, match=r"selection\.include\[0\].*unknown rule 'name'"):
        Selection.of(include=["name:bob"])


WORKER = """
api_key: key
api_secret: secret-value-123
ws_url: ws://127.0.0.1:7880
redis:
  address: 127.0.0.1:6379
"""


def test_worker_config_sets_every_room_composites_rules() -> None:
    body = (
        WORKER
        + """
room_composite:
  exclude: ["attribute:recording_consent=false", "kind:sip"]
  hide_without_video: true
  speaker_tracks: true
"""
    )
    config = load_config(body=body)
    assert config.selection == Selection.of(exclude=[CONSENT, "kind:sip"], hide_without_video=True)
    assert config.speaker_tracks
    plain = load_config(body=WORKER)
    assert plain.selection is None and not plain.speaker_tracks
    with pytest.raises(ConfigError, match=r"room_composite\.exclude\[0\].*unknown kind"):
        load_config(body=WORKER + "room_composite:\n  exclude: [kind:robot]\n")
    with pytest.raises(ConfigError, match=r"room_composite\.speakers: unknown key"):
        load_config(body=WORKER + "room_composite:\n  speakers: true\n")


def test_cli_flags_name_the_bad_rule_and_the_request_that_cannot_take_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    composite = tmp_path / "composite.json"
    composite.write_text(json.dumps({"roomName": "r", "fileOutputs": [{"filepath": "x.mp4"}]}))
    assert cli.main(["record", str(composite), "--exclude", "kind:robot", "--url", "ws://127.0.0.1:9"]) == 2
    assert "selection.exclude[0]: 'kind:robot': unknown kind" in capsys.readouterr().err
    participant = tmp_path / "participant.json"
    participant.write_text(
        json.dumps({"roomName": "r", "identity": "a", "fileOutputs": [{"filepath": "x.mp4"}]})
    )
    assert cli.main(["record", str(participant), "--speaker-tracks", "--url", "ws://127.0.0.1:9"]) == 2
    assert "speaker_tracks: a participant request records no room composite" in capsys.readouterr().err


# --- recordings -------------------------------------------------------------------------------


def _colours(path: str, box: tuple[int, int, int, int]) -> list[tuple[float, tuple[int, int, int]]]:
    """(time, mean colour of ``box``) of every decoded frame."""
    with av.open(path) as c:
        return [(float(f.time or 0.0), mean_color(f, box)) for f in c.decode(video=0)]


def _shown(frames: list[tuple[float, tuple[int, int, int]]], t: float) -> tuple[int, int, int]:
    return min(frames, key=lambda f: abs(f[0] - t))[1]


def _level(data: AudioData, hz: float, t0: float, t1: float) -> float:
    """Amplitude of the ``hz`` component of ``data`` between ``t0`` and ``t1`` (seconds)."""
    i0, i1 = (max(0, round((t - data.start) * data.sample_rate)) for t in (t0, t1))
    x = data.samples[i0:i1].astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) * 4 / x.size
    freqs = np.fft.rfftfreq(x.size, 1 / data.sample_rate)
    return float(spec[np.abs(freqs - hz) < 8].max())


def _onset(data: AudioData, hz: float, after: float, window: float = 0.02) -> float:
    """When the ``hz`` component first reaches half its level of the following second, after
    ``after`` (seconds; its 20 ms window centred)."""
    i0 = max(0, round((after - data.start) * data.sample_rate))
    x = data.samples[i0 : i0 + 3 * data.sample_rate].astype(np.float64)
    n = np.arange(x.size)
    z = np.cumsum(x * np.exp(-2j * np.pi * hz / data.sample_rate * n))
    w = round(window * data.sample_rate)
    env = 2 * np.abs(z[w:] - z[:-w]) / w
    steady = float(np.median(env[-data.sample_rate :]))
    k = int(np.argmax(env > steady / 2))
    return data.start + (i0 + k + w / 2) / data.sample_rate


def _rms(data: AudioData, t0: float, t1: float) -> float:
    i0, i1 = (max(0, round((t - data.start) * data.sample_rate)) for t in (t0, t1))
    return float(np.sqrt(np.mean(np.square(data.samples[i0:i1], dtype=np.float64))))


async def _now(svc: pyegress.EgressService, egress_id: str) -> float:
    """Seconds since the egress started (its output's time, within the pipeline's latency)."""
    info = (await svc.list_egress(pe.ListEgressRequest(egress_id=egress_id))).items[0]
    return (time.time_ns() - info.started_at) / 1e9


async def _set_consent(server: LiveKitServer, room: str, identity: str, consent: str) -> None:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        attributes = {"recording_consent": consent}
        await lk.room.update_participant(
            api.UpdateParticipantRequest(room=room, identity=identity, attributes=attributes)
        )


@pytest.mark.integration
async def test_excluded_participant_is_neither_seen_nor_heard_until_included_again(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = publisher(livekit_server, room_name, "a", color=RED, tone_hz=440.0, marker_interval=NO_MARKERS)
    b = publisher(livekit_server, room_name, "b", color=BLUE, tone_hz=660.0, marker_interval=NO_MARKERS)
    await a.start()
    await asyncio.sleep(0.3)  # a joins first: a's tile is the left one
    await b.start()
    req = pe.RoomCompositeEgressRequest(room_name=room_name, layout="grid", advanced=CANVAS)
    req.file_outputs.add(filepath="selection.mp4")
    selection = Selection.of(exclude=["identity:b", CONSENT])
    info = await service.start_room_composite_egress(req, selection=selection)
    assert status(await wait_active(service, info.egress_id)) == "EGRESS_ACTIVE"
    await asyncio.sleep(2.5)
    t_in = await _now(service, info.egress_id)  # b included
    await service.update_selection(info.egress_id, Selection.of(exclude=[CONSENT]))
    await asyncio.sleep(2.0)
    t_out = await _now(service, info.egress_id)  # a withdraws consent
    await _set_consent(livekit_server, room_name, "a", "false")
    await asyncio.sleep(2.0)
    t_back = await _now(service, info.egress_id)  # a consents again
    await _set_consent(livekit_server, room_name, "a", "true")
    await asyncio.sleep(1.5)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in (a, b):
        await p.stop()
    media = check_file_result(final)
    path = final.file_results[0].filename
    boxes = {"l": box(320, 360), "r": box(960, 360), "cl": box(400, 360), "cr": box(880, 360)}
    frames = {k: _colours(path, where) for k, where in boxes.items()}
    audio = audio_samples(path)
    phases = [  # (from, to, who is recorded)
        (0.5, t_in - 0.3, "a"),
        (t_in + 0.4, t_out - 0.3, "ab"),
        (t_out + 0.4, t_back - 0.3, "b"),
        (t_back + 0.4, media.duration - 0.3, "ab"),
    ]
    for lo, hi, who in phases:
        mid = (lo + hi) / 2
        seen = {k: _shown(f, mid) for k, f in frames.items()}
        if who == "ab":  # side by side, in join order
            assert near(seen["l"], RED) and near(seen["r"], BLUE), (lo, hi, who, seen)
        else:  # alone in one big tile: the other's picture is nowhere
            colour = RED if who == "a" else BLUE
            assert near(seen["cl"], colour) and near(seen["cr"], colour), (lo, hi, who, seen)
        heard = {hz: _level(audio, hz, lo, hi) for hz in (440.0, 660.0)}
        for name, hz in (("a", 440.0), ("b", 660.0)):
            if name in who:
                assert heard[hz] > 0.02, (lo, hi, who, heard)
            else:  # at least 40 dB under the voice that is heard
                assert heard[hz] < 0.01 * max(heard.values()), (lo, hi, who, heard)
    # the inclusion applies to picture and sound together, around the moment it was asked
    shown = next(t for t, c in frames["r"] if t > t_in - 1.0 and near(c, BLUE))
    heard_at = _onset(audio, 660.0, t_in - 1.0)
    print(f"inclusion asked at {t_in:.3f} s: shown {shown - t_in:+.3f} s, heard {heard_at - t_in:+.3f} s")
    assert -0.35 <= shown - t_in <= 0.25 and -0.35 <= heard_at - t_in <= 0.25, (t_in, shown, heard_at)
    assert abs(shown - heard_at) <= 0.1, (shown, heard_at)


def _titles(path: str) -> list[str]:
    """Each audio stream's title as players show it (MP4 keeps it as the handler name)."""
    with av.open(path) as c:
        return [s.metadata.get("title") or s.metadata.get("handler_name", "") for s in c.streams.audio]


@pytest.mark.integration
async def test_speaker_tracks_hold_each_voice_aligned_with_the_mix(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = publisher(livekit_server, room_name, "a", color=RED, tone_hz=440.0, marker_interval=NO_MARKERS)
    bot = publisher(
        livekit_server, room_name, "bot", kind="agent", video=False, tone_hz=660.0, marker_interval=NO_MARKERS
    )
    await a.start()
    req = pe.StartEgressRequest(  # the unified request's template: the same room composite
        room_name=room_name,
        template=pe.TemplateSource(layout="grid"),
        advanced=CANVAS,
        outputs=[pe.Output(file=pe.FileOutput(filepath=f"speakers.{ext}")) for ext in ("mp4", "ogg")],
    )
    selection = Selection(hide_without_video=True)  # the agent only speaks: no tile
    info = await service.start_egress(req, selection=selection, speaker_tracks=True)
    assert status(await wait_active(service, info.egress_id)) == "EGRESS_ACTIVE"
    await asyncio.sleep(1.5)
    t_join = await _now(service, info.egress_id)
    await bot.start()
    await asyncio.sleep(2.0)
    t_mute = await _now(service, info.egress_id)
    await a.mute("audio")
    await asyncio.sleep(1.5)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in (a, bot):
        await p.stop()
    for index, path in enumerate(r.filename for r in final.file_results):
        media = check_file_result(final, index)
        assert _titles(path) == ["mix", "a", "bot"], path
        mix, ta, tb = (audio_samples(path, k) for k in range(3))
        both = (t_join + 0.6, t_mute - 0.3)
        assert _level(mix, 440.0, *both) > 0.02 and _level(mix, 660.0, *both) > 0.02
        # a's track: a's tone, never the agent's; silence once muted
        assert _level(ta, 440.0, *both) > 0.02 and _level(ta, 660.0, *both) < 0.01 * _level(ta, 440.0, *both)
        assert _rms(ta, t_mute + 0.5, media.duration - 0.2) < 1e-3, path
        # the agent's track: silence before it joined, then its tone alone
        assert _rms(tb, 0.2, t_join - 0.2) < 1e-3, path
        assert _level(tb, 660.0, *both) > 0.02 and _level(tb, 440.0, *both) < 0.01 * _level(tb, 660.0, *both)
        # sample-aligned: the same length, and the mix is the sum of the tracks at lag 0
        lengths = [x.samples.size for x in (mix, ta, tb)]
        assert max(lengths) - min(lengths) <= 1, lengths
        i0, i1 = (round(t * mix.sample_rate) for t in both)
        m, s = mix.samples[i0:i1], ta.samples[i0:i1] + tb.samples[i0:i1]
        lags = range(-48, 49)
        corr = [float(np.dot(m[48:-48], np.roll(s, k)[48:-48])) for k in lags]
        lag = lags[int(np.argmax(corr))]
        print(f"{Path(path).name}: lengths {lengths}, mix vs tracks lag {lag} samples")
        assert lag == 0, (path, lag)
    # the agent publishes no video: the grid holds a alone, full size
    video = final.file_results[0].filename
    frames = {k: _colours(video, box(x, 360)) for k, x in (("l", 400), ("r", 880))}
    assert all(near(_shown(f, t_mute), RED) for f in frames.values()), frames


@pytest.mark.integration
async def test_media_source_mix_follows_a_consent_attribute(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = publisher(livekit_server, room_name, "a", color=RED, tone_hz=440.0, marker_interval=NO_MARKERS)
    b = publisher(livekit_server, room_name, "b", video=False, tone_hz=660.0, marker_interval=NO_MARKERS)
    for p in (a, b):
        await p.start()
    req = pe.StartEgressRequest(
        room_name=room_name,
        media=pe.MediaSource(
            participant_video=pe.ParticipantVideo(identity="a"), audio=pe.AudioConfig(capture_all=True)
        ),
        advanced=pe.EncodingOptions(width=640, height=360, framerate=30),
        outputs=[pe.Output(file=pe.FileOutput(filepath="media.mp4"))],
    )
    info = await service.start_egress(req, selection=Selection.of(exclude=[CONSENT]))
    assert status(await wait_active(service, info.egress_id)) == "EGRESS_ACTIVE"
    await asyncio.sleep(2.0)
    t_out = await _now(service, info.egress_id)
    await _set_consent(livekit_server, room_name, "b", "false")
    await asyncio.sleep(2.0)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    for p in (a, b):
        await p.stop()
    media = check_file_result(final)
    audio = audio_samples(final.file_results[0].filename)
    before = {hz: _level(audio, hz, 0.5, t_out - 0.3) for hz in (440.0, 660.0)}
    after = {hz: _level(audio, hz, t_out + 0.4, media.duration - 0.3) for hz in (440.0, 660.0)}
    print(f"media mix levels before {before}, after b withdrew consent {after}")
    assert before[440.0] > 0.02 and before[660.0] > 0.02, before
    assert after[440.0] > 0.02 and after[660.0] < 0.01 * after[440.0], after


@pytest.mark.integration
async def test_a_paused_span_is_cut_from_the_speaker_tracks_as_from_the_mix(
    livekit_server: LiveKitServer, service: pyegress.EgressService, room_name: str
) -> None:
    a = publisher(livekit_server, room_name, "a", video=False, tone_hz=440.0)  # a beep each second
    await a.start()
    req = pe.RoomCompositeEgressRequest(room_name=room_name, audio_only=True)
    req.file_outputs.add(filepath="paused.ogg")
    info = await service.start_room_composite_egress(req, speaker_tracks=True)
    assert status(await wait_active(service, info.egress_id)) == "EGRESS_ACTIVE"
    await asyncio.sleep(2.0)
    await service.pause_egress(info.egress_id)
    await asyncio.sleep(1.5)  # a's beep in this span is recorded nowhere
    await service.resume_egress(info.egress_id)
    await asyncio.sleep(2.0)
    final = await service.stop_egress(pe.StopEgressRequest(egress_id=info.egress_id))
    await a.stop()
    check_file_result(final)
    path = final.file_results[0].filename
    assert _titles(path) == ["mix", "a"]
    mix, track = audio_samples(path, 0), audio_samples(path, 1)
    assert mix.samples.size == track.samples.size, (mix.samples.size, track.samples.size)
    beeps = [beep_onsets(x) for x in (mix, track)]
    print(f"paused.ogg: beeps in the mix {beeps[0]}, on a's track {beeps[1]}")
    assert len(beeps[0]) >= 3 and len(beeps[0]) == len(beeps[1]), beeps
    # before and after the cut the track's beeps are where the mix's are (a 10 ms difference seen
    # at the first beep was beep_onsets placing a burst louder than the file's peak early, fixed)
    assert all(abs(m - t) < 0.002 for m, t in zip(beeps[0], beeps[1], strict=True)), beeps
