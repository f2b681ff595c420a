"""Network checks across nodes: MPI ping-pong between node pairs, torch.distributed all-reduce.

These collectors measure something only when this process is one of several ranks, one
per node, all running the same ``aiinfra health run --tier deep``. Inside an allocation:

    mpirun --mca orte_abort_on_non_zero_status 0 -np N --map-by ppr:1:node \\
        aiinfra health run --tier deep --profile P --output-dir DIR
    aiinfra health gate DIR --nodes node1,node2,...

(the MCA setting keeps mpirun from killing the other ranks when one exits non-zero, i.e.
WARN, CRIT or UNKNOWN, before they have written DIR/NODE.json; Open MPI 4 spelling. On
the dev cluster add ``--bind-to none``: its four "nodes" share two cores and mpirun would
bind every node's rank to the same core, which turns a 10 us ping-pong into 4 ms.)
``srun --ntasks-per-node=1 aiinfra health run --tier deep ...`` measures the all-reduce
too (rendezvous at AIINFRA_HEAD_ADDR/AIINFRA_PORT, which aiinfra jobs export), but not the
ping-pong: importing mpi4py in a task that srun started without PMI support aborts the
process, so ``mpi`` is measured only under an MPI launcher. A single process (a sweep,
a plain ``health run``) gets ``{"error": "single process ..."}`` in both sections: UNKNOWN.

What is measured: ranks 2k and 2k+1 ping-pong (all pairs at once) in host memory:
latency = half the mean round trip of small_bytes, bandwidth = large_bytes / half the
mean round trip (OSU/IMB PingPong style). The all-reduce runs over all ranks (NCCL on the
local GPU when CUDA is there, else gloo on the CPU); busbw = algbw * 2(n-1)/n as
nccl-tests define it, from the slowest rank's time; each rank's own time is shared so that
every node's facts hold the whole per-node table.

Every rank runs the same checks in the same order, so the collectors meet in step; every
wait on another rank has the profile's ``timeout_s``, so a missing rank is an error, not
a hung run. Leave --fail-fast out here: a rank that stops early keeps the others waiting
for it until timeout_s.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiinfra.health.facts import (CollectContext, Facts, FunctionCollector, Section, section_error,
                                  timed)
from aiinfra.health.registry import check, collector
from aiinfra.health.result import CheckResult, Status, from_problems, unknown

PINGPONG_KNOBS = ("small_bytes", "large_bytes", "iterations", "warmup", "timeout_s")
ALLREDUCE_KNOBS = ("size_mib", "iterations", "warmup", "timeout_s")
TAG_HELLO, TAG_ACK, TAG_DATA, TAG_RESULT, TAG_RENDEZVOUS = 7101, 7102, 7103, 7104, 7105
MIB = 1024**2
NAME_BYTES = 255  # a host name's limit


# ---------------------------------------------------------------- who we are

@dataclass(frozen=True)
class World:
    rank: int
    size: int
    launcher: str  # "mpirun", "pmi", "srun-pmix", "srun" or "single"
    local_rank: int = 0

    @property
    def mpi(self) -> bool:
        """Whether MPI_Init can work here (an MPI launcher or PMI started this process)."""
        return self.launcher in ("mpirun", "pmi", "srun-pmix")


def world_from_env(env: Mapping[str, str]) -> World:
    """Rank and size from the launcher's environment. The batch script itself has
    SLURM_PROCID/SLURM_NTASKS too, so Slurm's are trusted only inside a step."""
    if "OMPI_COMM_WORLD_SIZE" in env:
        return World(int(env["OMPI_COMM_WORLD_RANK"]), int(env["OMPI_COMM_WORLD_SIZE"]),
                     "mpirun", int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")))
    if "PMI_SIZE" in env and "PMI_RANK" in env:  # MPICH / Intel MPI hydra, srun --mpi=pmi2
        return World(int(env["PMI_RANK"]), int(env["PMI_SIZE"]), "pmi",
                     int(env.get("MPI_LOCALRANKID", env.get("SLURM_LOCALID", "0"))))
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        size = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))
        launcher = "srun-pmix" if "PMIX_RANK" in env else "srun"
        return World(int(env["SLURM_PROCID"]), int(size), launcher,
                     int(env.get("SLURM_LOCALID", "0")))
    return World(0, 1, "single")


def single_process(world: World) -> str:
    return (f"single process ({world.launcher}, world size {world.size}): start one rank per "
            "node with mpirun (see aiinfra.health.net)")


def await_message(comm: Any, source: int, tag: int, timeout_s: float) -> Any:
    """Receive a pickled message from ``source``, or TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not comm.iprobe(source=source, tag=tag):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {source} sent nothing (tag {tag}) before the timeout")
        time.sleep(0.001)
    return comm.recv(source=source, tag=tag)


def barrier(comm: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    request = comm.Ibarrier()
    while not request.Test():
        if time.monotonic() > deadline:
            raise TimeoutError("not every rank reached the barrier before the timeout")
        time.sleep(0.001)


# ---------------------------------------------------------------- mpi collector

def collect_mpi(ctx: CollectContext) -> Section:
    world = world_from_env(os.environ)
    if world.size < 2:
        return {"error": single_process(world)}
    if not world.mpi:
        return {"error": f"started by {world.launcher}, not an MPI launcher: the ping-pong "
                         "needs mpirun (mpi4py would abort this process)"}
    settings = ctx.params("net.mpi_pingpong", PINGPONG_KNOBS)
    if isinstance(settings, str):
        return {"error": settings}
    try:
        from mpi4py import MPI
    except ImportError as exc:
        return {"error": f"mpi4py is not importable: {exc}"}
    comm = MPI.COMM_WORLD
    if comm.Get_size() != world.size:
        return {"error": f"MPI sees {comm.Get_size()} ranks, the launcher says {world.size}"}
    try:
        return pingpong(comm, world, ctx.node, settings) | {
            "library": MPI.Get_library_version().splitlines()[0].strip()}
    except TimeoutError as exc:
        return {"error": f"rank {world.rank}: {exc} ({settings['timeout_s']:g} s)"}


collector(FunctionCollector("mpi", collect_mpi))


def pingpong(comm: Any, world: World, node: str, settings: dict[str, Any]) -> Section:
    """Rank 2k and 2k+1 time round trips; every rank then gets every pair's figures."""
    partner = world.rank ^ 1
    pair = None
    if partner < world.size:
        pair, settings = _measure_pair(comm, world.rank, partner, node, settings)
    out = {"rank": world.rank, "size": world.size, "node": node, "launcher": world.launcher,
           "small_bytes": settings["small_bytes"], "large_bytes": settings["large_bytes"],
           "iterations": settings["iterations"], "pair": pair}
    try:  # the other pairs' figures are a bonus: a missing pair must not hide this one
        barrier(comm, settings["timeout_s"])
    except TimeoutError as exc:
        return out | {"pairs": [pair] if pair else [], "pairs_error": str(exc)}
    return out | {"pairs": [p for p in comm.allgather(pair if world.rank % 2 == 0 else None) if p]}


def _measure_pair(comm: Any, rank: int, partner: int, node: str,
                  settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The even rank leads: it sends its settings (so both sides agree even when per-node
    overrides differ), times the round trips and sends the figures back."""
    leader, timeout_s = rank % 2 == 0, settings["timeout_s"]
    if leader:
        comm.send((node, settings), dest=partner, tag=TAG_HELLO)
        peer = await_message(comm, partner, TAG_ACK, timeout_s)
    else:
        peer, settings = await_message(comm, partner, TAG_HELLO, timeout_s)
        comm.send(node, dest=partner, tag=TAG_ACK)
    small = _round_trip_s(comm, partner, leader, bytearray(settings["small_bytes"]), settings)
    large = _round_trip_s(comm, partner, leader, bytearray(settings["large_bytes"]), settings)
    if not leader:
        return await_message(comm, partner, TAG_RESULT, timeout_s), settings
    result = {"ranks": [rank, partner], "nodes": [node, peer],
              "latency_us": round(small / 2 * 1e6, 3),
              "bandwidth_gbps": round(settings["large_bytes"] / (large / 2) / 1e9, 4)}
    comm.send(result, dest=partner, tag=TAG_RESULT)
    return result, settings


def _round_trip_s(comm: Any, partner: int, leader: bool, buf: bytearray,
                  settings: dict[str, Any]) -> float:
    def once() -> None:
        if leader:
            comm.Send(buf, dest=partner, tag=TAG_DATA)
            comm.Recv(buf, source=partner, tag=TAG_DATA)
        else:
            comm.Recv(buf, source=partner, tag=TAG_DATA)
            comm.Send(buf, dest=partner, tag=TAG_DATA)

    iterations = int(settings["iterations"])
    return timed(once, iterations, settings["warmup"], lambda: None) / iterations


# ---------------------------------------------------------------- dist collector

def collect_dist(ctx: CollectContext) -> Section:
    world = world_from_env(os.environ)
    if world.size < 2:
        return {"error": single_process(world)}
    settings = ctx.params("net.allreduce", ALLREDUCE_KNOBS)
    if isinstance(settings, str):
        return {"error": settings}
    try:
        addr, port, how = rendezvous(os.environ, world, settings["timeout_s"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
            import torch
            import torch.distributed as dist
    except (LookupError, TimeoutError, ImportError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if not dist.is_available():
        return {"error": f"torch {torch.__version__} was built without torch.distributed"}
    host = f"[{addr}]" if ":" in addr else addr  # an IPv6 address
    return allreduce(torch, dist, world, ctx.node, f"tcp://{host}:{port}", settings) | {
        "rendezvous": how}


collector(FunctionCollector("dist", collect_dist))


def rendezvous(env: Mapping[str, str], world: World, timeout_s: float) -> tuple[str, int, str]:
    """Where rank 0 listens: MASTER_ADDR/MASTER_PORT when set, else a free port that rank 0
    picks and sends over MPI, else an aiinfra job's AIINFRA_HEAD_ADDR/AIINFRA_PORT."""
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return env["MASTER_ADDR"], int(env["MASTER_PORT"]), "MASTER_ADDR/MASTER_PORT"
    if world.mpi:
        from mpi4py import MPI

        addr, port = _mpi_rendezvous(MPI.COMM_WORLD, world, timeout_s)
        return addr, port, "sent by MPI rank 0"
    if env.get("AIINFRA_HEAD_ADDR") and env.get("AIINFRA_PORT"):
        return env["AIINFRA_HEAD_ADDR"], int(env["AIINFRA_PORT"]), "AIINFRA_HEAD_ADDR/AIINFRA_PORT"
    raise LookupError("no rendezvous: set MASTER_ADDR/MASTER_PORT, start the ranks with mpirun, "
                      "or run inside an aiinfra job (AIINFRA_HEAD_ADDR/AIINFRA_PORT)")


def _mpi_rendezvous(comm: Any, world: World, timeout_s: float) -> tuple[str, int]:
    if world.rank != 0:
        addr, port = await_message(comm, 0, TAG_RENDEZVOUS, timeout_s)
        return str(addr), int(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        port = int(probe.getsockname()[1])
    addr = socket.gethostname()  # each rank resolves it (not a 127.0.1.1 of rank 0's own)
    for rank in range(1, world.size):
        comm.send((addr, port), dest=rank, tag=TAG_RENDEZVOUS)
    return addr, port


def allreduce(torch: Any, dist: Any, world: World, node: str, init_method: str,
              settings: dict[str, Any]) -> Section:
    """Time ``iterations`` all-reduces of size_mib on every rank and share the times."""
    cuda = torch.cuda.is_available()
    device = (torch.device("cuda", world.local_rank % torch.cuda.device_count()) if cuda
              else torch.device("cpu"))
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=world.rank,
                            world_size=world.size,
                            timeout=timedelta(seconds=settings["timeout_s"]))
    try:
        correct = _sums_correct(torch, dist, world.size, world.rank, device)
        seconds = _time_allreduce(torch, dist, device, settings)
        ranks = _share(torch, dist, world.size, device, node, seconds)
    finally:
        dist.destroy_process_group()
    return summarize_allreduce(backend, world, node, settings, correct, ranks)


def _sums_correct(torch: Any, dist: Any, size: int, rank: int, device: Any) -> bool:
    values = torch.full((1024,), float(rank + 1), device=device)
    dist.all_reduce(values)
    return bool(torch.all(values == size * (size + 1) / 2).item())


def _time_allreduce(torch: Any, dist: Any, device: Any, settings: dict[str, Any]) -> float:
    """Seconds per all-reduce on this rank, the ranks released together by a barrier."""
    data = torch.zeros(settings["size_mib"] * MIB // 4, dtype=torch.float32, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(settings["warmup"]):
        dist.all_reduce(data)
    dist.all_reduce(torch.zeros(1, device=device))  # a barrier on this device, any backend
    sync()
    iterations = int(settings["iterations"])
    return timed(lambda: dist.all_reduce(data), iterations, 0, sync) / iterations


def _share(torch: Any, dist: Any, size: int, device: Any, node: str,
           seconds: float) -> list[dict[str, Any]]:
    """Every rank's node name and time, on every rank (tensors: all_gather_object would
    need NumPy on some torch builds)."""
    name = torch.zeros(NAME_BYTES, dtype=torch.uint8, device=device)
    encoded = node.encode()[:NAME_BYTES]
    name[:len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8, device=device)
    names = [torch.empty_like(name) for _ in range(size)]
    times = [torch.empty(1, dtype=torch.float64, device=device) for _ in range(size)]
    dist.all_gather(names, name)
    dist.all_gather(times, torch.tensor([seconds], dtype=torch.float64, device=device))
    return [{"rank": rank, "node": bytes(n.cpu().tolist()).rstrip(b"\0").decode(errors="replace"),
             "time_s": float(t.item())} for rank, (n, t) in enumerate(zip(names, times))]


def bus_gbps(nbytes: int, seconds: float, size: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce: algbw * 2(n-1)/n, GB = 1e9 B."""
    return nbytes / seconds * 2 * (size - 1) / size / 1e9


def summarize_allreduce(backend: str, world: World, node: str, settings: dict[str, Any],
                        correct: bool, ranks: list[Any]) -> Section:
    nbytes = settings["size_mib"] * MIB // 4 * 4
    table = [dict(r, time_s=round(r["time_s"], 6),
                  busbw_gbps=round(bus_gbps(nbytes, r["time_s"], world.size), 4)) for r in ranks]
    slowest = max(r["time_s"] for r in ranks)
    return {"backend": backend, "world_size": world.size, "rank": world.rank, "node": node,
            "launcher": world.launcher, "bytes": nbytes, "iterations": settings["iterations"],
            "correct": correct, "time_s": round(slowest, 6),
            "algbw_gbps": round(nbytes / slowest / 1e9, 4),
            "busbw_gbps": round(bus_gbps(nbytes, slowest, world.size), 4), "ranks": table}


# ---------------------------------------------------------------- checks

@dataclass(frozen=True)
class PingpongParams:
    small_bytes: int
    large_bytes: int
    iterations: int
    warmup: int
    timeout_s: float
    max_latency_us: float
    min_bandwidth_gbps: float


@check("net.mpi_pingpong", "deep", ("mpi",), PingpongParams)
def check_pingpong(facts: Facts, p: PingpongParams) -> CheckResult:
    """MPI ping-pong with the paired node: latency at most max, bandwidth at least min."""
    if (why := section_error(facts, "mpi")) is not None:
        return unknown("net.mpi_pingpong", why)
    mpi = facts["mpi"]
    pair = mpi["pair"]
    if pair is None:
        return unknown("net.mpi_pingpong", f"rank {mpi['rank']} of {mpi['size']} has no "
                       "partner (odd rank count)", pairs=mpi["pairs"])
    link = "<->".join(pair["nodes"])
    lat, bw = pair["latency_us"], pair["bandwidth_gbps"]
    problems = []
    if lat > p.max_latency_us:
        problems.append(f"{link} latency {lat:.1f} us ({mpi['small_bytes']} B) > max "
                        f"{p.max_latency_us:g} us")
    if bw < p.min_bandwidth_gbps:
        problems.append(f"{link} bandwidth {bw:.2f} GB/s ({mpi['large_bytes']} B) < min "
                        f"{p.min_bandwidth_gbps:g} GB/s")
    return from_problems("net.mpi_pingpong", problems,
                         f"{link} latency {lat:.1f} us <= max {p.max_latency_us:g} us, "
                         f"bandwidth {bw:.2f} GB/s >= min {p.min_bandwidth_gbps:g} GB/s",
                         **pair, pairs=mpi["pairs"])


@dataclass(frozen=True)
class AllreduceParams:
    size_mib: int
    iterations: int
    warmup: int
    timeout_s: float
    min_busbw_gbps: float
    max_straggler_ratio: float


@check("net.allreduce", "deep", ("dist",), AllreduceParams)
def check_allreduce(facts: Facts, p: AllreduceParams) -> CheckResult:
    """All-reduce bus bandwidth at least min_busbw_gbps; no rank far slower than the median."""
    if (why := section_error(facts, "dist")) is not None:
        return unknown("net.allreduce", why)
    d = facts["dist"]
    crits = [] if d["correct"] else ["all-reduce returned wrong sums"]
    what = f"over {d['world_size']} ranks ({d['backend']}, {d['bytes'] / MIB:g} MiB)"
    if d["busbw_gbps"] < p.min_busbw_gbps:
        crits.append(f"busbw {d['busbw_gbps']:.2f} GB/s < min {p.min_busbw_gbps:g} GB/s {what}")
    median = statistics.median(r["time_s"] for r in d["ranks"])
    slow = max(d["ranks"], key=lambda r: r["time_s"])
    ratio = slow["time_s"] / median
    warns = [(f"{slow['node']} (rank {slow['rank']}) {slow['time_s'] * 1e3:.2f} ms per "
              f"all-reduce = {ratio:.2f}x the median > max {p.max_straggler_ratio:g}x")
             ] if ratio > p.max_straggler_ratio else []
    good = (f"busbw {d['busbw_gbps']:.2f} GB/s >= min {p.min_busbw_gbps:g} GB/s {what}, "
            f"slowest {slow['node']} {ratio:.2f}x the median <= max {p.max_straggler_ratio:g}x")
    details = {k: d[k] for k in ("world_size", "backend", "busbw_gbps", "algbw_gbps", "time_s",
                                 "ranks")} | {"straggler_ratio": round(ratio, 4)}
    if crits:
        return from_problems("net.allreduce", crits + warns, good, Status.CRIT, **details)
    return from_problems("net.allreduce", warns, good, Status.WARN, **details)
