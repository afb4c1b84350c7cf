"""pyegress.testing.relay: the jittery network of the burst tests holds the audio RTP it is told
and lets it go together every ``burst`` seconds; everything else, and every answer, passes at once."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from pyegress.testing import LiveKitServer, LiveKitServerError, netns
from pyegress.testing.relay import BurstRelay, _held_type

AUDIO = frozenset({111, 63})


def rtp(payload_type: int, seq: int, *, marker: bool = False) -> bytes:
    return bytes([0x90, payload_type | (0x80 if marker else 0)]) + seq.to_bytes(2, "big") + bytes(8 + 20)


def test_only_the_told_rtp_payload_types_are_held() -> None:
    assert _held_type(rtp(111, 1), AUDIO)
    assert _held_type(rtp(63, 1, marker=True), AUDIO)
    assert not _held_type(rtp(96, 1), AUDIO)  # video
    assert not _held_type(rtp(109, 1, marker=True), AUDIO)
    assert not _held_type(bytes([0x80, 200]) + bytes(26), AUDIO)  # RTCP sender report
    assert not _held_type(bytes([0x81, 201]) + bytes(30), AUDIO)  # receiver report
    assert not _held_type(bytes([0x00, 0x01]) + bytes(18), AUDIO)  # STUN binding request
    assert not _held_type(bytes([0x16, 0xFE, 0xFD]) + bytes(20), AUDIO)  # DTLS
    assert not _held_type(bytes([0x90, 111]), AUDIO)  # too short for an RTP header


def test_a_server_with_a_relay_outside_a_namespace_is_refused_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(netns, "current", lambda: None)  # as outside one, wherever this runs
    server = LiveKitServer(relay=BurstRelay(burst=0.2))
    with pytest.raises(LiveKitServerError, match="relay runs inside a pyegress network namespace"):
        server.start()
    assert not server.running


#: Run inside a namespace of its own: a UDP "server" answering every datagram, the relay in
#: front of it, and a client sending audio RTP every 20 ms and a video packet after each.
SCRIPT = r"""
import json, socket, threading, time
from pyegress.testing import netns
from pyegress.testing.relay import BurstRelay

ns = netns.current()
server_ip = str(ns.address.ip)
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind((server_ip, 0))
port = srv.getsockname()[1]
relay = BurstRelay(burst=0.2)
relay.start(server_ip, range(port, port + 1))
cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
cli.settimeout(1.0)

def rtp(pt, seq):
    return bytes([0x90, pt]) + seq.to_bytes(2, "big") + bytes(28)

sent, got, answers = {}, {}, []

def serve():  # the server's side, on a thread of its own: arrival times as they come
    srv.settimeout(2.0)
    while len(got) < 60:
        data, peer = srv.recvfrom(2048)
        got[int.from_bytes(data[2:4], "big")] = time.monotonic()
        srv.sendto(data, peer)

server = threading.Thread(target=serve)
server.start()
t0 = time.monotonic()
for i in range(30):
    time.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))
    for pkt in (rtp(111, i), rtp(96, 1000 + i)):
        sent[int.from_bytes(pkt[2:4], "big")] = time.monotonic()
        cli.sendto(pkt, (relay.address, port))
server.join()
while len(answers) < 60:
    data, peer = cli.recvfrom(2048)
    answers.append(list(peer))
stats = relay.stop()
print(json.dumps({"sent": sent, "got": got, "answers": answers, "stats": stats.__dict__,
                  "relay": relay.address, "port": port}))
"""


def test_the_relay_holds_audio_for_the_burst_and_passes_the_rest() -> None:
    out = subprocess.run(
        netns.command([sys.executable, "-c", SCRIPT], "10.213.9.1/24"),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    r = json.loads(out.splitlines()[-1])
    sent = {int(k): v for k, v in r["sent"].items()}
    got = {int(k): v for k, v in r["got"].items()}
    assert sorted(got) == sorted(sent)  # nothing lost
    video = [got[s] - sent[s] for s in sent if s >= 1000]
    assert max(video) < 0.05, video  # passed at once
    audio = sorted(got[s] for s in sent if s < 1000)
    # the 30 packets of 600 ms go in 3 or 4 releases, 200 ms apart, each packet held up to 200 ms
    releases = [audio[0]] + [b for a, b in itertools.pairwise(audio) if b - a > 0.1]
    assert 3 <= len(releases) <= 4, audio
    assert all(0.17 < b - a < 0.23 for a, b in itertools.pairwise(releases)), releases
    assert max(got[s] - sent[s] for s in sent if s < 1000) > 0.15
    assert all(got[s] >= sent[s] for s in sent)
    # the server's answers come back from the address and port the client sent to
    assert r["answers"] == [[r["relay"], r["port"]]] * 60
    assert r["stats"] == {"to_server": 60, "to_clients": 60, "held": 30, "clients": 1}
