"""Secrets out of sight: stream keys in URLs (more to come in one place)."""

from __future__ import annotations

import re

STREAM_PATH = re.compile(r"^(?P<base>rtmps?://[^/\s]+(?:/[^/\s]+)*/)(?P<key>[^/\s]+)$")


def redact_stream_url(url: str) -> str:
    """``rtmp://host/app/sk_abcdef123456`` → ``rtmp://host/app/{sk_...456}``.

    The stream key (the last path element) is replaced by LiveKit's ``{abc...xyz}`` form, but
    never shows more than an eighth of the key at each end (nothing of keys under 8
    characters). Anything that is not an RTMP URL with a key is returned unchanged.
    """
    m = STREAM_PATH.match(url.strip().removesuffix(" live=1"))
    if m is None:
        return url
    key = m.group("key")
    n = min(3, len(key) // 8)
    return f"{m.group('base')}{{{key[:n]}...{key[len(key) - n :] if n else ''}}}"
