#!/usr/bin/env python3
"""Time `aiinfra health scan-log` over a large mixed kernel log built from the recorded
fixtures (tests/fixtures/kernlog/*.log, repeated and interleaved in blocks).

Builds the log once (default 1,000,000 lines) in a temporary directory, then runs the real
command as a whole process --runs times and reports the wall time (median, min, max) and
the finding counts of the last run. Standard library only. Usage:
scripts/bench/scan_log.py [--lines 1000000] [--runs 3] [--target-s 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "kernlog"


def aiinfra_command() -> str:
    beside = Path(sys.executable).parent / "aiinfra"
    found = str(beside) if beside.exists() else shutil.which("aiinfra")
    if found is None:
        sys.exit("aiinfra is not installed next to this python nor on PATH")
    return found


def mixed_log(lines: int) -> str:
    """The fixtures' lines, file after file, repeated until ``lines`` lines."""
    blocks = [p.read_text().splitlines() for p in sorted(FIXTURES.glob("*.log"))]
    pool = [line for block in blocks for line in block]
    out: list[str] = []
    while len(out) < lines:
        out.extend(pool[: lines - len(out)])
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--target-s", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mixed-kernel.log"
        path.write_text(mixed_log(args.lines))
        argv = [aiinfra_command(), "health", "scan-log", str(path), "--json"]
        walls, report = [], {}
        for _ in range(args.runs):
            start = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            walls.append(time.perf_counter() - start)
            report = json.loads(proc.stdout)
        size = path.stat().st_size
    events = sum(f["count"] for f in report["findings"])
    print(f"command: aiinfra health scan-log <{args.lines} lines, {size / 1e6:.1f} MB> --json")
    print(f"status {report['status']}: {len(report['findings'])} findings, {events} events")
    print(f"wall: median {statistics.median(walls):.3f} s (min {min(walls):.3f}, "
          f"max {max(walls):.3f}) over {args.runs} runs")
    verdict = "within" if statistics.median(walls) <= args.target_s else "OVER"
    print(f"median is {verdict} the {args.target_s:g} s target")


if __name__ == "__main__":
    main()
