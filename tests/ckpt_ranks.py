"""Run by tests/test_checkpoint_dist.py under torchrun (2 ranks, gloo) or mpirun (mpi4py).

Each rank writes ``key=value`` lines to ``ROOT/rankR.out``; the test compares the ranks.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from aiinfra import checkpoint as ckpt


OUT: list[Path] = []


def say(rank: int, key: str, value: object) -> None:
    with (OUT[0] / f"rank{rank}.out").open("a") as handle:
        handle.write(f"{key}={value}\n")


def stop_agreement(rank: int) -> None:
    """Only rank 1 gets SIGUSR2, at iteration 3: every rank must stop at iteration 3."""
    for iteration in range(10):
        if rank == 1 and iteration == 3:
            os.kill(os.getpid(), signal.SIGUSR2)
        if ckpt.stop_requested():
            say(rank, "stopped_at", iteration)
            say(rank, "own_signal", ckpt.stop_signal())
            return
    say(rank, "stopped_at", "never")


def replicated(rank: int, root: Path) -> None:
    """Every rank passes its own state; rank 0's is what lands, and all see it at once."""
    shared = root / "shared"
    ckpt.save({"writer": rank, "step": 5}, 5, directory=shared)
    say(rank, "latest_after_save", ckpt.latest_step(shared))
    say(rank, "loaded_writer", ckpt.load_latest(directory=shared)["writer"])
    # Per-rank directories that disagree: every rank must load the step rank 0 chose.
    own = root / f"rank{rank}"
    ckpt.save({"step": 5}, 5, directory=own)  # written by rank 0 only: into rank0/
    if rank == 1:  # rank 1's own directory, by hand: steps 5 and 7
        from aiinfra.launcher import checkpoint as impl

        own.mkdir()
        for step in (5, 7):
            impl._write_marker(own, impl._save_file({"step": step}, step, own))
    say(rank, "own_latest", ckpt.latest_step(own))
    say(rank, "resumed", ckpt.load_latest(directory=own)["step"])


def sharded(rank: int, root: Path) -> None:
    """A DTensor sharded over the two ranks goes through a DCP directory and back."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    full = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    state = {"w": distribute_tensor(full, mesh, [Shard(0)])}
    ckpt.save(state, 3, directory=root / "dcp", sharded=True)
    into = {"w": distribute_tensor(torch.zeros(4, 2), mesh, [Shard(0)])}
    loaded = ckpt.load_latest(directory=root / "dcp", into=into)
    say(rank, "sharded_equal", bool(torch.equal(loaded["w"].full_tensor(), full)))
    say(rank, "local_rows", loaded["w"].to_local().shape[0])
    say(rank, "dcp_latest", ckpt.latest_step(root / "dcp"))


def torch_main(root: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    replicated(rank, root)
    sharded(rank, root)
    stop_agreement(rank)
    dist.barrier()
    dist.destroy_process_group()


def mpi_main(root: Path) -> None:
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    ckpt.save({"writer": rank, "step": 2}, 2, directory=root / "shared")
    say(rank, "loaded_writer", ckpt.load_latest(directory=root / "shared")["writer"])
    say(rank, "format", sorted(p.suffix for p in (root / "shared").iterdir()))
    stop_agreement(rank)
    say(rank, "torch_imported", "torch" in sys.modules)


if __name__ == "__main__":
    OUT.append(Path(sys.argv[2]))
    (torch_main if sys.argv[1] == "torch" else mpi_main)(Path(sys.argv[2]))
