"""A tiny deterministic DDP training run on CPU (gloo), launched by torchrun.

Prints ``world_size=N`` on rank 0 at the start and ``final_checksum=<hex>`` (sha256 of the
final weights) at the end. The result depends only on --steps, --seed and the world size,
so one multi-node run and one single-machine run of the same world size agree bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct

import torch
import torch.distributed as dist
from torch import nn


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def batch(rank: int, step: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 100_003 + step * 101 + rank)
    x = torch.randn(32, 8, generator=gen)
    y = x.sum(dim=1, keepdim=True).sin()
    return x, y


def checksum(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        values = tensor.detach().float().flatten().tolist()
        digest.update(struct.pack(f"<{len(values)}f", *values))
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print(f"world_size={world}", flush=True)
    print(f"rank={rank} host={os.environ.get('SLURMD_NODENAME', '?')}", flush=True)
    model = nn.parallel.DistributedDataParallel(make_model(args.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(args.steps):
        x, y = batch(rank, step, args.seed)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    if rank == 0:
        print(f"final_loss={loss.item():.6f}", flush=True)
        print(f"final_checksum={checksum(model.module)}", flush=True)
    # Drop DDP (and its Reducer) while the process group still lives, then shut the group
    # down: a Reducer freed at interpreter exit joins gloo's thread while holding the GIL,
    # which that thread may need, and the process hangs.
    dist.barrier()
    del model, optimizer
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
