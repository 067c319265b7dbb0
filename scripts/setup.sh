# Sourced by run.sh and test.sh: make ./.venv with Python 3.11 and install Loyal from the lock, once.
# A stamp of the lock and pyproject.toml skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PYTHON=$candidate; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "loyal: Python 3.11 is needed (none found as python3.11, python3 or python); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

VENV=.venv
stamp=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.loyal-installed" 2>/dev/null)" != "$stamp" ]; then
  echo "loyal: installing into $VENV (a few minutes the first time)" >&2
  "$PYTHON" -m venv "$VENV"
  # torch is pinned to 2.13.0 in the lock: that is the CPU build; anything looser pulls CUDA packages.
  # -qq: errors only (a machine's pip configuration may name index folders it lacks, and pip warns of each).
  "$VENV/bin/python" -m pip install -qq --upgrade "pip==25.3"
  "$VENV/bin/python" -m pip install -qq -c requirements.lock -e ".[dev]"
  echo "$stamp" > "$VENV/.loyal-installed"
fi
export PATH="$PWD/$VENV/bin:$PATH"
