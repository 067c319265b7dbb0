#!/usr/bin/env bash
# The notebooks, run against $LOYAL_HOME (default ./.loyal: run `bash scripts/run.sh` first) and written with their
# tables and plots to notebooks/out/*.ipynb (git-ignored). Arguments go to scripts/notebooks.py (names, --output).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec python scripts/notebooks.py "$@"   # setup.sh left us at the repository root
