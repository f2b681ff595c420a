"""A tiny tensor-parallel inference server on CPU: one shard of a linear layer per node.

Started by srun on every node of the job (one task per node). Rank 0 answers HTTP on
$AIINFRA_SERVER_PORT: ``GET /health``, ``POST /v1/infer`` with ``{"input": [4 numbers]}``
(every rank computes its rows of W @ x, rank 0 gathers them) and ``POST /shutdown``
(all ranks stop and exit 0). Ranks meet at $AIINFRA_HEAD_ADDR:$AIINFRA_PORT over gloo.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import torch
import torch.distributed as dist

IN_FEATURES, OUT_FEATURES, SEED = 4, 8, 1234
STOP, INFER = 0.0, 1.0


def weights() -> torch.Tensor:
    return torch.randn(OUT_FEATURES, IN_FEATURES, generator=torch.Generator().manual_seed(SEED))


def shard(rank: int, world: int) -> torch.Tensor:
    return weights().chunk(world, dim=0)[rank]


def step(local: torch.Tensor, world: int, message: torch.Tensor) -> torch.Tensor | None:
    """One collective round: broadcast [op, x...] from rank 0, gather every shard's rows."""
    dist.broadcast(message, src=0)
    if message[0].item() == STOP:
        return None
    part = local @ message[1:]
    parts = [torch.empty_like(part) for _ in range(world)]
    dist.all_gather(parts, part)
    return torch.cat(parts)


def serve(local: torch.Tensor, world: int, port: int) -> None:
    running = [True]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                self._reply(200, {"status": "ok", "world_size": world})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")) or 0)
            if self.path == "/shutdown":
                step(local, world, torch.zeros(IN_FEATURES + 1))
                running[0] = False
                self._reply(200, {"status": "stopping"})
            elif self.path == "/v1/infer":
                x = torch.tensor(json.loads(body)["input"], dtype=torch.float32)
                out = step(local, world, torch.cat([torch.tensor([INFER]), x]))
                assert out is not None
                self._reply(200, {"output": out.tolist(), "world_size": world})
            else:
                self._reply(404, {"error": "not found"})

        def _reply(self, code: int, data: object) -> None:
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with HTTPServer(("0.0.0.0", port), Handler) as server:
        print(f"serving on port {port}, world_size={world}", flush=True)
        while running[0]:
            server.handle_request()


def main() -> None:
    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    os.environ.setdefault("MASTER_ADDR", os.environ["AIINFRA_HEAD_ADDR"])
    os.environ.setdefault("MASTER_PORT", os.environ["AIINFRA_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    local = shard(rank, world)
    if rank == 0:
        serve(local, world, int(os.environ["AIINFRA_SERVER_PORT"]))
    else:
        while step(local, world, torch.zeros(IN_FEATURES + 1)) is not None:
            pass
    dist.destroy_process_group()
    print(f"rank {rank} stopped", flush=True)


if __name__ == "__main__":
    main()
