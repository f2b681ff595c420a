"""The rank program of ``aiinfra doctor``'s probe jobs: ``python -m aiinfra.launcher.probe``.

Every rank prints ``doctor rank=R ready``, then waits for the stop that the supervisor
passes on (its stop file, or a signal), prints when it saw it, and rank 0 saves a
checkpoint of ``--checkpoint-mb`` MiB and prints how long the save took. An attempt that
finds a checkpoint already there (the job was requeued) prints ``resumed`` and ends: that
attempt is the proof that the job's own ``scontrol requeue`` works. Imports neither torch
nor mpi4py: the rank comes from the launcher's environment.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import checkpoint as ckpt

RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def rank(environ: dict[str, str]) -> int:
    """This process's rank under torchrun, mpirun or srun."""
    return next((int(environ[v]) for v in RANK_VARIABLES if environ.get(v, "").isdigit()), 0)


def wait_for_stop(timeout_s: float) -> float | None:
    """The time the stop was seen, or None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ckpt.stop_requested():
            return time.time()
        time.sleep(0.05)
    return None


def save(megabytes: int) -> float:
    start = time.monotonic()
    ckpt.save(bytes(megabytes << 20), step=1)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiinfra.launcher.probe")
    parser.add_argument("--checkpoint-mb", type=int, default=16)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    me = rank(dict(os.environ))
    if ckpt.latest_step() is not None:
        print(f"doctor rank={me} resumed", flush=True)
        return 0
    ckpt.install_signal_handlers()
    print(f"doctor rank={me} ready t={time.time():.3f}", flush=True)
    seen = wait_for_stop(args.timeout_s)
    if seen is None:
        print(f"doctor rank={me} no stop within {args.timeout_s:g} s", flush=True)
        return 1
    print(f"doctor rank={me} stop t={seen:.3f} signal={ckpt.stop_signal()}", flush=True)
    if me == 0:
        print(f"doctor rank=0 saved_mb={args.checkpoint_mb} "
              f"save_s={save(args.checkpoint_mb):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
