#!/usr/bin/env bash
# The test command: set up, start the real dev cluster, run every test.
# Run as root on Debian. Extra arguments go to pytest (e.g. -k render).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/dev-cluster.sh up
# The installed console script's directory first: jobs find python3 and torchrun there.
export PATH="$PWD/${AIINFRA_VENV:-.venv}/bin:$PATH"
exec pytest "$@"
