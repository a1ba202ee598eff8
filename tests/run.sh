#!/usr/bin/env bash
# Runs every test: makes a venv in .venv-test with the tool and pytest, then runs pytest.
# Works on a fresh machine of this kind (needs python3 >= 3.10, git, unshare and ip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-test/bin/python ]; then
  "$PY" -m venv .venv-test
fi
.venv-test/bin/python -m pip install --quiet --upgrade pip
.venv-test/bin/python -m pip install --quiet -e '.[test]'
# uv and cosybuild/cosyinstall come from the venv.
export PATH="$PWD/.venv-test/bin:$PATH"
exec .venv-test/bin/python -m pytest "$@"
