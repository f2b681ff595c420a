#!/usr/bin/env bash
# The test command: set up, start the real dev cluster, run every test.
# Run as root on Debian. With arguments, they go to one pytest run (e.g. -k render).
# Without: every test that leaves the cluster's nodes alone runs side by side
# (AIINFRA_TEST_WORKERS processes, default 4), then the tests marked `exclusive`
# (drain, preempt, kill slurmd) run one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/dev-cluster.sh up
# The installed console script's directory first: jobs find python3 and torchrun there.
export PATH="$PWD/${AIINFRA_VENV:-.venv}/bin:$PATH"
if (($#)); then exec pytest "$@"; fi
rc=0
pytest -p no:cacheprovider -n "${AIINFRA_TEST_WORKERS:-4}" -m "not exclusive" || rc=$?
status=0
pytest -p no:cacheprovider -m exclusive || status=$?
# 5: no test is marked exclusive (pytest's "nothing collected").
if ((status != 0 && status != 5 && rc == 0)); then rc=$status; fi
exit "$rc"
