#!/usr/bin/env bash
# Set up (idempotent), then record a demo: a local livekit-server, two synthetic participants,
# a room composite, a participant, a track composite and a track egress; prints each file's
# duration, size and codecs. Runs in a network namespace of its own (pyegress.testing.netns),
# so its media never leaves this machine.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
.venv/bin/python -m pyegress.testing.netns -- .venv/bin/python examples/demo.py "$@"
