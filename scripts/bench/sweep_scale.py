#!/usr/bin/env python3
"""Sweep a 64-node dev cluster: wall time, sbatch calls, per-node cost.

Starts a separate dev-cluster instance (AIINFRA_DEV_CLUSTER_INSTANCE, default 9) with
--nodes slurmd in a short state dir under /tmp (slurmstepd's socket paths must stay under
108 bytes), runs `aiinfra sweep --profile local` --runs times over it with
max_nodes_per_job=--per-job, prints each run and a summary (JSON with --json), and stops
that instance at the end, even on failure. The default cluster and other instances are not
touched. Run as root:

    .venv/bin/python scripts/bench/sweep_scale.py [--nodes 64 --per-job 16 --runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOB_LINE = re.compile(r"^aiinfra: job \d+: \d+ on ", re.M)


def instance_env(instance: int, state: Path) -> dict[str, str]:
    env = dict(os.environ, AIINFRA_DEV_CLUSTER_INSTANCE=str(instance),
               AIINFRA_DEV_CLUSTER_DIR=str(state),
               SLURM_CONF=f"/etc/slurm-{instance}/slurm.conf")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def dev_cluster(env: dict[str, str], *args: str) -> float:
    start = time.monotonic()
    subprocess.run(["bash", str(REPO / "scripts" / "dev-cluster.sh"), *args], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.monotonic() - start


@contextmanager
def cluster(instance: int, nodes: int) -> Iterator[tuple[dict[str, str], float]]:
    state = Path(tempfile.mkdtemp(prefix=f"s{instance}-", dir="/tmp"))
    env = instance_env(instance, state)
    try:
        yield env, dev_cluster(env, "up", "--nodes", str(nodes))
    finally:
        dev_cluster(env, "down", "--nodes", str(nodes))


def sweep(env: dict[str, str], state: Path, per_job: int) -> dict[str, object]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "aiinfra", "sweep", "--profile", "local",
                           "--state-dir", str(state), "--set", f"max_nodes_per_job={per_job}",
                           "--json"], env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - start
    summary = json.loads(proc.stdout)
    statuses = Counter(str(n["status"]) for n in summary["nodes_detail"].values())
    return {"exit": proc.returncode, "wall_s": round(wall, 2), "nodes": summary["nodes"],
            "sbatch_calls": len(JOB_LINE.findall(proc.stderr)), "statuses": dict(statuses),
            "drained": summary["drained"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--per-job", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instance", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with cluster(args.instance, args.nodes) as (env, up_s):
        state = Path(tempfile.mkdtemp(prefix="sweep-", dir="/tmp"))
        runs = [sweep(env, state, args.per_job) for _ in range(args.runs)]
    walls = [float(str(r["wall_s"])) for r in runs]
    median = statistics.median(walls)
    result = {"nodes": args.nodes, "per_job": args.per_job, "cluster_up_s": round(up_s, 1),
              "runs": runs, "median_wall_s": median,
              "median_per_node_ms": round(1000 * median / args.nodes, 1)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"cluster of {args.nodes} nodes up in {up_s:.1f} s")
    for i, run in enumerate(runs):
        print(f"sweep {i}: {run['wall_s']} s, {run['sbatch_calls']} sbatch calls, "
              f"exit {run['exit']}, {run['statuses']}, drained {run['drained']}")
    print(f"median {median:.2f} s, {result['median_per_node_ms']} ms per node")


if __name__ == "__main__":
    main()
