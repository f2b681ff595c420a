"""mpi4py allreduce across the allocation: every rank contributes rank + 1."""

from __future__ import annotations

import os
import socket

from mpi4py import MPI


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    total = comm.allreduce(rank + 1, op=MPI.SUM)
    nodes = comm.gather(node, root=0)
    if rank == 0:
        print(f"allreduce_sum={total} expected={size * (size + 1) // 2} size={size} "
              f"nodes={','.join(sorted(set(nodes or [])))}", flush=True)


if __name__ == "__main__":
    main()
