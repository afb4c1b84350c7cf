"""The tests' WebRTC media stays inside the network namespace the test script made.

scripts/test.sh runs pytest through ``python -m pyegress.testing.netns``: a namespace with ``lo``
and a veth pair whose one address (10.213.0.1) exists nowhere else. These tests read the ICE
candidate pairs that the livekit SDK and Chromium selected and assert that both ends are
loopback or that address.

Run outside such a namespace, the SDK test fails: libwebrtc never gathers loopback candidates,
so the SDK's pairs go from the machine's own interface address (eth0's, e.g. 192.0.2.2) to the
server's loopback candidate, and an interface address is allowed only inside the namespace.
The Chromium test passes there: Chromium as pyegress starts it (no media permission) binds its
ICE sockets to the wildcard address and reaches that loopback candidate from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psutil
import pytest
from aiohttp import web
from livekit import rtc

from pyegress.sources.web import PageSource
from pyegress.testing import LiveKitServer, netns

from .helpers import publisher

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[1] / "examples" / "templates" / "dist"
Pair = tuple[str, str]  # (local address, remote address) of a selected candidate pair

#: Keeps every RTCPeerConnection the page makes, so its stats can be read.
KEEP_PEER_CONNECTIONS_JS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pyegressPcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pyegressPcs.push(this); }
  };
})();
"""

#: The selected pair of each transport of each kept peer connection that received media:
#: [local address, local port, remote address]. Chromium hides its local address from pages
#: (mDNS host candidates: "" in the stats), so the port is given too.
SELECTED_PAIRS_JS = """
async () => {
  const out = [];
  for (const pc of window.__pyegressPcs || []) {
    const stats = new Map();
    (await pc.getStats()).forEach((s) => stats.set(s.id, s));
    for (const s of stats.values()) {
      const pair = s.type === "transport" && stats.get(s.selectedCandidatePairId);
      if (pair && pair.bytesReceived > 0) {
        const local = stats.get(pair.localCandidateId);
        out.push([local.address, local.port, stats.get(pair.remoteCandidateId).address]);
      }
    }
  }
  return out;
}
"""


@pytest.fixture
async def templates() -> AsyncIterator[str]:
    """The built sample templates, served on 127.0.0.1 (their module scripts need http)."""
    if not (TEMPLATES / "grid" / "index.html").is_file():
        pytest.fail("the sample template is not built (run scripts/build-templates.sh)", pytrace=False)
    app = web.Application()
    app.router.add_static("/", TEMPLATES)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def udp_socket_addresses(port: int) -> list[str]:
    """Local addresses of this namespace's UDP sockets bound to ``port`` (for any process)."""
    return [c.laddr.ip for c in psutil.net_connections("udp") if c.laddr and c.laddr.port == port]


def source_address(remote: str) -> str:
    """The address the kernel sends from to ``remote``: what a socket bound to 0.0.0.0 uses."""
    family = socket.AF_INET6 if ":" in remote else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((remote, 9))  # a UDP connect only picks the route: nothing is sent
        return str(s.getsockname()[0])


async def chromium_selected_pairs(page: Any) -> list[Pair]:
    """The page's selected pairs, with the local address Chromium hides read from the kernel.

    Chromium, without a media permission, gives pages no local address ("" in the stats) and
    binds its ICE sockets to the wildcard address: the local address is that of the socket at
    the candidate's port or, for a wildcard socket, the source the kernel picks toward the remote.
    """
    pairs = []
    for local, port, remote in await page.evaluate(SELECTED_PAIRS_JS):
        bound = [local] if local else udp_socket_addresses(port) or [f"<no socket at port {port}>"]
        for address in bound:
            pairs.append((source_address(remote) if address in ("0.0.0.0", "::") else address, remote))
    return pairs


def allowed_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Loopback and the address of the pyegress namespace this process runs in (none outside one)."""
    ns = netns.current()
    return {a for a in netns.addresses() if a.is_loopback} | ({ns.address.ip} if ns else set())


async def sdk_selected_pairs(room: rtc.Room) -> list[Pair]:
    """The selected candidate pair of each of the room's transports that has received bytes."""
    stats = await room.get_rtc_stats()
    pairs = []
    for report in (stats.publisher_stats, stats.subscriber_stats):
        by_id: dict[str, Any] = {}
        for s in report:
            kind = s.WhichOneof("stats")
            if kind is not None:
                by_id[getattr(s, kind).rtc.id] = s
        for s in report:
            if s.WhichOneof("stats") != "transport":
                continue
            pair = by_id.get(s.transport.transport.selected_candidate_pair_id)
            if pair is None or pair.candidate_pair.candidate_pair.bytes_received == 0:
                continue
            cp = pair.candidate_pair.candidate_pair
            local = by_id[cp.local_candidate_id].local_candidate.candidate.address
            remote = by_id[cp.remote_candidate_id].remote_candidate.candidate.address
            if local and remote:  # a peer-reflexive candidate's address shows only once learnt
                pairs.append((local, remote))
    return pairs


async def selected_pairs(
    read: Callable[[], Awaitable[list[Pair]]], want: int, timeout: float = 15.0
) -> list[Pair]:
    """``read()`` once it gives ``want`` pairs (or what it gives at ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pairs = await read()
        if len(pairs) >= want or loop.time() > deadline:
            return pairs
        await asyncio.sleep(0.25)


def assert_inside(pairs: list[Pair]) -> None:
    allowed = allowed_addresses()
    outside = [p for p in pairs if not {ipaddress.ip_address(a) for a in p} <= allowed]
    assert not outside, (
        f"selected candidate pairs {outside} leave {sorted(map(str, allowed))} "
        f"({netns.current() or 'not in a pyegress namespace: run via python -m pyegress.testing.netns'})"
    )


async def test_sdk_media_uses_only_namespace_addresses(livekit_server: LiveKitServer, room_name: str) -> None:
    async with publisher(livekit_server, room_name, "alice") as alice:
        viewer = rtc.Room()
        await viewer.connect(livekit_server.url, livekit_server.token("viewer", room_name))
        try:
            # the publisher's sending transport and the viewer's receiving one
            sent = await selected_pairs(lambda: sdk_selected_pairs(alice.room), 1)
            received = await selected_pairs(lambda: sdk_selected_pairs(viewer), 1)
        finally:
            await viewer.disconnect()
    assert sent and received, f"no selected pair carried media: {sent=} {received=}"
    print(f"SDK selected pairs (local, remote): publisher {sent}, subscriber {received}")
    assert_inside(sent + received)


async def test_chromium_media_uses_only_namespace_addresses(
    livekit_server: LiveKitServer, room_name: str, templates: str
) -> None:
    async with publisher(livekit_server, room_name, "alice"):
        token = livekit_server.token("template", room_name, hidden=True, can_publish=False)
        page = PageSource(
            f"{templates}/grid/index.html?" + urlencode({"url": livekit_server.url, "token": token}),
            320,
            240,
            video=False,
            audio=False,
            capture="screencast",
        )
        try:
            await page.open()
            await page.page.context.add_init_script(KEEP_PEER_CONNECTIONS_JS)
            await page.page.reload()  # the template connects again, its peer connections now kept
            pairs = await selected_pairs(lambda: chromium_selected_pairs(page.page), 1)
        finally:
            await page.close()
    assert pairs, "Chromium's peer connections selected no pair that carried media"
    print(f"Chromium selected pairs (local, remote): {pairs}")
    assert_inside(pairs)
