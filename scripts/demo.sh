#!/usr/bin/env bash
# Set up (idempotent), then record a demo: a local livekit-server, two synthetic participants,
# a participant egress and a track-composite egress; prints where the files are.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
.venv/bin/python examples/demo.py "$@"
