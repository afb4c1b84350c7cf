#!/usr/bin/env bash
# Build tests/go/egressclient (LiveKit's Go server SDK starting an egress from a request JSON,
# as `lk egress start` does) into <repo>/.tools/bin/egressclient. The module cache is filled
# here because the tests run in a network namespace without the Go module proxy. Idempotent:
# rebuilt only when its sources are newer than the binary.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/tests/go/egressclient"
TARGET="$REPO/.tools/bin/egressclient"

if [[ -x "$TARGET" && -z "$(find "$SRC" -newer "$TARGET" -type f)" ]]; then
  echo "egressclient up to date at $TARGET"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: go is not installed (needed for the Go server SDK client of the worker tests)" >&2
  exit 1
fi
mkdir -p "$(dirname "$TARGET")"
cd "$SRC"
go mod download
go build -o "$TARGET.tmp" .
mv -f "$TARGET.tmp" "$TARGET"
echo "built $TARGET"
