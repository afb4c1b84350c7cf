#!/usr/bin/env bash
# Build the sample room composite templates (examples/templates) with esbuild from npm:
# livekit-client is bundled into dist/, so nothing is fetched from a CDN at run time.
# Idempotent: npm ci only when node_modules is missing or older than the lock file.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO/examples/templates"
if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is needed to build the templates (apt-get install -y nodejs npm)" >&2
  exit 1
fi
if [[ ! -d node_modules || package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules
fi
npm run --silent build
echo "templates built: $(ls dist)"
