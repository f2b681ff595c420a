"""A tiny deterministic data-parallel "training" over mpi4py, resumable: no torch, no numpy.

The mpirun twin of examples/train_ddp.py: each rank computes the gradient of a linear
model on its own deterministic batch, the ranks average it (gathered and summed in rank
order, so the result does not depend on the reduction order), and every rank applies it.
Flags and output lines are train_ddp.py's: ``--steps``, ``--step-seconds``,
``--checkpoint-every`` (0: no checkpoints), ``--checkpoint-dir`` (default
``$AIINFRA_CHECKPOINT_DIR``); ``resumed_from_step=N``, ``stopped_at_step=N`` and
``final_checksum=<hex>`` on rank 0. Checkpoints are pickled by rank 0 (torch is not
imported) and every rank resumes from the step rank 0 chose.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
import time
from typing import Any

from mpi4py import MPI

from aiinfra import checkpoint as ckpt

DIM = 8
LR = 0.05


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=None)
    return parser.parse_args()


def batch(rank: int, step: int, seed: int) -> list[tuple[list[float], float]]:
    gen = random.Random(seed * 100_003 + step * 101 + rank)
    rows = [[gen.gauss(0.0, 1.0) for _ in range(DIM)] for _ in range(16)]
    return [(x, sum(x) / DIM) for x in rows]


def gradient(weights: list[float], rows: list[tuple[list[float], float]]) -> list[float]:
    grad = [0.0] * DIM
    for x, y in rows:
        err = sum(w * v for w, v in zip(weights, x, strict=True)) - y
        for i, v in enumerate(x):
            grad[i] += 2.0 * err * v / len(rows)
    return grad


def step_once(comm: Any, weights: list[float], rank: int, step: int,
              seed: int) -> list[float]:
    grads = comm.allgather(gradient(weights, batch(rank, step, seed)))
    mean = [sum(g[i] for g in grads) / len(grads) for i in range(DIM)]
    return [w - LR * g for w, g in zip(weights, mean, strict=True)]


def checksum(weights: list[float]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(weights)}d", *weights)).hexdigest()


def resume(args: argparse.Namespace, size: int) -> tuple[int, list[float]]:
    fresh = [0.0] * DIM
    if not args.checkpoint_every:
        return 0, fresh
    state: dict[str, Any] | None = ckpt.load_latest(default=None, directory=args.checkpoint_dir)
    if state is None:
        return 0, fresh
    if state["config"] != {"seed": args.seed, "size": size}:
        raise SystemExit(f"checkpoint made with {state['config']}: use another directory")
    return int(state["step"]), list(state["weights"])


def main() -> None:
    args = parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    start, weights = resume(args, size)
    if rank == 0 and start:
        print(f"resumed_from_step={start}", flush=True)
    done = start
    for step in range(start, args.steps):
        weights = step_once(comm, weights, rank, step, args.seed)
        time.sleep(args.step_seconds)
        done = step + 1
        if args.checkpoint_every and (done % args.checkpoint_every == 0
                                      or ckpt.stop_requested()):
            state = {"weights": weights, "step": done, "config": {"seed": args.seed,
                                                                  "size": size}}
            ckpt.save(state, step=done, directory=args.checkpoint_dir)
            if rank == 0:
                print(f"saved_checkpoint_step={done} t={time.time():.3f}", flush=True)
            if ckpt.stop_requested():
                break
    if rank == 0 and done < args.steps:
        print(f"stopped_at_step={done} signal={ckpt.stop_signal()} t={time.time():.3f}",
              flush=True)
    elif rank == 0:
        print(f"final_checksum={checksum(weights)}", flush=True)


if __name__ == "__main__":
    main()
