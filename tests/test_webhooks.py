"""Webhooks pyegress sends itself (in-process there is no livekit-server to send them), received
on a local aiohttp server and verified with livekit-api's ``WebhookReceiver``, each with the
API key that must have signed it (and refused with the other)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from livekit import api
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

import pyegress
from pyegress.errors import InvalidRequestError
from pyegress.service import WEBHOOK_GRACE
from pyegress.testing import LiveKitServer
from pyegress.testing.ports import free_tcp_port

from .helpers import check_file_result, cli_env, publisher, record_for, status
from .test_worker import Cluster, _until

# the worker tests' cluster (redis-server, livekit-server, two workers), as fixtures of this module
from .test_worker import cluster as cluster
from .test_worker import redis_server as redis_server

SMALL = pe.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1200)
FULL = ["egress_started", "egress_updated", "egress_updated", "egress_ended"]
FULL_STATUSES = ["EGRESS_STARTING", "EGRESS_ACTIVE", "EGRESS_ENDING", "EGRESS_COMPLETE"]


@dataclass
class Received:
    body: str
    auth: str
    content_type: str
    query: str = ""
    user_agent: str = ""


@dataclass
class Receiver:
    """POST /hook/<name> on loopback; ``fail[name]`` first answers 503 that many times."""

    port: int = field(default_factory=free_tcp_port)
    got: dict[str, list[Received]] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    fail: dict[str, int] = field(default_factory=dict)

    def url(self, name: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}{query}"

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.attempts[name] += 1
        if self.attempts[name] <= self.fail.get(name, 0):
            return web.Response(status=503, text="not now")
        hit = Received(
            await request.text(),
            request.headers.get("Authorization", ""),
            request.content_type,
            request.query_string,
            request.headers.get("User-Agent", ""),
        )
        self.got.setdefault(name, []).append(hit)
        return web.Response(text="ok")

    async def wait(self, name: str, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.got.get(name, [])) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.got.get(name, [])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{name}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


def verify(hit: Received, key: str, secret: str) -> api.WebhookEvent:
    """The event, as livekit-api's receiver checks it (signature, issuer, body sha256)."""
    assert hit.content_type == "application/webhook+json"
    return api.WebhookReceiver(api.TokenVerifier(key, secret)).receive(hit.body, hit.auth)


def refused(hit: Received, key: str, secret: str) -> bool:
    try:
        verify(hit, key, secret)
    except jwt.InvalidTokenError:
        return True
    return False


def names(events: list[api.WebhookEvent]) -> list[str]:
    return [e.event for e in events]


def statuses(events: list[api.WebhookEvent]) -> list[str]:
    return [status(e.egress_info) for e in events]


pytestmark = pytest.mark.integration


async def test_a_track_composite_sends_its_webhooks_signed_filtered_and_retried(
    livekit_server: LiveKitServer, receiver: Receiver, room_name: str, tmp_path: Path
) -> None:
    server = livekit_server
    hook_key, hook_secret = "APIhooks", secrets.token_urlsafe(32)
    token = "tok" + secrets.token_hex(10)
    receiver.fail["flaky"] = 2  # two 503 first: retried with backoff (1 s, 2 s)
    t0 = int(time.time())
    async with pyegress.EgressService(
        server.url,
        server.api_key,
        server.api_secret,
        output_dir=tmp_path,
        wait_timeout=4.0,
        webhooks=[pm.WebhookConfig(url=receiver.url("default"))],
        webhook_keys={hook_key: hook_secret},
    ) as svc:
        async with publisher(server, room_name) as pub:
            req = pe.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                video_track_id=pub.video_track_sid,
                advanced=SMALL,
                file_outputs=[pe.EncodedFileOutput(filepath="hooked.mp4")],
                webhooks=[
                    pm.WebhookConfig(url=receiver.url("signed", f"?token={token}"), signing_key=hook_key),
                    pm.WebhookConfig(
                        url=receiver.url("ended-only"),
                        filter_params=pm.FilterParams(include_events=["egress_ended"]),
                    ),
                    pm.WebhookConfig(
                        url=receiver.url("no-updates"),
                        filter_params=pm.FilterParams(exclude_events=["egress_updated"]),
                    ),
                    pm.WebhookConfig(url=receiver.url("flaky")),
                ],
            )
            final = await record_for(svc, await svc.start_track_composite_egress(req), 4.0)
        hits = {
            name: await receiver.wait(name, n) for name, n in [("default", 4), ("signed", 4), ("flaky", 4)]
        }
        hits["ended-only"] = await receiver.wait("ended-only", 1)
        hits["no-updates"] = await receiver.wait("no-updates", 2)
    media = check_file_result(final)
    assert media.video is not None and media.audio is not None and media.duration > 3.5

    default = [verify(h, server.api_key, server.api_secret) for h in hits["default"]]
    signed = [verify(h, hook_key, hook_secret) for h in hits["signed"]]
    assert all(refused(h, server.api_key, server.api_secret) for h in hits["signed"])
    assert all(refused(h, hook_key, hook_secret) for h in hits["default"])
    flaky = [verify(h, server.api_key, server.api_secret) for h in hits["flaky"]]
    ended_only = [verify(h, server.api_key, server.api_secret) for h in hits["ended-only"]]
    no_updates = [verify(h, server.api_key, server.api_secret) for h in hits["no-updates"]]

    for events in (default, signed, flaky):
        assert names(events) == FULL
        assert statuses(events) == FULL_STATUSES
    assert receiver.attempts["flaky"] == 6
    assert names(ended_only) == ["egress_ended"]
    assert names(no_updates) == ["egress_started", "egress_ended"]
    # one event, one id at every URL (as livekit-server); ids and times shaped like LiveKit's
    for a, b in zip(default, signed, strict=True):
        assert a.id == b.id and re.fullmatch(r"EV_[A-Za-z0-9]{12}", a.id)
        assert t0 - 1 <= a.created_at <= time.time() + 1
    assert len({e.id for e in default}) == 4
    assert {e.egress_info.egress_id for e in default + signed + flaky} == {final.egress_id}
    ended = default[-1].egress_info
    assert ended.file_results[0].filename == final.file_results[0].filename
    assert ended.file_results[0].size == final.file_results[0].size > 0
    assert ended.track_composite.room_name == room_name
    assert ended.track_composite.webhooks[0].url == receiver.url("signed", "?token={redacted}")
    bodies = "\n".join(h.body for hs in hits.values() for h in hs)
    for secret in (token, hook_secret, server.api_secret):
        assert secret not in bodies


async def test_an_unreachable_webhook_neither_slows_nor_breaks_the_recording(
    livekit_server: LiveKitServer,
    receiver: Receiver,
    room_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pyegress")
    server = livekit_server
    hook_key, hook_secret = "APIunreach" + secrets.token_hex(4), secrets.token_urlsafe(32)
    closed = free_tcp_port()  # nothing listens there: every attempt is refused
    svc = pyegress.EgressService(
        server.url,
        server.api_key,
        server.api_secret,
        output_dir=tmp_path,
        wait_timeout=4.0,
        webhooks=[pm.WebhookConfig(url=receiver.url("default"))],
        webhook_keys={hook_key: hook_secret},
    )
    async with publisher(server, room_name) as pub:
        req = pe.ParticipantEgressRequest(
            room_name=room_name,
            identity=pub.identity,
            advanced=SMALL,
            file_outputs=[pe.EncodedFileOutput(filepath="unhooked.mp4")],
            webhooks=[pm.WebhookConfig(url=f"http://127.0.0.1:{closed}/hook", signing_key=hook_key)],
        )
        t = time.monotonic()
        final = await record_for(svc, await svc.start_participant_egress(req), 4.0)
        took = time.monotonic() - t
    # the default URL got every event while the other one was still being retried
    default = [verify(h, server.api_key, server.api_secret) for h in await receiver.wait("default", 4)]
    assert names(default) == FULL
    t = time.monotonic()
    await svc.aclose()
    closing = time.monotonic() - t
    media = check_file_result(final)
    assert media.video is not None and media.audio is not None
    assert 3.5 < media.duration < took + 0.5
    assert closing < WEBHOOK_GRACE + 1.5
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert f"127.0.0.1:{closed}/hook: attempt 1 failed" in logs
    assert "not delivered within the" in logs
    for secret in (hook_secret, hook_key, server.api_secret):
        assert secret not in logs + caplog.text


async def test_the_cli_delivers_the_requests_webhooks_before_it_exits(
    livekit_server: LiveKitServer, receiver: Receiver, room_name: str, tmp_path: Path
) -> None:
    server = livekit_server
    request = tmp_path / "participant.json"
    async with publisher(server, room_name):
        request.write_text(
            json.dumps(
                {
                    "roomName": room_name,
                    "identity": "alice",
                    "advanced": {"width": 640, "height": 360, "framerate": 30},
                    "fileOutputs": [{"filepath": "cli.mp4"}],
                    "webhooks": [{"url": receiver.url("cli")}],
                }
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyegress.cli", "record", str(request), "--duration", "3", "--quiet",
            "--output-dir", str(tmp_path),
            env=cli_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    info = json.loads(out)
    events = [verify(h, server.api_key, server.api_secret) for h in receiver.got.get("cli", [])]
    assert names(events) == FULL  # all in when the process has exited
    assert events[-1].egress_info.egress_id == info["egress_id"]
    assert events[-1].egress_info.file_results[0].filename == info["file_results"][0]["filename"]


async def test_bad_webhooks_are_refused_naming_the_field(receiver: Receiver, tmp_path: Path) -> None:
    key, secret = "APIkey", secrets.token_urlsafe(32)
    with pytest.raises(InvalidRequestError) as e:
        pyegress.EgressService(
            "ws://127.0.0.1:1", key, secret, webhooks=[pm.WebhookConfig(url="hook.example")]
        )
    assert e.value.field == "webhooks[0].url"
    svc = pyegress.EgressService(
        "ws://127.0.0.1:1",
        key,
        secret,
        output_dir=tmp_path,
        webhooks=[pm.WebhookConfig(url=receiver.url("d"))],
    )
    bad = {
        "webhooks[0].signing_key": pm.WebhookConfig(url=receiver.url("x"), signing_key="APIunknown"),
        "webhooks[0].url": pm.WebhookConfig(url="ftp://127.0.0.1/x"),
        "webhooks[0].filter_params.include_events[1]": pm.WebhookConfig(
            url=receiver.url("x"),
            filter_params=pm.FilterParams(include_events=["egress_ended", "egress_end"]),
        ),
    }
    failed = []
    for name, hook in bad.items():
        req = pe.TrackEgressRequest(
            room_name="r", track_id="TR_x", file=pe.DirectFileOutput(filepath="x.ogg"), webhooks=[hook]
        )
        info = await svc.start_track_egress(req)
        assert status(info) == "EGRESS_FAILED" and info.error.startswith(f"{name}: "), info.error
        failed.append(info.egress_id)
    # refused for another field: its (valid) webhooks are told too
    req = pe.TrackEgressRequest(
        room_name="r",
        track_id="TR_x",
        file=pe.DirectFileOutput(filepath="../../escape.ogg"),
        webhooks=[pm.WebhookConfig(url=receiver.url("ok"))],
    )
    info = await svc.start_track_egress(req)
    assert status(info) == "EGRESS_FAILED" and info.error.startswith("file.filepath: "), info.error
    failed.append(info.egress_id)
    # a refused request is an egress that ended: egress_ended (never started) to the defaults
    hits = await receiver.wait("d", 4)
    events = [verify(h, key, secret) for h in hits]
    assert [(e.event, e.egress_info.egress_id) for e in events] == [("egress_ended", i) for i in failed]
    assert [verify(h, key, secret).egress_info.egress_id for h in await receiver.wait("ok", 1)] == failed[-1:]
    assert "x" not in receiver.got
    await svc.aclose()


async def test_a_worker_leaves_the_requests_webhooks_to_livekit_server(
    cluster: Cluster, receiver: Receiver, room_name: str
) -> None:
    """livekit-server v1.13.5 sends a dispatched request's ``webhooks`` itself, from the
    ``EgressInfo`` the worker reports (protocol's ``GetEgressNotifyOptions``): each event comes
    once, from the server (Go's client), to the URL as given, signed with the key
    ``signing_key`` names; the worker sends none."""
    server = cluster.server
    token = "tok" + secrets.token_hex(10)
    async with publisher(server, room_name) as pub, cluster.api() as lk:
        started = await lk.egress.start_track_composite_egress(
            api.TrackCompositeEgressRequest(
                room_name=room_name,
                audio_track_id=pub.audio_track_sid,
                video_track_id=pub.video_track_sid,
                advanced=api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=800),
                file_outputs=[api.EncodedFileOutput(filepath="{room_name}/hooked.mp4")],
                webhooks=[
                    pm.WebhookConfig(url=receiver.url("req", f"?token={token}"), signing_key=server.api_key)
                ],
            )
        )
        active = await _until(cluster, started.egress_id, {pe.EGRESS_ACTIVE}, 15)
        assert status(active) == "EGRESS_ACTIVE", active.error
        await asyncio.sleep(3.0)
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
    final = await _until(cluster, started.egress_id, {pe.EGRESS_COMPLETE, pe.EGRESS_FAILED}, 20)
    assert status(final) == "EGRESS_COMPLETE", final.error
    deadline = time.monotonic() + 10
    while not any(h.body.count("egress_ended") for h in receiver.got.get("req", [])):
        assert time.monotonic() < deadline, receiver.got
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # a second copy from the worker would have come by now
    hits = receiver.got["req"]
    events = [verify(h, server.api_key, server.api_secret) for h in hits]
    assert names(events)[0] == "egress_started" and names(events)[-1] == "egress_ended", names(events)
    assert "egress_updated" in names(events)
    assert len({e.id for e in events}) == len(events)
    assert {h.query for h in hits} == {f"token={token}"}
    assert all(h.user_agent.startswith("Go-http-client") for h in hits), {h.user_agent for h in hits}
    assert events[-1].egress_info.status == pe.EGRESS_COMPLETE
