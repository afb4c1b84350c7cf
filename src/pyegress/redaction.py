"""What a secret is, and how it is kept out of ``EgressInfo``, manifests, errors, logs and ``repr``.

It fails closed: a protobuf field is secret when its *name* looks secret (``secret``,
``password``, ``token``, ``key``, ``credentials``, ``external_id``, ...), not only when it
is on a list, and every URL a request carries goes through :func:`redact_url` whatever its
scheme. Three layers use it:

* :func:`redact_message` blanks the secret fields of a request copy or an ``EgressInfo``
  and cleans its URLs and free text (``error``, ``details``, file names);
* :func:`remember` registers the secrets of a live request (recorder, stream, room) so
  :func:`scrub` can find them verbatim in any text: error messages, third-party tracebacks;
* a log-record factory, installed when this module is imported, scrubs every record the
  process creates: logger filters would not do, as a filter on ``pyegress`` never sees the
  records of ``pyegress.outputs.stream``, and handlers belong to the application. Records
  of other libraries (botocore logs request headers at DEBUG) are cleaned of registered
  secrets only; records of ``pyegress.*`` also of anything URL- or token-shaped.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote, unquote_plus, urlsplit

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = [
    "REDACTED",
    "FieldKind",
    "field_kind",
    "is_secret_name",
    "redact_message",
    "redact_url",
    "redacted_repr",
    "remember",
    "scrub",
    "secret_parts",
    "secrets_in",
    "url_secrets",
]

REDACTED = "{redacted}"

# --- names -------------------------------------------------------------------------------------

#: A field, query key or JSON key with one of these in its name holds a secret. Deliberately
#: broad ("key" also hides ``apikey``, ``stream_key``, ``monkey``): a needless ``{redacted}``
#: costs nothing, a missed one leaks.
_SECRET_NAME = re.compile(
    r"secret|pass|pwd|token|credential|sign|auth|private|key|session|streamid|jwt|"
    r"external_id|username|^sig$|^code$|^salt$"
)
#: Protobuf fields that carry URLs given by the user (``url``, ``urls``, ``websocket_url``,
#: ``custom_base_url``, ``add_output_urls``, S3 ``endpoint``...).
_URL_NAME = re.compile(r"(^|_)urls?$|endpoint")


def is_secret_name(name: str) -> bool:
    """Whether a field / query key / JSON key named ``name`` holds a secret (case-insensitive)."""
    return bool(_SECRET_NAME.search(name.lower().replace("-", "_")))


class FieldKind:
    """How :func:`redact_message` treats a string field."""

    SECRET = "secret"  # replaced by ``{redacted}``
    URL = "url"  # through :func:`redact_url`, then :func:`scrub`
    TEXT = "text"  # through :func:`scrub` (names, paths, errors: a secret may be quoted in them)


def field_kind(name: str) -> str:
    """The :class:`FieldKind` of a string field named ``name``."""
    if is_secret_name(name):
        return FieldKind.SECRET
    if _URL_NAME.search(name.lower()):
        return FieldKind.URL
    return FieldKind.TEXT


# --- URLs --------------------------------------------------------------------------------------

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: Already redacted (``{redacted}``, ``{sk_...jkl}``): left as it is, so redaction is idempotent.
_DONE = re.compile(r"^\{[^{}]*\}$")
#: Schemes whose whole authority is a stream key (``mux://<key>``).
_KEY_SCHEMES = ("mux", "twitch")


def _short(key: str) -> str:
    """LiveKit's ``{abc...xyz}``, never showing more than an eighth of the key at each end."""
    if _DONE.match(key):
        return key
    n = min(3, len(key) // 8)
    return f"{{{key[:n]}...{key[len(key) - n :] if n else ''}}}"


def _pairs(text: str, hidden: list[str], *, bare: bool) -> str:
    """``a=1&token=x`` → ``a=1&token={redacted}``; with ``bare``, a piece without ``=`` of 8+
    characters (``?<token>``) is hidden whole."""
    out = []
    for piece in text.split("&"):
        name, eq, value = piece.partition("=")
        if eq and value and is_secret_name(unquote_plus(name)) and not _DONE.match(value):
            hidden += [value, unquote_plus(value)]
            piece = f"{name}={REDACTED}"
        elif bare and not eq and len(piece) >= 8 and not _DONE.match(piece):
            hidden += [piece, unquote_plus(piece)]
            piece = REDACTED
        out.append(piece)
    return "&".join(out)


def _split(url: str) -> tuple[str, list[str]]:
    """``url`` redacted, and the secrets it hid (for :func:`remember`)."""
    text = url.strip()
    if not text:
        return url, []
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else ""
    if scheme in ("rtmp", "rtmps"):
        text = text.removesuffix(" live=1").strip()
    try:
        if m is None or any(c.isspace() for c in text):
            raise ValueError("not a URL")
        urlsplit(text).port  # noqa: B018 - raises ValueError on a bad port or IPv6 literal
    except ValueError:
        return REDACTED, [text]  # cannot tell where its secrets are: hide it all
    hidden: list[str] = []
    rest = text[m.end() :]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, rest = rest[:cut], rest[cut:]
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            if not _DONE.match(password):
                hidden += [password, unquote(password)]
            userinfo = f"{user}:{REDACTED}"
        elif not _DONE.match(user):  # a user name alone is a token (https://TOKEN@host)
            hidden += [user, unquote(user)]
            userinfo = REDACTED
        netloc = f"{userinfo}@{hostport}"
    if scheme in _KEY_SCHEMES and netloc:
        hidden.append(netloc)
        netloc = _short(netloc)
    if scheme in ("rtmp", "rtmps"):
        # the stream key: the last path element and whatever follows it (query, fragment)
        end = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=len(rest))
        head, slash, last = rest[:end].rpartition("/")
        key = last + rest[end:]
        if slash and key:
            if not _DONE.match(key):
                hidden.append(key)
            rest = f"{head}/{_short(key)}"
    else:
        path, hash_, fragment = rest.partition("#")
        path, q, query = path.partition("?")
        query = q + _pairs(query, hidden, bare=True) if q else ""
        rest = path + query + (hash_ + _pairs(fragment, hidden, bare=False) if hash_ else "")
    return f"{text[: m.end()]}{netloc}{rest}", [h for h in hidden if h]


def redact_url(url: str) -> str:
    """``url`` with its credentials hidden, whatever the scheme.

    * the password of the user-info (a user name alone, as in ``https://TOKEN@host``, is hidden);
    * query and fragment values whose key looks secret (``token``, ``passphrase``,
      ``streamid``, ``key``, ``X-Amz-Signature``, ``sig``, ...), and bare values of 8+ characters;
    * RTMP(S): the stream key (last path element, with what follows it) in LiveKit's
      ``{abc...xyz}`` form: ``rtmp://host/app/sk_abcdef123456`` → ``rtmp://host/app/{sk_...456}``
      (the ``live=1`` flag is dropped); ``mux://<key>``: the key;
    * anything that does not parse as ``scheme://...`` is replaced whole by ``{redacted}``.

    Redacting a redacted URL changes nothing.
    """
    return _split(url)[0]


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that :func:`redact_url` hides."""
    return _split(url)[1]


# --- free text and registered secrets -------------------------------------------------------

#: A URL inside text; its end stops at white space and quotes.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
_PAIR_IN_TEXT = re.compile(
    r"\b((?:access_|api_|stream_)?(?:token|secret|password|passwd|pwd|passphrase|streamid|signature|"
    r"sig|key|apikey|auth|credentials?))=(\{[^{}]*\}|[^&\s\"',;{}]+)",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?)]"
#: Shorter secrets are not searched for in text (they would blank common words); the
#: structural redaction of fields and URLs still hides them.
MIN_SECRET_LEN = 4

#: Re-entrant: an owner's finalizer (:func:`_drop`) can run in the middle of :func:`_registered`
#: on the same thread, when compiling the pattern lets the garbage collector run (a plain lock
#: hung a whole test run there).
_lock = threading.RLock()
_live: dict[int, frozenset[str]] = {}
_ids = itertools.count()
_pattern: re.Pattern[str] | None = None
_stale = False


def _drop(token: int) -> None:
    global _stale
    with _lock:
        _live.pop(token, None)
        _stale = True


def remember(owner: object, *secrets: str) -> None:
    """Have :func:`scrub` hide ``secrets`` from any text for as long as ``owner`` lives.

    Recorders register their request (:func:`secrets_in`), stream sinks their URL, room
    sources the API secret; nothing is kept once the owner is gone.
    """
    global _stale
    found = frozenset(s for s in secrets if len(s) >= MIN_SECRET_LEN and s != REDACTED)
    if not found:
        return
    token = next(_ids)
    with _lock:
        _live[token] = found
        _stale = True
    weakref.finalize(owner, _drop, token)


def _registered() -> re.Pattern[str] | None:
    global _pattern, _stale
    if _stale:
        with _lock:
            _stale = False  # before compiling: a finalizer that runs meanwhile marks it again
            words = sorted(set().union(*_live.values()), key=len, reverse=True)
            _pattern = re.compile("|".join(map(re.escape, words))) if words else None
    return _pattern


def _scrub_known(text: str, extra: Iterable[str] = ()) -> str:
    pattern = _registered()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for s in sorted((s for s in extra if len(s) >= MIN_SECRET_LEN), key=len, reverse=True):
        text = text.replace(s, REDACTED)
    return text


def _url_in_text(m: re.Match[str]) -> str:
    url = m.group()
    stripped = url.rstrip(_TRAILING)
    return redact_url(stripped) + url[len(stripped) :]


def _pair_in_text(m: re.Match[str]) -> str:
    return m.group() if _DONE.match(m.group(2)) else f"{m.group(1)}={REDACTED}"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with registered secrets, ``secrets``, URL credentials, ``token=...``-like pairs
    and JWTs replaced by ``{redacted}``: for error messages and anything else free-form."""
    if not text:
        return text
    text = _scrub_known(text, secrets)
    text = _URL_IN_TEXT.sub(_url_in_text, text)
    text = _PAIR_IN_TEXT.sub(_pair_in_text, text)
    return _JWT.sub(REDACTED, text)


def secret_parts(value: str) -> list[str]:
    """A secret value and the parts of it that may be printed alone: its long lines (a PEM key)
    and, for a JSON object (GCP credentials), the values of its secret-looking keys."""
    parts = [value, *(line for line in value.splitlines() if len(line) > 16)]
    try:
        data = json.loads(value)
    except ValueError:
        return parts
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, str) and is_secret_name(str(k)):
                parts += secret_parts(v)
    return parts


# --- protobuf messages -------------------------------------------------------------------------


def _walk(msg: Message, clean: Callable[[str, str], str]) -> None:
    """Replace every string (and bytes) value of ``msg``, recursively, by ``clean(field, value)``."""
    for fd, value in msg.ListFields():
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                for k in list(value):
                    if value_fd.message_type is not None:
                        _walk(value[k], clean)
                    elif value_fd.type == FieldDescriptor.TYPE_STRING:
                        value[k] = clean(fd.name, value[k])
            elif isinstance(value, Message):
                _walk(value, clean)
            else:
                for item in value:
                    _walk(item, clean)
        elif fd.type == FieldDescriptor.TYPE_STRING:
            if isinstance(value, str):
                setattr(msg, fd.name, clean(fd.name, value))
            else:
                value[:] = [clean(fd.name, v) for v in value]
        elif fd.type == FieldDescriptor.TYPE_BYTES and field_kind(fd.name) == FieldKind.SECRET:
            if isinstance(value, bytes):
                setattr(msg, fd.name, REDACTED.encode())
            else:
                value[:] = [REDACTED.encode()] * len(value)


def _clean(name: str, value: str) -> str:
    if not value:
        return value
    kind = field_kind(name)
    if kind == FieldKind.SECRET:
        return REDACTED
    return scrub(redact_url(value) if kind == FieldKind.URL else value)


def redact_message(msg: Message) -> None:
    """Redact ``msg`` and its sub-messages, maps and lists in place (see :class:`FieldKind`).

    Idempotent, so an ``EgressInfo`` can be redacted each time it is handed out.
    """
    _walk(msg, _clean)


def secrets_in(msg: Message) -> list[str]:
    """Every secret ``msg`` carries: secret fields (and their parts) and URL credentials."""
    found: list[str] = []

    def collect(name: str, value: str) -> str:
        kind = field_kind(name)
        if value and kind == FieldKind.SECRET:
            found.extend(secret_parts(value))
        elif value and kind == FieldKind.URL:
            found.extend(url_secrets(value))
        return value

    copy = type(msg)()
    copy.CopyFrom(msg)  # _walk writes back what it reads; never touch the caller's message
    _walk(copy, collect)
    return found


# --- repr ----------------------------------------------------------------------------------------

T = TypeVar("T", bound=type)


def redacted_repr(cls: T) -> T:
    """Class decorator: ``repr`` goes through :func:`scrub` (put it above ``@dataclass``)."""
    plain: Callable[[Any], str] = getattr(cls, "__repr__")  # noqa: B009 - the unbound method

    def __repr__(self: Any) -> str:
        return scrub(plain(self))

    setattr(cls, "__repr__", __repr__)  # noqa: B010 - mypy refuses assigning to a method
    return cls


# --- logs ------------------------------------------------------------------------------------------


def _scrub_record(record: logging.LogRecord) -> None:
    ours = record.name == "pyegress" or record.name.startswith("pyegress.")
    if not ours and _registered() is None:
        return
    clean: Callable[[str], str] = scrub if ours else _scrub_known
    try:
        message = record.getMessage()
    except Exception:  # a broken format: logging would print the raw arguments
        message = f"{record.msg} {record.args!r}"
    cleaned = clean(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        cleaned = clean(text)
        if cleaned != text:  # the formatter prints exc_text and has no exception to print again
            record.exc_info, record.exc_text = None, cleaned
    if record.stack_info:
        record.stack_info = clean(record.stack_info)


def _install() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "pyegress_scrubs", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub_record(record)
        return record

    factory.pyegress_scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install()
