#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, types, the docs site, then pytest against real
# servers started by the tests. Integration tests fail, never skip, when a server is missing.
# pytest runs in a network namespace of its own (lo + a veth address that exists only there):
# every test packet stays on this machine; no namespace here fails the run (exit 125).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"  # a broken link or reference fails
set +e
.venv/bin/python -m pyegress.testing.netns -- .venv/bin/pytest -q -ra -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
# The unit tests again under Python 3.10 and 3.13, the oldest and newest the package claims.
if ! bash scripts/test-pythons.sh; then
  [[ $rc -ne 0 ]] || rc=1
fi
exit $rc
