#!/usr/bin/env bash
# Build the offer service's Bento: Loyal's wheel into dist/, then `bentoml build` from bentofile.yaml.
# The Bento lands in $BENTOML_HOME (default ~/bentoml). No Docker engine is needed until `bentoml containerize`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
rm -rf dist
python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .
exec bentoml build --output tag "$@"
