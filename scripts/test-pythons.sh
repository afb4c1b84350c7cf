#!/usr/bin/env bash
# Run the unit tests (pytest -m "not integration") under the oldest and the newest Python the
# package claims (3.10 and 3.13), each in its own venv (.venv-py310, .venv-py313), so that
# `requires-python >= 3.10` is tested and not only the Python of .venv.
#
# The versions are $TEST_PYTHONS ("3.10 3.13" by default), found in pyenv
# ($PYENV_ROOT/versions/3.10.*, then `pyenv prefix 3.10`) or as python3.10 on PATH. A missing
# one fails the run under CI=true; elsewhere it is reported loudly and the others run.
# The servers' binaries are pointed at a path that does not exist, so a unit test that tries
# to start one fails instead of passing here by luck: such a test must be marked integration.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
read -r -a VERSIONS <<<"${TEST_PYTHONS:-3.10 3.13}"

find_python() {
  local ver=$1 root="${PYENV_ROOT:-$HOME/.pyenv}" prefix c
  for c in $(ls -d "$root/versions/$ver".* 2>/dev/null | sort -V -r); do
    [[ -x "$c/bin/python$ver" ]] && { echo "$c/bin/python$ver"; return; }
  done
  if command -v pyenv >/dev/null && prefix=$(pyenv prefix "$ver" 2>/dev/null); then
    [[ -x "$prefix/bin/python$ver" ]] && { echo "$prefix/bin/python$ver"; return; }
  fi
  command -v "python$ver" || return 1
}

NO_SERVER=/nonexistent/unit-tests-start-no-server
failed=() missing=()
for ver in "${VERSIONS[@]}"; do
  if ! py=$(find_python "$ver"); then
    echo "Python $ver not found (pyenv install $ver, or put python$ver on PATH)" >&2
    missing+=("$ver")
    continue
  fi
  venv=".venv-py${ver//./}"
  echo "== Python $ver ($py) in $venv"
  [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
  # Reinstall only when the dependencies may have changed (the install is editable).
  stamp="$venv/.pyproject.sha256"
  if ! sha256sum --status -c "$stamp" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e '.[dev,all]'
    sha256sum pyproject.toml >"$stamp"
  fi
  set +e
  env -u PYTHONPATH LIVEKIT_SERVER_BIN=$NO_SERVER MINIO_BIN=$NO_SERVER FAKE_GCS_SERVER_BIN=$NO_SERVER \
    AZURITE_BLOB_BIN=$NO_SERVER PYEGRESS_NGINX=$NO_SERVER "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not integration"
  rc=$?
  set -e
  [[ $rc -eq 0 ]] || failed+=("$ver (pytest exit $rc)")
done

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "${CI:-}" == "true" ]]; then
    failed+=("${missing[@]/%/ (not installed)}")
  else
    echo "warning: unit tests NOT run under Python ${missing[*]}: not installed" >&2
  fi
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "error: unit tests failed under Python ${failed[*]}" >&2
  exit 1
fi
