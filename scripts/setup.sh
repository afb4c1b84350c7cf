#!/usr/bin/env bash
# Set up a fresh machine for pyegress: a venv with the package and its test tools, and the
# servers the tests and the demo run (livekit-server, storage emulators, RTMP server).
# Idempotent: re-running skips what is already there.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,all,docs]'

bash scripts/install-livekit-server.sh
# the tests, benches and demo run in a network namespace of their own (unshare, ip)
if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux iproute2 >/dev/null
fi
for extra in scripts/install-storage-emulators.sh scripts/install-rtmp-server.sh scripts/install-redis-server.sh \
    scripts/install-chromium.sh scripts/install-go-client.sh scripts/install-srt.sh; do
  if [[ -f "$extra" ]]; then bash "$extra"; fi
done
bash scripts/build-templates.sh
echo "setup done: activate with 'source .venv/bin/activate'"
