"""Webhooks from pyegress itself: ``egress_started``, ``egress_updated`` and ``egress_ended``.

In this process there is no livekit-server to send them, so the service does, as
livekit-server v1.13.5 would for the same egress:

* to the request's ``webhooks`` and to the service's default list;
* ``egress_started`` when the egress is created (STARTING), ``egress_updated`` when it becomes
  ACTIVE or ENDING or its streams change (what LiveKit's egress reports with ``UpdateEgress``),
  ``egress_ended`` once with the final info (files, uploads and manifests done);
* the body is the ``WebhookEvent`` as protobuf JSON (``id`` ``EV_...``, ``created_at`` in
  seconds, the redacted ``EgressInfo``), the ``Authorization`` header a JWT of
  ``livekit.api.AccessToken`` carrying the body's sha256; so ``livekit.api.WebhookReceiver``
  verifies it unchanged;
* ``signing_key`` is, as in LiveKit, the *API key* to sign with (the JWT's issuer), whose secret
  the service knows: its own ``api_key`` or one of ``webhook_keys``. Empty: the service's key;
* ``filter_params`` are honoured (livekit-server v1.13.5 ignores them on a request's webhooks).

Delivery never blocks recording: events are queued and one sender task per service posts them,
one request at a time per URL (so each URL gets them in order) with retries and backoff as
LiveKit's (five attempts, 1 s doubling to 30 s; connection errors, timeouts, 429 and 5xx retried,
other answers final; an event queued longer than 30 s is dropped). Failures are logged with the
URL redacted and never a signing secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import logging
import secrets
import string
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit.api import AccessToken
from livekit.protocol import egress as pe
from livekit.protocol import models as pm
from livekit.protocol import webhook as pw

from .errors import InvalidRequestError
from .info import is_terminal
from .redaction import redact_url, redacted_repr, remember, url_secrets

log = logging.getLogger("pyegress.webhooks")

STARTED, UPDATED, ENDED = "egress_started", "egress_updated", "egress_ended"
#: Every event name LiveKit sends (``filter_params`` may name any of them).
EVENTS = frozenset(
    {
        "room_started", "room_finished", "participant_joined", "participant_left",
        "participant_connection_aborted", "track_published", "track_unpublished",
        STARTED, UPDATED, ENDED, "ingress_started", "ingress_ended",
        "agent_job_started", "agent_job_ended",
    }
)  # fmt: skip
CONTENT_TYPE = "application/webhook+json"
#: LiveKit's token lifetime for a webhook.
TOKEN_TTL = datetime.timedelta(minutes=5)

_ALPHABET = string.ascii_letters + string.digits


@redacted_repr
@dataclass(frozen=True)
class Target:
    """Where one webhook goes and how it is signed (``api_key`` is the JWT's issuer)."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, event: str) -> bool:
        """LiveKit's filter: ``include_events`` when set, else ``exclude_events``."""
        if self.include:
            return event in self.include
        return event not in self.exclude


def request_webhooks(req: Message) -> Sequence[pm.WebhookConfig]:
    """The ``webhooks`` of a request (every request type of livekit-protocol 1.1.29 has them)."""
    if "webhooks" not in req.DESCRIPTOR.fields_by_name:
        return ()
    hooks: Sequence[pm.WebhookConfig] = getattr(req, "webhooks")  # noqa: B009 - not every Request has it
    return hooks


def check_webhooks(
    configs: Sequence[pm.WebhookConfig], where: str, keys: Mapping[str, str], default_key: str
) -> list[Target]:
    """Validated targets of ``configs`` (``where`` names the field in errors); ``keys`` are the
    API keys (key → secret) a ``signing_key`` may name, ``default_key`` signs the others."""
    out = []
    for i, c in enumerate(configs):
        name = f"{where}[{i}]"
        url = c.url.strip()
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = urlsplit("")
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            shown = redact_url(url) if url else "empty"
            raise InvalidRequestError(f"{name}.url", f"{shown} is not an http(s) URL")
        key = c.signing_key or default_key
        secret = keys.get(key, "")
        if not secret:
            if c.signing_key:
                raise InvalidRequestError(
                    f"{name}.signing_key",
                    "not an API key this service knows (give its secret in webhook_keys=...)",
                )
            raise InvalidRequestError(
                f"{name}.signing_key", "empty, and the service has no api_key/api_secret"
            )
        lists = {
            "include_events": c.filter_params.include_events,
            "exclude_events": c.filter_params.exclude_events,
        }
        for list_name, events in lists.items():
            for j, event in enumerate(events):
                if event not in EVENTS:
                    raise InvalidRequestError(
                        f"{name}.filter_params.{list_name}[{j}]",
                        f"{event!r} is not a LiveKit webhook event ({', '.join(sorted(EVENTS))})",
                    )
        target = Target(
            url, key, secret, tuple(c.filter_params.include_events), tuple(c.filter_params.exclude_events)
        )
        remember(target, secret, *([c.signing_key] if c.signing_key else []), *url_secrets(url))
        out.append(target)
    return out


def new_event_id() -> str:
    """An id shaped like LiveKit's (``EV_`` + 12 base62 characters)."""
    return "EV_" + "".join(secrets.choice(_ALPHABET) for _ in range(12))


def event_of(name: str, info: pe.EgressInfo) -> pw.WebhookEvent:
    """The ``WebhookEvent`` livekit-server sends for an egress (``created_at`` in seconds)."""
    return pw.WebhookEvent(event=name, egress_info=info, id=new_event_id(), created_at=int(time.time()))


def encode(event: pw.WebhookEvent) -> bytes:
    """The body: protobuf JSON as livekit-server's (camelCase, enums by name, int64 as
    strings, defaults left out), ASCII so every receiver hashes the same bytes."""
    return json.dumps(json_format.MessageToDict(event), separators=(",", ":")).encode()


def authorization(body: bytes, api_key: str, api_secret: str) -> str:
    """The ``Authorization`` value: a JWT issued by ``api_key`` carrying ``body``'s sha256."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return AccessToken(api_key, api_secret).with_ttl(TOKEN_TTL).with_sha256(digest).to_jwt()


# --- delivery --------------------------------------------------------------------------------


@dataclass
class _Delivery:
    target: Target
    event: str
    egress_id: str
    body: bytes
    queued_at: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        return f"webhook {self.event} of {self.egress_id} to {redact_url(self.target.url)}"


def _retryable(status: int) -> bool:
    """As go-retryablehttp (LiveKit's client): 429 and 5xx but 501."""
    return status == 429 or (status >= 500 and status != 501)


class Sender:
    """Posts queued deliveries from one task: at most one request in flight per URL (order
    kept per URL, a slow URL never holds the others), retried with backoff. :meth:`queue`
    never blocks; the task ends when nothing is left and starts again with the next event."""

    def __init__(
        self,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        max_age: float = 30.0,
        depth: int = 200,
    ) -> None:
        self.attempts, self.backoff, self.max_backoff = attempts, backoff, max_backoff
        self.timeout, self.max_age, self.depth = timeout, max_age, depth
        self._lanes: dict[str, deque[_Delivery]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._in_flight = 0

    def queue(self, target: Target, event: pw.WebhookEvent) -> None:
        """Queue ``event`` for ``target`` (event loop only)."""
        item = _Delivery(target, event.event, event.egress_info.egress_id, encode(event))
        lane = self._lanes.setdefault(target.url, deque())
        if len(lane) >= self.depth:
            log.warning("%s dropped: %d events already queued for that URL", item.describe(), len(lane))
            return
        lane.append(item)
        self._wake.set()
        if not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pyegress-webhooks")

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight."""
        return self._in_flight + sum(len(lane) for lane in self._lanes.values())

    async def _run(self) -> None:
        busy: dict[str, asyncio.Task[None]] = {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                while True:
                    self._wake.clear()
                    busy = {url: task for url, task in busy.items() if not task.done()}
                    for url, lane in list(self._lanes.items()):
                        if url in busy:
                            continue
                        if not lane:
                            del self._lanes[url]
                            continue
                        task = asyncio.get_running_loop().create_task(self._deliver(session, lane.popleft()))
                        task.add_done_callback(lambda _: self._wake.set())
                        busy[url] = task
                    if not busy:  # idle: the next queue() starts a new run
                        self._running = False
                        return
                    await self._wake.wait()
        finally:
            if asyncio.current_task() is self._task:  # not a newer run started while this one closed
                self._running = False
            for task in busy.values():
                task.cancel()
            await asyncio.gather(*busy.values(), return_exceptions=True)

    async def _deliver(self, session: aiohttp.ClientSession, d: _Delivery) -> None:
        self._in_flight += 1
        try:
            await self._attempts(session, d)
        except Exception:  # a delivery's failure never reaches the recording
            log.exception("%s failed", d.describe())
        finally:
            self._in_flight -= 1

    async def _attempts(self, session: aiohttp.ClientSession, d: _Delivery) -> None:
        waited = time.monotonic() - d.queued_at
        if waited > self.max_age:
            log.warning(
                "%s dropped: queued %.0f s, past the %.0f s limit", d.describe(), waited, self.max_age
            )
            return
        for attempt in range(1, self.attempts + 1):
            headers = {
                "Authorization": authorization(d.body, d.target.api_key, d.target.api_secret),
                "Content-Type": CONTENT_TYPE,
            }
            try:
                async with session.post(d.target.url, data=d.body, headers=headers) as res:
                    await res.read()
                    if res.status < 300:
                        log.debug("%s sent (HTTP %d)", d.describe(), res.status)
                        return
                    error = f"HTTP {res.status}"
                    if not _retryable(res.status):
                        log.warning("%s refused: %s (not retried)", d.describe(), error)
                        return
            except (aiohttp.ClientError, TimeoutError) as e:
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if attempt == self.attempts:
                log.warning("%s not delivered after %d attempts: %s", d.describe(), attempt, error)
                return
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            log.warning("%s: attempt %d failed (%s); retrying in %.0f s", d.describe(), attempt, error, delay)
            await asyncio.sleep(delay)

    async def aclose(self, grace: float) -> None:
        """Let queued events go out for up to ``grace`` seconds, then drop the rest (logged)."""
        task = self._task
        if task is None or task.done():
            return
        _done, pending = await asyncio.wait({task}, timeout=grace)
        if pending:
            log.warning(
                "%d webhook(s) not delivered within the %.0f s grace of aclose()", self.pending, grace
            )
            self._lanes.clear()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- the service's notifier -------------------------------------------------------------------


@dataclass
class _Followed:
    targets: list[Target]
    status: int = pe.EGRESS_STARTING
    streams: tuple[tuple[str, int], ...] = ()


class EgressWebhooks:
    """The webhooks of one ``EgressService``: its default list, the keys that sign them and the
    egresses it follows (the service calls :meth:`follow` / :meth:`ended`, and has
    :meth:`on_info` listen to every change). ``enabled=False`` (a LiveKit worker, where
    livekit-server sends them) makes it send nothing and validate nothing."""

    def __init__(
        self,
        defaults: Sequence[pm.WebhookConfig],
        keys: Mapping[str, str],
        default_key: str,
        *,
        enabled: bool = True,
        sender: Sender | None = None,
    ) -> None:
        self.enabled = enabled
        self._keys = dict(keys)
        self._default_key = default_key
        self.defaults = check_webhooks(defaults, "webhooks", self._keys, default_key) if enabled else []
        self.sender = sender or Sender()
        self._followed: dict[str, _Followed] = {}

    def targets(self, req: Message) -> list[Target]:
        """The defaults and ``req``'s validated ``webhooks`` (InvalidRequestError naming the field)."""
        if not self.enabled:
            return []
        return self.defaults + check_webhooks(
            request_webhooks(req), "webhooks", self._keys, self._default_key
        )

    def follow(self, info: pe.EgressInfo, hooks: list[Target]) -> None:
        """The egress was created: ``egress_started``, then follow its changes."""
        if not self.enabled:
            return
        self._followed[info.egress_id] = _Followed(hooks, info.status)
        self._send(STARTED, info, hooks)

    def on_info(self, info: pe.EgressInfo) -> None:
        """Listener: ``egress_updated`` when a followed egress turns ACTIVE or ENDING or its
        streams change (the final state waits for :meth:`ended`)."""
        f = self._followed.get(info.egress_id)
        if f is None or info.status not in (pe.EGRESS_ACTIVE, pe.EGRESS_ENDING):
            return
        streams = tuple((s.url, int(s.status)) for s in info.stream_results)
        if info.status != f.status or streams != f.streams:
            f.status, f.streams = info.status, streams
            self._send(UPDATED, info, f.targets)

    def ended(self, info: pe.EgressInfo, hooks: list[Target] | None = None) -> None:
        """The egress is over (``info`` final): ``egress_ended`` to its targets (``hooks`` for
        one never followed: a refused request)."""
        if not self.enabled or not is_terminal(info.status):
            return
        f = self._followed.pop(info.egress_id, None)
        if f is not None:
            hooks = f.targets
        self._send(ENDED, info, hooks if hooks is not None else self.defaults)

    def _send(self, name: str, info: pe.EgressInfo, hooks: list[Target]) -> None:
        event = event_of(name, info)
        for target in hooks:
            if target.allows(name):
                self.sender.queue(target, event)

    async def aclose(self, grace: float) -> None:
        """Deliver what is queued within ``grace`` seconds."""
        await self.sender.aclose(grace)
