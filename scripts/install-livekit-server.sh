#!/usr/bin/env bash
# Install the pinned livekit-server into <repo>/.tools/bin/livekit-server (idempotent).
#
# Reuses an existing binary of the right version (already installed, or /root/go/bin/server
# / $LIVEKIT_SERVER_PREBUILT) before falling back to `go install`.
#
# With --latest, instead build the newest release the Go module proxy lists into
# .tools/bin/livekit-server-latest (the worker tests run against it with
# PYEGRESS_LATEST_SERVER=1). It is built inside the module's own source, so its go.mod `replace`
# directives apply (`go install pkg@version` refuses them); since v1.13.6 they name LiveKit's
# pion forks (github.com/livekit/webrtc-pion, dtls, ice), which the proxy must serve too.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$REPO/.tools/bin"

if [[ "${1:-}" == "--latest" ]]; then
  MODULE="github.com/livekit/livekit-server"
  LATEST="$(go list -m -versions "$MODULE" | tr ' ' '\n' | tail -1)"
  TARGET="$BIN_DIR/livekit-server-latest"
  if [[ -x "$TARGET" ]] && "$TARGET" --version 2>/dev/null | grep -q "version ${LATEST#v}\b"; then
    echo "livekit-server ${LATEST} already installed at $TARGET"
    exit 0
  fi
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  DIR="$(go mod download -json "$MODULE@$LATEST" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  cp -r "$DIR" "$WORK/src" && chmod -R u+w "$WORK/src"
  mkdir -p "$BIN_DIR"
  echo "building livekit-server ${LATEST} from its module source (takes a few minutes)..."
  (cd "$WORK/src" && go build -o "$TARGET.tmp" ./cmd/server)
  mv -f "$TARGET.tmp" "$TARGET"
  echo "installed: $("$TARGET" --version)"
  exit 0
fi

VERSION="1.13.5"
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
