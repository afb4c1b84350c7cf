#!/usr/bin/env bash
# Install the pinned livekit-server into <repo>/.tools/bin/livekit-server (idempotent).
#
# Reuses an existing binary of the right version (already installed, or /root/go/bin/server
# / $LIVEKIT_SERVER_PREBUILT) before falling back to `go install`.
set -euo pipefail

VERSION="1.13.5"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$REPO/.tools/bin"
TARGET="$BIN_DIR/livekit-server"
PREBUILT="${LIVEKIT_SERVER_PREBUILT:-/root/go/bin/server}"

has_version() {
  [[ -x "$1" ]] && "$1" --version 2>/dev/null | grep -q "version ${VERSION}\b"
}

if has_version "$TARGET"; then
  echo "livekit-server ${VERSION} already installed at $TARGET"
  exit 0
fi

mkdir -p "$BIN_DIR"

if has_version "$PREBUILT"; then
  install -m 0755 "$PREBUILT" "$TARGET.tmp"
  mv -f "$TARGET.tmp" "$TARGET"
  echo "copied livekit-server ${VERSION} from $PREBUILT to $TARGET"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "error: go is not installed and no prebuilt livekit-server ${VERSION} found" >&2
    exit 1
  fi
  echo "building livekit-server ${VERSION} with go install (takes a few minutes)..."
  GOBIN="$BIN_DIR" go install "github.com/livekit/livekit-server/cmd/server@v${VERSION}"
  mv -f "$BIN_DIR/server" "$TARGET"
fi

if ! has_version "$TARGET"; then
  echo "error: $TARGET does not report version ${VERSION}" >&2
  exit 1
fi
echo "installed: $("$TARGET" --version)"
