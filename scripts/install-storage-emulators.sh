#!/usr/bin/env bash
# Install the storage emulators the tests start (idempotent), into <repo>/.tools:
#   MinIO (S3)            .tools/bin/minio            go install (builds in ~3-5 min)
#   fake-gcs-server (GCS) .tools/bin/fake-gcs-server  go install
#   Azurite (Azure Blob)  .tools/node/node_modules/.bin/azurite-blob   npm
# Needs go and node/npm. Exits non-zero when anything is missing afterwards.
set -euo pipefail

MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
FAKE_GCS_VERSION="v1.56.1"
AZURITE_VERSION="3.35.0"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$REPO/.tools/bin"
NODE_DIR="$REPO/.tools/node"
mkdir -p "$BIN_DIR" "$NODE_DIR"

go_installed() {  # binary module version
  [[ -x "$1" ]] && command -v go >/dev/null 2>&1 && go version -m "$1" 2>/dev/null | grep -q "[[:space:]]$2[[:space:]]$3[[:space:]]"
}

go_install() {  # name module version
  local target="$BIN_DIR/$1"
  if go_installed "$target" "$2" "$3"; then
    echo "$1 $3 already installed at $target"
    return
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "error: go is needed to install $1" >&2
    exit 1
  fi
  echo "installing $1 $3 with go install..."
  GOBIN="$BIN_DIR" go install "$2@$3"
  go_installed "$target" "$2" "$3" || { echo "error: $target was not installed" >&2; exit 1; }
}

go_install minio github.com/minio/minio "$MINIO_VERSION"
go_install fake-gcs-server github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION"

AZURITE_BIN="$NODE_DIR/node_modules/.bin/azurite-blob"
have_azurite() {
  [[ -x "$AZURITE_BIN" ]] && [[ "$(node -p "require('$NODE_DIR/node_modules/azurite/package.json').version" 2>/dev/null)" == "$AZURITE_VERSION" ]]
}
if have_azurite; then
  echo "azurite $AZURITE_VERSION already installed at $AZURITE_BIN"
else
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is needed to install azurite" >&2
    exit 1
  fi
  echo "installing azurite $AZURITE_VERSION with npm..."
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --save-exact "azurite@$AZURITE_VERSION")
  have_azurite || { echo "error: azurite was not installed" >&2; exit 1; }
fi
echo "storage emulators installed in $REPO/.tools"
