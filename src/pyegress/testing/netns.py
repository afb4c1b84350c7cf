"""Run commands in a private network namespace, so test traffic never leaves the machine.

libwebrtc (in the livekit SDK and in Chromium) never gathers loopback ICE candidates: between
two processes of one machine, WebRTC media runs over the machine's own interface address, and
in a namespace with only ``lo`` it cannot connect at all. This module makes a namespace with
``lo`` up and a veth pair whose one end carries a private address (``10.213.0.1/24`` unless told
otherwise) that exists only inside it, then runs a command there: every server the command
starts and every ICE candidate it gathers stay inside.

    python -m pyegress.testing.netns -- pytest -m integration

:func:`command` gives the argv that does the same from Python, :func:`current` tells whether
this process runs in such a namespace (and :class:`~pyegress.testing.LiveKitServer` then
advertises the namespace's address as its ICE candidate), :func:`addresses` lists the addresses
of the namespace the process is in. Needs ``unshare`` (util-linux) and ``ip`` (iproute2), and
either root or unprivileged user namespaces (then the command runs as root of its own user
namespace, mapped to the caller's uid). Install what the command needs before entering: the
namespace has no route out.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ADDRESS",
    "ENV_VAR",
    "EXIT_NO_NAMESPACE",
    "INTERFACE",
    "Namespace",
    "NetnsError",
    "add_peer_address",
    "addresses",
    "command",
    "current",
    "main",
]

#: The veth end that carries the namespace's address; its peer is ``pyegress1``.
INTERFACE = "pyegress0"
_PEER = "pyegress1"
DEFAULT_ADDRESS = "10.213.0.1/24"
#: The CLI's exit status when it cannot run the command (as ``env`` and ``chroot`` do).
EXIT_NO_NAMESPACE = 125
#: Set by the wrapper to the address given to :data:`INTERFACE` (e.g. ``10.213.0.1/24``).
ENV_VAR = "PYEGRESS_NETNS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetnsError(RuntimeError):
    """The namespace cannot be made here (missing tools or no permission)."""


@dataclass(frozen=True)
class Namespace:
    """The pyegress namespace this process runs in: its veth and the address on it."""

    interface: str
    address: ipaddress.IPv4Interface


def _tool(name: str) -> str:
    # sbin is not on a non-root user's PATH on Debian
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        package = {"ip": "iproute2", "unshare": "util-linux"}.get(name, name)
        raise NetnsError(f"{name} not found (apt-get install -y {package})")
    return found


def _interfaces() -> dict[str, set[IPAddress]]:
    """Each interface of this process's network namespace and its addresses (from ``ip -j addr``)."""
    ip = subprocess.run([_tool("ip"), "-j", "addr", "show"], capture_output=True, text=True, check=True)
    return {
        link["ifname"]: {ipaddress.ip_address(a["local"]) for a in link.get("addr_info", [])}
        for link in json.loads(ip.stdout)
    }


def addresses() -> set[IPAddress]:
    """Every address of every interface of this process's network namespace."""
    return set().union(*_interfaces().values())


def current() -> Namespace | None:
    """The pyegress namespace this process is in, or None.

    :data:`ENV_VAR` makes the claim and the interface must carry that address here, so a
    child that inherited the variable but left the namespace is not fooled.
    """
    claim = os.environ.get(ENV_VAR)
    if not claim:
        return None
    try:
        address = ipaddress.IPv4Interface(claim)
    except ValueError:
        return None
    if address.ip not in _interfaces().get(INTERFACE, set()):
        return None
    return Namespace(INTERFACE, address)


def add_peer_address(address: IPAddress) -> None:
    """Give the veth's peer one more address (a second host of the namespace that livekit-server,
    bound to :data:`INTERFACE` only, leaves free); a no-op if the namespace has it already."""
    ns = current()
    if ns is None:
        raise NetnsError("not in a pyegress network namespace: its addresses are not ours to add")
    if address not in addresses():
        subprocess.run([_tool("ip"), "addr", "add", f"{address}/32", "dev", _PEER], check=True)


def _setup_script(ip: str, address: ipaddress.IPv4Interface) -> str:
    """Shell lines run first inside the namespace: lo up, the veth pair up, then exec the command."""
    q = shlex.quote
    return "\n".join(
        [
            "set -e",
            f"{q(ip)} link set lo up",
            f"{q(ip)} link add {INTERFACE} type veth peer name {_PEER}",
            # no IPv6 link-local addresses: the private IPv4 address is the only one besides lo
            f"{q(ip)} link set {INTERFACE} addrgenmode none",
            f"{q(ip)} link set {_PEER} addrgenmode none",
            f"{q(ip)} addr add {q(str(address))} dev {INTERFACE}",
            f"{q(ip)} link set {_PEER} up",
            f"{q(ip)} link set {INTERFACE} up",
            f"export {ENV_VAR}={q(str(address))}",
            'exec "$@"',
        ]
    )


def _unshare_flags(unshare: str) -> list[str]:
    """``-n`` where we may make a network namespace, else ``-rn`` (inside a new user namespace)."""
    errors = []
    for flags in (["-n"], ["-r", "-n"]):
        probe = subprocess.run([unshare, *flags, "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return flags
        errors.append(f"unshare {' '.join(flags)}: {probe.stderr.strip() or probe.returncode}")
    raise NetnsError(
        "cannot create a network namespace (needs root, or unprivileged user namespaces: "
        "sysctl kernel.unprivileged_userns_clone=1): " + "; ".join(errors)
    )


def command(cmd: Sequence[str], address: str = DEFAULT_ADDRESS) -> list[str]:
    """The argv that runs ``cmd`` in a new pyegress namespace (its exit status is ``cmd``'s).

    Raises :class:`NetnsError` when the namespace cannot be made here.
    """
    if not cmd:
        raise ValueError("no command to run")
    try:
        iface = ipaddress.IPv4Interface(address)
    except ValueError as e:
        raise ValueError(f"address {address!r}: {e}") from e
    if not iface.ip.is_private or iface.ip.is_loopback:
        raise ValueError(f"address {address!r} is not a private, non-loopback IPv4 address")
    unshare, ip = _tool("unshare"), _tool("ip")
    return [unshare, *_unshare_flags(unshare), "sh", "-c", _setup_script(ip, iface), "sh", *cmd]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyegress.testing.netns [--address CIDR] [--check] -- CMD ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m pyegress.testing.netns",
        description="Run CMD in a new network namespace: lo up and a veth pair with a private address.",
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"address of {INTERFACE} (%(default)s)")
    parser.add_argument(
        "--check", action="store_true", help="only tell whether this process runs in a pyegress namespace"
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (after --)")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.check:
        ns = current()
        print(f"inside {ns.interface} {ns.address}" if ns else "not in a pyegress namespace")
        return 0 if ns else 1
    if not cmd:
        parser.error("no command given (put it after --)")
    try:
        argv_inside = command(cmd, args.address)
    except (NetnsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NO_NAMESPACE
    sys.stdout.flush()
    os.execv(argv_inside[0], argv_inside)


if __name__ == "__main__":
    sys.exit(main())
