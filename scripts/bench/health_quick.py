#!/usr/bin/env python3
"""Time `aiinfra health run --tier quick` as a whole process, and each check inside it.

One warm-up run, then --runs timed runs (each a fresh process, as Slurm's prolog or the
preflight would start it): wall-clock median/min/max, and each check's duration_s from
the --json report (median over the runs). Standard library only; runs on any node, no
Slurm needed. Usage: scripts/bench/health_quick.py [--runs 10] [--profile local]
[--tier quick] [--target-s 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def aiinfra_command() -> str:
    """The console script next to this interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "aiinfra"
    found = str(beside) if beside.exists() else shutil.which("aiinfra")
    if found is None:
        sys.exit("aiinfra is not installed next to this python nor on PATH")
    return found


def run_once(argv: list[str]) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one whole process and its JSON report (the exit code is the worst
    status, so non-zero is normal on a node with UNKNOWN checks)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode} without a JSON report:\n"
                 f"{proc.stderr}")
    return wall, report


def spread(values: list[float], scale: float = 1.0, unit: str = "s", digits: int = 3) -> str:
    return (f"median {statistics.median(values) * scale:.{digits}f} {unit} "
            f"(min {min(values) * scale:.{digits}f}, max {max(values) * scale:.{digits}f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs after one warm-up")
    parser.add_argument("--profile", default="local")
    parser.add_argument("--tier", default="quick", choices=["quick", "standard", "deep"])
    parser.add_argument("--target-s", type=float, default=3.0,
                        help="the budget per node the median is compared with")
    args = parser.parse_args()
    argv = [aiinfra_command(), "health", "run", "--tier", args.tier, "--profile", args.profile,
            "--json"]
    run_once(argv)  # warm-up: bytecode and page caches
    walls: list[float] = []
    per_check: dict[str, list[float]] = {}
    report: dict[str, Any] = {}
    for _ in range(args.runs):
        wall, report = run_once(argv)
        walls.append(wall)
        for chk in report["checks"]:
            per_check.setdefault(chk["name"], []).append(chk["duration_s"])
    print(f"command: {' '.join(argv)}")
    print(f"node {report['node']}: status {report['status']}, {len(report['checks'])} checks; "
          f"{args.runs} runs after 1 warm-up")
    print(f"whole process: {spread(walls)}")
    print("per check duration_s (median over runs, includes collecting its facts on first use):")
    for name, values in per_check.items():
        print(f"  {name:<20} {spread(values, 1000, 'ms', 2)}")
    verdict = "within" if statistics.median(walls) <= args.target_s else "OVER"
    print(f"median {statistics.median(walls):.3f} s is {verdict} the {args.target_s:g} s target")


if __name__ == "__main__":
    main()
