"""The worker's YAML config: LiveKit Egress's keys, clear errors naming the key (no server)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from pyegress import SessionLimits, cli
from pyegress.worker.config import ConfigError, load_config

BASE = """
api_key: key
api_secret: secret-value-123
ws_url: ws://127.0.0.1:7880
redis:
  address: 127.0.0.1:6379
"""


def test_the_keys_livekit_egress_reads(tmp_path: Path) -> None:
    body = (
        BASE
        + """
health_port: 8080
prometheus_port: 9090
log_level: debug
insecure: true
output_dir: /tmp/rec
receive_path: sdk
cpu_cost:
  room_composite_cpu_cost: 0.7
  max_cpu_utilization: 0.9
session_limits:
  file_output_max_duration: 1h30m
  stream_output_max_duration: 90s
  segment_output_max_duration: 2h
  image_output_max_duration: 45
  file_output_max_size: 1073741824
storage:
  s3:
    access_key: AK
    secret: SK
    region: us-east-1
    bucket: recordings
backup:
  azure:
    account_name: backupacct
    account_key: QkFDS1VQLWtleS1vZi1hLXRlc3Q=
    container_name: fallback
  """
    )
    cfg = load_config(body=body)
    assert (cfg.api_key, cfg.ws_url, cfg.redis.address) == ("key", "ws://127.0.0.1:7880", "127.0.0.1:6379")
    assert (cfg.health_port, cfg.prometheus_port, cfg.log_level, cfg.insecure) == (8080, 9090, "debug", True)
    assert cfg.output_dir == Path("/tmp/rec")
    assert cfg.receive_path == "sdk" and load_config(body=BASE).receive_path == "auto"
    assert cfg.cost("room_composite") == 0.7 and cfg.cpu_cost["max_cpu_utilization"] == 0.9
    assert cfg.session_limits == SessionLimits(
        file_output_max_duration=5400.0,
        stream_output_max_duration=90.0,
        segment_output_max_duration=7200.0,
        image_output_max_duration=45.0,
        file_output_max_size=1 << 30,
    )
    assert load_config(body=BASE).session_limits == SessionLimits()  # none by default
    assert cfg.storage is not None and cfg.storage.s3.bucket == "recordings"
    assert cfg.backup is not None and cfg.backup.azure.container_name == "fallback"
    assert "secret-value-123" not in repr(cfg) and "SK" not in repr(cfg).replace("SK_", "")
    assert "QkFDS1VQLWtleS1vZi1hLXRlc3Q=" not in repr(cfg)
    path = tmp_path / "egress.yaml"
    path.write_text(BASE)
    assert load_config(str(path)).redis.address == "127.0.0.1:6379"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (BASE.replace("api_key: key\n", ""), "api_key"),
        (BASE.replace("ws_url: ws://127.0.0.1:7880\n", ""), "ws_url"),
        ("api_key: k\napi_secret: s\nws_url: ws://h\n", "redis"),
        ("api_key: k\napi_secret: s\nws_url: ws://h\nredis:\n  db: 1\n", "redis.address"),
        (BASE + "health_port: 99999\n", "health_port"),
        (BASE + "receive_path: webrtc\n", "receive_path"),
        (BASE + "storage:\n  s3:\n    region: x\n", "storage.s3.bucket"),
        (BASE + "backup:\n  s3:\n    bucket: b\n", "backup.s3.region"),
        (BASE + "backup: /var/backup\n", "backup"),
        (BASE + "cpu_cost:\n  web_cpu_cost: -1\n", "cpu_cost.web_cpu_cost"),
        (
            BASE + "session_limits:\n  file_output_max_duration: x\n",
            "session_limits.file_output_max_duration",
        ),
        (
            BASE + "session_limits:\n  stream_output_max_duration: -5\n",
            "session_limits.stream_output_max_duration",
        ),
        (BASE + "session_limits:\n  file_output_max_size: 1GB\n", "session_limits.file_output_max_size"),
        (BASE + "session_limits: 3h\n", "session_limits"),
        ("[not, a, mapping]", "config"),
        (
            "api_key: k\napi_secret: s\nws_url: ws://h\nredis:\n  cluster_addresses: [a:1]\n  db: 2\n",
            "redis.db",
        ),
    ],
)
def test_a_bad_config_names_the_key(body: str, field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_WS_URL", "EGRESS_CONFIG_BODY"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigError) as err:
        load_config(body=body)
    assert err.value.field == field, err.value


def test_unknown_keys_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pyegress.worker"):
        cfg = load_config(body=BASE + "shiny_new_key: 1\n")
    assert cfg.api_key == "key"
    assert [r.getMessage() for r in caplog.records] == ["worker config: unknown key shiny_new_key ignored"]


def test_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_CONFIG_BODY", BASE)
    assert load_config().api_secret == "secret-value-123"


def test_a_redis_cluster_is_its_nodes_addresses() -> None:
    nodes = "cluster_addresses: [10.0.0.1:7000, 10.0.0.2:7001]"
    cfg = load_config(body=BASE.replace("address: 127.0.0.1:6379", nodes))
    assert cfg.redis.cluster_addresses == ["10.0.0.1:7000", "10.0.0.2:7001"] and cfg.redis.address == ""


@pytest.mark.parametrize("field", ["health_port", "prometheus_port"])
def test_a_port_already_taken_is_an_error_naming_the_key(
    field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker serves its ports before it joins the cluster: a port another process holds
    is a config error naming the key (exit 2), not a traceback, and nothing is claimed."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["worker", "--config-body", BASE + f"{field}: {port}\n"]) == 2
    err = capsys.readouterr().err
    assert f"error: worker config: {field}: port {port} cannot be served" in err, err
    assert "Traceback" not in err
