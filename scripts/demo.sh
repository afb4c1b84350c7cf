#!/usr/bin/env bash
# Set up (idempotent), then record a demo: a local livekit-server, two synthetic participants,
# a room composite, a participant, a track composite and a track egress; prints each file's
# duration, size and codecs.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
.venv/bin/python examples/demo.py "$@"
