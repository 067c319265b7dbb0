#!/usr/bin/env bash
# The tests, on a machine that has only Python 3.11. Extra arguments go to pytest (e.g. -m slow).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The architecture first: layers only point down, the service loads no training pipeline (pyproject.toml).
lint-imports --no-cache
exec python -m pytest "$@"
