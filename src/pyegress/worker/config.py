"""The worker's configuration: the YAML keys LiveKit Egress reads, validated with clear errors.

Required: ``api_key``, ``api_secret``, ``ws_url`` and ``redis`` (``address``, sentinel keys, or
``cluster_addresses``). Optional: ``health_port``, ``prometheus_port``, ``log_level``, ``cpu_cost``,
``session_limits``, ``storage`` (the default store of outputs that name none), ``backup`` (a
store like ``storage``: an output's uploads go there once its own store failed),
``insecure`` (web and template pages run without web security: cross-origin requests and
mixed content allowed), and pyegress's own ``output_dir`` (where local files go; default
``./recordings``), ``drain_timeout`` (how long running egresses may go on after SIGTERM before
they are stopped: seconds or a duration like ``5m``; default 60 s; ``--drain-timeout`` overrides
it) and ``state_file`` (where the worker keeps its running egresses, so that after a crash its
next start reports them FAILED; default ``<output_dir>/.pyegress-worker-state.json``; workers
sharing an ``output_dir`` need one each), ``reconnect_timeout`` (how long an egress whose room
connection was lost waits for it to come back before it fails: a duration; default 30 s),
``max_retries`` (how often an egress that failed for a transient reason is retried; default
1), ``sidecars`` (the time-aligned sidecars written beside each recording: a list of
``events``, ``transcript``, ``chat``; default none), ``receive_path`` (participant, track
composite and room composite: ``auto``, ``sdk`` or ``encoded``, as ``EgressService``'s; default ``auto``) and
``room_composite`` (for every native room composite: ``include`` / ``exclude`` rules and
``hide_without_video`` as in :mod:`pyegress.selection`, ``speaker_tracks``). Unknown keys are
logged once and ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.json_format import ParseDict, ParseError
from livekit.protocol import egress as pe

from .. import redaction
from ..errors import InvalidRequestError
from ..limits import SessionLimits
from ..recorders import check_receive_path
from ..recorders.base import DEFAULT_MAX_RETRIES, RECONNECT_TIMEOUT
from ..redaction import redacted_repr
from ..selection import Selection
from ..sidecars import check_kinds
from ..storage.config import default_storage

log = logging.getLogger("pyegress.worker")

#: CPU cores one request of each type takes, measured by ``bench/worker.py`` through the worker
#: (docs/performance.md, section "Worker"; 2-core EPYC, one egress, CPU seconds per second, three
#: runs): track composite 720p30 0.34-0.39, room composite of 4 @ 720p 0.76-0.79, participant
#: 720p30 0.35-0.36, track (H.264 to MP4) 0.28-0.30. Web is not measured by that bench (Chromium's
#: cost varies with the page): 1.5 is a guess; LiveKit Egress reserves 4 cores for Chrome. A
#: room composite of more participants or a larger canvas costs more than 0.8
#: (docs/performance.md, "Room composite").
DEFAULT_CPU_COST = {
    "room_composite_cpu_cost": 0.8,
    "web_cpu_cost": 1.5,
    "participant_cpu_cost": 0.4,  # the top of the measured range, rounded up: a claim must not overbook
    "track_composite_cpu_cost": 0.4,
    "track_cpu_cost": 0.3,
    "max_cpu_utilization": 0.8,
}

_REDIS_KEYS = {
    "address",
    "username",
    "password",
    "db",
    "use_tls",
    "sentinel_master_name",
    "sentinel_username",
    "sentinel_password",
    "sentinel_addresses",
    "cluster_addresses",
    "max_redirects",
}
_KNOWN = {
    "api_key",
    "api_secret",
    "ws_url",
    "redis",
    "health_port",
    "prometheus_port",
    "log_level",
    "logging",
    "cpu_cost",
    "session_limits",
    "storage",
    "backup",
    "insecure",
    "output_dir",
    "drain_timeout",
    "reconnect_timeout",
    "max_retries",
    "sidecars",
    "receive_path",
    "state_file",
    "room_composite",
    "template_base",
    "cluster_id",
    "enable_chrome_sandbox",
    "debug",
}


class ConfigError(InvalidRequestError):
    """The worker configuration is missing a key or has a bad value (``field`` names it)."""


@redacted_repr
@dataclass
class RedisConfig:
    """Where the server's Redis is (a plain address, sentinels, or a cluster's nodes)."""

    address: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    db: int = 0
    use_tls: bool = False
    sentinel_master_name: str = ""
    sentinel_username: str = ""
    sentinel_password: str = field(default="", repr=False)
    sentinel_addresses: list[str] = field(default_factory=list)
    cluster_addresses: list[str] = field(default_factory=list)


@redacted_repr
@dataclass
class WorkerConfig:
    """A validated worker configuration."""

    api_key: str
    api_secret: str = field(repr=False)
    ws_url: str
    redis: RedisConfig
    output_dir: Path = field(default_factory=lambda: Path("recordings"))
    health_port: int = 0
    prometheus_port: int = 0
    log_level: str = "info"
    cpu_cost: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CPU_COST))
    session_limits: SessionLimits = field(default_factory=SessionLimits)
    storage: pe.StorageConfig | None = field(default=None, repr=False)  # holds store credentials
    backup: pe.StorageConfig | None = field(default=None, repr=False)  # where failed uploads go
    insecure: bool = False
    drain_timeout: float = 60.0
    state_file: Path | None = None
    reconnect_timeout: float = RECONNECT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    sidecars: frozenset[str] = frozenset()  # time-aligned sidecars beside each recording
    receive_path: str = "auto"  # participant / track / room composite (pyegress.recorders.RECEIVE_PATHS)
    selection: Selection | None = None  # room composites: who is recorded (consent rules)
    speaker_tracks: bool = False  # room composites: one audio track per participant

    @property
    def state_path(self) -> Path:
        """The state file (``state_file``, or ``.pyegress-worker-state.json`` in ``output_dir``)."""
        return self.state_file or self.output_dir / ".pyegress-worker-state.json"

    def cost(self, kind: str) -> float:
        """CPU cores reserved for one request of ``kind`` (``room_composite``, ``web``, ...)."""
        return float(self.cpu_cost.get(f"{kind}_cpu_cost", DEFAULT_CPU_COST["room_composite_cpu_cost"]))


def _receive_path(data: Mapping[str, Any]) -> str:
    try:
        return check_receive_path(_str(data, "receive_path") or "auto")
    except InvalidRequestError as e:
        raise ConfigError("receive_path", e.message) from None


def _str(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data.get(key, "")
    if not isinstance(value, (str, int)):
        raise ConfigError(f"{where}{key}", "must be a string")
    return str(value).strip()


def _required(data: Mapping[str, Any], key: str, env: str) -> str:
    value = _str(data, key) or os.environ.get(env, "").strip()
    if not value:
        raise ConfigError(key, f"is required (or set {env})")
    return value


def _port(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0) or 0
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(key, f"{value!r} is not a port number")
    return value


def _redis(raw: object) -> RedisConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError("redis", "is required: a mapping with address (or sentinel keys)")
    for key in raw:
        if key not in _REDIS_KEYS:
            log.warning("worker config: unknown key redis.%s ignored", key)
    cfg = RedisConfig(
        address=_str(raw, "address", "redis."),
        username=_str(raw, "username", "redis."),
        password=_str(raw, "password", "redis."),
        db=int(raw.get("db", 0) or 0),
        use_tls=bool(raw.get("use_tls", False)),
        sentinel_master_name=_str(raw, "sentinel_master_name", "redis."),
        sentinel_username=_str(raw, "sentinel_username", "redis."),
        sentinel_password=_str(raw, "sentinel_password", "redis."),
        sentinel_addresses=[str(a) for a in raw.get("sentinel_addresses") or []],
        cluster_addresses=[str(a) for a in raw.get("cluster_addresses") or []],
    )
    if cfg.cluster_addresses and cfg.db:
        raise ConfigError("redis.db", "a Redis Cluster has only db 0")
    if not (cfg.address or cfg.cluster_addresses) and not (
        cfg.sentinel_master_name and cfg.sentinel_addresses
    ):
        raise ConfigError(
            "redis.address",
            "is required (or cluster_addresses, or sentinel_master_name and sentinel_addresses)",
        )
    return cfg


def _storage(raw: object, key: str = "storage") -> pe.StorageConfig | None:
    """LiveKit Egress's ``storage`` (or ``backup``) block (``s3``, ``azure``, ``gcp``) as a
    ``StorageConfig``."""
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a mapping with s3, azure or gcp")
    data = dict(raw)
    gcp = data.get("gcp")
    if isinstance(gcp, Mapping) and "credentials_json" in gcp:  # Egress's name for credentials
        data["gcp"] = {
            **{k: v for k, v in gcp.items() if k != "credentials_json"},
            "credentials": gcp["credentials_json"],
        }
    data = {k: v for k, v in data.items() if k in ("s3", "azure", "gcp")}
    try:
        msg = ParseDict(data, pe.StorageConfig(), ignore_unknown_fields=True)
    except ParseError as e:
        raise ConfigError(key, str(e)) from None
    try:
        default_storage(msg, key)
    except InvalidRequestError as e:  # names storage.<provider>.<field>
        raise ConfigError(e.field, e.message) from None
    return msg


def _seconds(value: object, key: str, where: str = "session_limits.") -> float:
    """``90``, ``"90s"``, ``"5m"``, ``"1h30m"`` (Go durations as LiveKit Egress writes them)."""
    if isinstance(value, (int, float)):
        return float(value)
    text, total, number = str(value).strip(), 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total, number = total + float(number) * units[ch], ""
        else:
            raise ConfigError(f"{where}{key}", f"{value!r} is not a duration like 90s or 1h30m")
    if number:
        total += float(number)
    return total


def _limits(raw: object) -> SessionLimits:
    """LiveKit Egress's ``session_limits``: Go durations, and ``file_output_max_size`` in bytes."""
    if not raw:
        return SessionLimits()
    if not isinstance(raw, Mapping):
        raise ConfigError("session_limits", "must be a mapping")
    known = {f.name for f in fields(SessionLimits)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            log.warning("worker config: unknown key session_limits.%s ignored", key)
        elif key == "file_output_max_size":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"session_limits.{key}", f"{value!r} must be a whole number of bytes")
            values[key] = value
        else:
            values[key] = _seconds(value, key)
    try:
        return SessionLimits(**values)
    except InvalidRequestError as e:
        raise ConfigError(f"session_limits.{e.field.removeprefix('limits.')}", e.message) from None


def _count(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(key, f"{value!r} must be a whole number, 0 or more")
    return value


def _composite(raw: object) -> tuple[Selection | None, bool]:
    """``room_composite``: the selection and speaker tracks of every native room composite."""
    if raw is None:
        return None, False
    if not isinstance(raw, Mapping):
        raise ConfigError("room_composite", "must be a mapping")
    for key in raw:
        if key not in ("include", "exclude", "hide_without_video", "speaker_tracks"):
            raise ConfigError(f"room_composite.{key}", "unknown key")
    rules = {k: raw.get(k) or [] for k in ("include", "exclude")}
    for k, v in rules.items():
        if not isinstance(v, list):
            raise ConfigError(f"room_composite.{k}", "must be a list of rules")
    hide = bool(raw.get("hide_without_video", False))
    try:
        selection = Selection.of(*rules.values(), hide_without_video=hide, field="room_composite")
    except InvalidRequestError as e:
        raise ConfigError(e.field, e.message) from None
    chosen = selection != Selection()
    return (selection if chosen else None), bool(raw.get("speaker_tracks", False))


def parse_config(data: Mapping[str, Any]) -> WorkerConfig:
    """Validate a parsed YAML mapping; unknown keys are logged and ignored. Its secrets are
    registered with :mod:`pyegress.redaction`, so no log line shows them."""
    for key in data:
        if key not in _KNOWN:
            log.warning("worker config: unknown key %s ignored", key)
    cost = dict(DEFAULT_CPU_COST)
    for key, value in (data.get("cpu_cost") or {}).items():
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"cpu_cost.{key}", f"{value!r} must be a non-negative number")
        cost[str(key)] = float(value)
    config = WorkerConfig(
        api_key=_required(data, "api_key", "LIVEKIT_API_KEY"),
        api_secret=_required(data, "api_secret", "LIVEKIT_API_SECRET"),
        ws_url=_required(data, "ws_url", "LIVEKIT_WS_URL"),
        redis=_redis(data.get("redis")),
        output_dir=Path(_str(data, "output_dir") or "recordings"),
        health_port=_port(data, "health_port"),
        prometheus_port=_port(data, "prometheus_port"),
        log_level=_str(data, "log_level") or "info",
        cpu_cost=cost,
        session_limits=_limits(data.get("session_limits")),
        storage=_storage(data.get("storage")),
        backup=_storage(data.get("backup"), "backup"),
        insecure=bool(data.get("insecure", False)),
        drain_timeout=_seconds(data.get("drain_timeout", 60.0), "drain_timeout", ""),
        state_file=Path(_str(data, "state_file")) if _str(data, "state_file") else None,
        reconnect_timeout=_seconds(data.get("reconnect_timeout", RECONNECT_TIMEOUT), "reconnect_timeout", ""),
        max_retries=_count(data, "max_retries", DEFAULT_MAX_RETRIES),
        sidecars=check_kinds(data.get("sidecars") or ()),
        receive_path=_receive_path(data),
    )
    config.selection, config.speaker_tracks = _composite(data.get("room_composite"))
    secrets = [config.api_secret, config.redis.password, config.redis.sentinel_password]
    for store in (config.storage, config.backup):
        if store is not None:
            secrets += redaction.secrets_in(store)
    redaction.remember(config, *secrets)
    return config


def load_config(path: str | None = None, body: str | None = None) -> WorkerConfig:
    """The worker configuration from ``body`` (YAML text), ``path``, or ``EGRESS_CONFIG_BODY`` /
    ``EGRESS_CONFIG_FILE``, in that order."""
    text = body or os.environ.get("EGRESS_CONFIG_BODY", "")
    if not text:
        path = path or os.environ.get("EGRESS_CONFIG_FILE", "")
        if not path:
            raise ConfigError(
                "config", "give --config FILE, --config-body YAML, EGRESS_CONFIG_FILE or EGRESS_CONFIG_BODY"
            )
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError("config", f"cannot read {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError("config", f"not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("config", "must be a YAML mapping")
    return parse_config(data)
