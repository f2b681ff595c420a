#!/usr/bin/env python3
"""Time aiinfra.checkpoint: save (hash while writing, fsyncs, marker), discovery and load.

For each size, --runs saves of a float32 tensor of that many MiB into a fresh directory on
the file system given by --dir (default: a temporary directory; point it at the real
checkpoint file system, page cache and all, to learn what a job will see), then
`latest_step(verify=True)` (re-reads and hashes the newest checkpoint), `latest_step
(verify=False)` (sizes only) and `load_latest`. Prints median/min/max per operation and
the save throughput. Usage: scripts/bench/checkpoint_save.py [--sizes-mib 1 64 256]
[--runs 5] [--dir PATH]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from aiinfra import checkpoint as ckpt


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1e3:8.1f} ms (min {min(values) * 1e3:.1f}, "
            f"max {max(values) * 1e3:.1f})")


def bench(size_mib: int, runs: int, base: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix=f"ckpt-{size_mib}M-", dir=base))
    state = {"w": torch.randn(size_mib * 2**20 // 4), "step": 0}
    steps = iter(range(10**6))
    try:
        saves = timed(lambda: ckpt.save(state, next(steps), directory=directory, keep=2), runs)
        full = timed(lambda: ckpt.latest_step(directory, verify=True), runs)
        sizes = timed(lambda: ckpt.latest_step(directory, verify=False), runs)
        loads = timed(lambda: ckpt.load_latest(directory=directory), runs)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rate = size_mib / statistics.median(saves)
    print(f"{size_mib:5d} MiB  save              {spread(saves)}  ({rate:.0f} MiB/s)")
    print(f"{size_mib:5d} MiB  latest_step hash  {spread(full)}")
    print(f"{size_mib:5d} MiB  latest_step size  {spread(sizes)}")
    print(f"{size_mib:5d} MiB  load_latest       {spread(loads)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, directory {args.dir}, {args.runs} runs each")
    for size in args.sizes_mib:
        bench(size, args.runs, args.dir)


if __name__ == "__main__":
    main()
