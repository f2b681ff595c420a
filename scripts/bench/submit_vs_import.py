#!/usr/bin/env python3
"""Time `aiinfra submit` (render + real sbatch) against `python -c "import click, jinja2"`.

The two commands run in turn (A B A B ...) after a warm-up, each as a whole process, and
the ratio is taken pair by pair so that drift of the machine cancels out. Needs the dev
cluster (scripts/dev-cluster.sh up); the jobs it submits run `true` and are cancelled
at the end. Usage: scripts/bench/submit_vs_import.py [--runs 15] [--dry-run]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = 'name = "bench-submit"\nlauncher = "srun"\ncommand = ["true"]\ntime = "1"\n'


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--dry-run", action="store_true", help="time render only, no sbatch")
    args = parser.parse_args()
    aiinfra = str(Path(sys.executable).parent / "aiinfra")
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "bench.toml"
        job.write_text(JOB)
        submit = [aiinfra, "submit", str(job), "--profile", "local", "--set", f"log_dir={tmp}",
                  "--set", "sbatch.hold=true"]  # held: no job competes for the CPUs
        if args.dry_run:
            submit.append("--dry-run")
        baseline = [sys.executable, "-c", "import click, jinja2"]
        job_ids: list[str] = []
        a_times, b_times, ratios = [], [], []
        try:
            for i in range(args.runs + 1):
                a, out = timed(submit)
                b, _ = timed(baseline)
                if not args.dry_run:
                    job_ids.append(out.strip())
                if i:  # the first pair warms caches and is not counted
                    a_times.append(a)
                    b_times.append(b)
                    ratios.append(a / b)
        finally:
            if job_ids:
                subprocess.run(["scancel", *job_ids], check=False)
    what = "submit --dry-run" if args.dry_run else "submit (render + sbatch)"
    print(f"runs: {args.runs} pairs after 1 warm-up pair")
    print(f"A  aiinfra {what}: median {statistics.median(a_times) * 1000:.1f} ms "
          f"(min {min(a_times) * 1000:.1f}, max {max(a_times) * 1000:.1f})")
    print(f"B  python -c 'import click, jinja2': median {statistics.median(b_times) * 1000:.1f} ms "
          f"(min {min(b_times) * 1000:.1f}, max {max(b_times) * 1000:.1f})")
    print(f"A/B pairwise ratio: median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
