#!/usr/bin/env bash
# Set up, start the dev cluster, run the 2-node DDP example and show its result.
# Run as root on Debian, from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/dev-cluster.sh up
export PATH="$PWD/${AIINFRA_VENV:-.venv}/bin:$PATH"

job=$(aiinfra submit examples/train_ddp.toml --profile local)
echo "submitted job $job; waiting for it to finish"
for _ in $(seq 1 300); do
  state=$(sacct --noheader --parsable2 --allocations --jobs "$job" --format=State | head -n 1)
  case "$state" in
    COMPLETED|FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;;
  esac
  sleep 1
done
sacct --allocations --jobs "$job" --format=JobID,JobName,State,ExitCode,NNodes,NodeList,Elapsed
aiinfra status "$job"
grep -hE 'world_size=|final_checksum=' logs/train-ddp-"$job".attempt0.log
[[ "$state" == COMPLETED ]]
