"""pyegress.testing.netns: the namespace it makes holds only lo and its veth address."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyegress.testing import netns

CLI = [sys.executable, "-m", "pyegress.testing.netns"]
REPORT = (
    "from pyegress.testing import netns; print(netns.current()); print(sorted(map(str, netns.addresses())))"
)


def test_command_runs_in_a_namespace_with_only_lo_and_the_veth_address() -> None:
    out = subprocess.run(
        netns.command([sys.executable, "-c", REPORT], "10.213.7.1/24"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "Namespace(interface='pyegress0', address=IPv4Interface('10.213.7.1/24'))",
        "['10.213.7.1', '127.0.0.1', '::1']",
    ]


def test_cli_passes_the_exit_status_and_check_tells_where_it_runs() -> None:
    code = "import sys; sys.exit(7)"
    assert subprocess.run([*CLI, "--", sys.executable, "-c", code]).returncode == 7
    inside = subprocess.run([*CLI, "--", *CLI, "--check"], capture_output=True, text=True)
    assert (inside.returncode, inside.stdout) == (0, "inside pyegress0 10.213.0.1/24\n")


def test_an_inherited_claim_outside_the_namespace_is_not_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netns.ENV_VAR, "10.213.99.1/24")  # no such interface address here
    assert netns.current() is None


def test_no_namespace_fails_with_the_reason(tmp_path: Path) -> None:
    fake = tmp_path / "unshare"
    fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = subprocess.run([*CLI, "--", "true"], capture_output=True, text=True, env=env)
    assert run.returncode == netns.EXIT_NO_NAMESPACE
    assert "cannot create a network namespace" in run.stderr and "Operation not permitted" in run.stderr


def test_only_private_addresses_are_taken() -> None:
    with pytest.raises(ValueError, match="not a private"):
        netns.command(["true"], "8.8.8.8/24")
