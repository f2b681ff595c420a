#!/usr/bin/env python3
"""Time `aiinfra report nodes` over a sweep history of 1,000,000 per-check result rows.

Builds (once, cached at --db) a history of NODES nodes x CHECKS checks x RUNS sweeps with
about 1% CRIT results, a few flapping nodes and two measured checks, then times the report
(the SQLite aggregation, pandas and the table rendering) --repeat times in this process,
after one warm-up, and prints each run and the best/median.

    .venv/bin/python scripts/bench/report_history.py [--nodes 1000 --checks 20 --runs 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from aiinfra.health.history import NodeRow, ResultRow, RunRow, connect, record
from aiinfra.health.report import nodes_report, render
from aiinfra.health.result import Status, worst

MEASURED = ("gpu.matmul", "gpu.membw")


def build(db: Path, nodes: int, checks: int, runs: int) -> None:
    rng = random.Random(7)
    names = [f"gpu{i:05d}" for i in range(nodes)]
    check_names = list(MEASURED) + [f"check.{k:02d}" for k in range(checks - len(MEASURED))]
    start = time.time() - runs * 86400
    with connect(db) as conn:
        for r in range(runs):
            node_rows, rows = [], []
            for i, node in enumerate(names):
                flappy = i % 97 == 0
                statuses = []
                for check in check_names:
                    bad = rng.random() < (0.3 if flappy else 0.0005)
                    status = Status.CRIT if bad else Status.OK
                    statuses.append(status)
                    value = (700 - (150 if i % 251 == 0 and r == runs - 1 else 0)
                             + rng.gauss(0, 5)) if check in MEASURED else None
                    rows.append(ResultRow(node, check, status, value, f"{check}: ok"))
                status = worst(statuses)
                node_rows.append(NodeRow(node, status, "drain" if status == Status.CRIT else
                                         "none", ""))
            t = start + r * 86400
            record(conn, RunRow(f"run{r:04d}", t, t + 300, "bench", "quick", Status.OK, False),
                   node_rows, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, default=Path("/tmp/aiinfra-bench-history.sqlite"))
    args = parser.parse_args()
    expected = args.nodes * args.checks * args.runs
    with connect(args.db) as conn:
        have = conn.execute("SELECT count(*) FROM results").fetchone()[0]
    if have != expected:
        args.db.unlink()
        t0 = time.perf_counter()
        build(args.db, args.nodes, args.checks, args.runs)
        print(f"built {expected:,} result rows in {time.perf_counter() - t0:.1f} s: {args.db}")
    times = []
    for i in range(args.repeat + 1):
        t0 = time.perf_counter()
        with connect(args.db) as conn:
            report = nodes_report(conn, 0)
        text = render(report, "table")
        elapsed = time.perf_counter() - t0
        if i:  # the first run warms the imports and the page cache
            times.append(elapsed)
            print(f"run {i}: {elapsed:.3f} s ({len(text):,} characters)")
    print(f"nodes report over {expected:,} result rows: best {min(times):.3f} s, "
          f"median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
