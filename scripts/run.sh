#!/usr/bin/env bash
# The main job, end to end on the default data, on a machine that has only Python 3.11.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec loyal run "$@"
