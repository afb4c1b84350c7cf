"""Twitch stream URLs, mapped as LiveKit Egress maps them.

``twitch://<stream_key>`` streams to Twitch's recommended ingest: the first entry of
``https://ingest.twitch.tv/ingests`` (its ``url_template_secure``, else ``url_template``) with
the key put in. A URL that already names a Twitch ingest (``rtmps://<x>.contribute.live-video.net/app/<key>``)
is moved to the recommended one when the list can be read, and kept as it is otherwise.

The list is read on a stream's own thread when it connects (never on the event loop) and kept
for an hour.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request

#: Twitch's list of ingest servers, best first.
INGESTS_URL = "https://ingest.twitch.tv/ingests"
#: How long a read list is used before it is read again.
CACHE_SECONDS = 3600.0

_ENDPOINT = re.compile(r"^rtmps?://[^/\s]*\.contribute\.live-video\.net/app/(\S+?)( live=1)?$")
_lock = threading.Lock()
_templates: dict[str, tuple[float, str]] = {}  # by list URL: (read at, template)


class TwitchError(Exception):
    """Twitch's ingest list could not be read or has no usable entry."""


def is_twitch(url: str) -> bool:
    """A ``twitch://<key>`` URL."""
    return url.lower().startswith("twitch://")


def _template(timeout: float) -> str:
    source = INGESTS_URL
    with _lock:
        cached = _templates.get(source)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
    try:
        with urllib.request.urlopen(source, timeout=timeout) as resp:
            body = json.load(resp)
    except (OSError, ValueError) as e:
        raise TwitchError(f"cannot read Twitch's ingest list {source}: {e}") from None
    ingests = body.get("ingests") if isinstance(body, dict) else None
    for ingest in ingests if isinstance(ingests, list) else []:
        if not isinstance(ingest, dict):
            continue
        template = ingest.get("url_template_secure") or ingest.get("url_template")
        if isinstance(template, str) and "{stream_key}" in template:
            with _lock:
                _templates[source] = (time.monotonic(), template)
            return template
    raise TwitchError(f"Twitch's ingest list {source} has no ingest")


def ingest_url(url: str, timeout: float = 5.0) -> str:
    """The RTMP(S) URL to connect to for ``url`` (other URLs are returned unchanged); raises
    :class:`TwitchError` for a ``twitch://`` URL when the ingest list cannot be read."""
    if is_twitch(url):
        return _template(timeout).replace("{stream_key}", url.split("://", 1)[1].strip("/"))
    match = _ENDPOINT.match(url)
    if match:
        try:
            return _template(timeout).replace("{stream_key}", match.group(1))
        except TwitchError:
            return url
    return url
