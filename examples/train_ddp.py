"""A tiny deterministic DDP training run on CPU (gloo), launched by torchrun.

Prints ``world_size=N`` on rank 0 at the start and ``final_checksum=<hex>`` (sha256 of the
final weights) at the end. The result depends only on --steps, --seed and the world size,
so one multi-node run and one single-machine run of the same world size agree bit for bit.

With ``--checkpoint-every K`` it checkpoints through ``aiinfra.checkpoint`` (directory:
``--checkpoint-dir`` or ``$AIINFRA_CHECKPOINT_DIR``) every K steps and when asked to stop
(SIGTERM, SIGUSR2 or the supervisor's stop file), then exits 0 after printing
``stopped_at_step=N``; the next run resumes (``resumed_from_step=N``) and ends with the
same ``final_checksum`` as an uninterrupted run: data and weights depend only on the step,
and the RNG state travels in the checkpoint. ``--step-seconds S`` makes each step last S
seconds, so a run can be interrupted for real. Without --checkpoint-every (the default)
nothing is read or written.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from aiinfra import checkpoint as ckpt


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-seconds", type=float, default=0.0,
                        help="sleep this long in every step (a run long enough to interrupt)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="checkpoint every K steps and on a stop request; 0: never")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="default: $AIINFRA_CHECKPOINT_DIR")
    return parser.parse_args()


def config(args: argparse.Namespace, world: int) -> dict[str, int]:
    """What a checkpoint must agree with to be resumed by this run."""
    return {"seed": args.seed, "world_size": world}


def resume(args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer,
           world: int) -> int:
    """Load the newest checkpoint into ``model`` and ``optimizer``; the step to start at."""
    if not args.checkpoint_every:
        return 0
    state: dict[str, Any] | None = ckpt.load_latest(default=None, directory=args.checkpoint_dir)
    if state is None:
        return 0
    if state["config"] != config(args, world):
        raise SystemExit(f"checkpoint of step {state['step']} was made with {state['config']}, "
                         f"this run has {config(args, world)}: use another checkpoint directory")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    torch.set_rng_state(state["rng"])
    step: int = state["step"]
    return step


def save(args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer,
         world: int, step: int) -> None:
    state = {"model": model.state_dict(), "optim": optimizer.state_dict(),
             "rng": torch.get_rng_state(), "step": step, "config": config(args, world)}
    ckpt.save(state, step=step, directory=args.checkpoint_dir)


def train(args: argparse.Namespace, ddp: nn.Module, optimizer: torch.optim.Optimizer,
          rank: int, start: int) -> tuple[int, float]:
    """Steps ``start``..``--steps``; returns the steps done and the last loss."""
    every, loss = args.checkpoint_every, float("nan")
    for step in range(start, args.steps):
        x, y = batch(rank, step, args.seed)
        optimizer.zero_grad()
        out = nn.functional.mse_loss(ddp(x), y)
        out.backward()
        optimizer.step()
        loss = out.item()
        time.sleep(args.step_seconds)
        done = step + 1
        if every and (done % every == 0 or ckpt.stop_requested()):
            save(args, ddp.module, optimizer, dist.get_world_size(), done)
            if rank == 0:
                print(f"saved_checkpoint_step={done} t={time.time():.3f}", flush=True)
            if ckpt.stop_requested():
                return done, loss
    return args.steps, loss


def main() -> None:
    args = parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print(f"world_size={world}", flush=True)
    print(f"rank={rank} host={os.environ.get('SLURMD_NODENAME', '?')} pid={os.getpid()}",
          flush=True)
    model = nn.parallel.DistributedDataParallel(make_model(args.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    start = resume(args, model.module, optimizer, world)
    if rank == 0 and start:
        print(f"resumed_from_step={start}", flush=True)
    done, loss = train(args, model, optimizer, rank, start)
    if rank == 0 and done < args.steps:
        print(f"stopped_at_step={done} signal={ckpt.stop_signal()} t={time.time():.3f}",
              flush=True)
    elif rank == 0:
        print(f"final_loss={loss:.6f}", flush=True)
        print(f"final_checksum={checksum(model.module)}", flush=True)
    # Drop DDP (and its Reducer) while the process group still lives, then shut the group
    # down: a Reducer freed at interpreter exit joins gloo's thread while holding the GIL,
    # which that thread may need, and the process hangs.
    dist.barrier()
    del model, optimizer
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
