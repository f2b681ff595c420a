"""Compute checks: bf16 matmul TFLOPS and device-memory bandwidth of every CUDA device.

One collector (section ``compute``) benchmarks each visible GPU in turn with torch; the
checks compare each GPU with the profile's peak and the slowest GPU with the node's median
(a straggler slows every lockstep job on the node). A node without torch or CUDA gets
``{"error": ...}``: UNKNOWN, or OK where the profile expects no GPU (``expected_gpus = 0``).

Both figures are wall time around a loop between two ``torch.cuda.synchronize`` calls,
after warm-up: TFLOPS = 2 n^3 per n x n matmul; bandwidth = 2 x bytes per device-to-device
copy (each byte is read once and written once, as CUDA's bandwidthTest counts it).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiinfra.health.facts import (CollectContext, Facts, FunctionCollector, Section, section_error,
                                  timed)
from aiinfra.health.registry import check, collector
from aiinfra.health.result import CheckResult, Status, from_problems, ok, unknown

MATMUL_KNOBS = ("size", "iterations", "warmup")
MEMBW_KNOBS = ("size_mib", "iterations", "warmup")
MIB = 1024**2


# ---------------------------------------------------------------- collector

def collect_compute(ctx: CollectContext) -> Section:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
            import torch
    except ImportError as exc:
        return {"error": f"torch is not importable: {exc}"}
    if not torch.cuda.is_available():
        return {"error": f"no CUDA device (torch {torch.__version__}: "
                         "torch.cuda.is_available() is False)", "torch": torch.__version__}
    matmul = ctx.params("gpu.matmul", MATMUL_KNOBS)
    membw = ctx.params("gpu.membw", MEMBW_KNOBS)
    skipped = {name: k for name, k in (("matmul", matmul), ("membw", membw)) if isinstance(k, str)}
    devices = [bench_device(torch, i, matmul, membw) for i in range(torch.cuda.device_count())]
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "devices": devices,
            "skipped": skipped}


collector(FunctionCollector("compute", collect_compute))


def bench_device(torch: Any, index: int, matmul: dict[str, Any] | str,
                 membw: dict[str, Any] | str) -> dict[str, Any]:
    """One GPU's figures; a benchmark that fails (CUDA error, out of memory) is recorded."""
    device = torch.device("cuda", index)
    out: dict[str, Any] = {"index": index, "name": torch.cuda.get_device_name(index)}
    if isinstance(matmul, dict):
        out.update(_attempt(torch, index, "matmul", "matmul_tflops",
                            lambda: matmul_tflops(torch, device, **matmul)))
    if isinstance(membw, dict):
        out.update(_attempt(torch, index, "membw", "membw_gbps",
                            lambda: copy_gbps(torch, device, **membw)))
    return out


def _attempt(torch: Any, index: int, part: str, key: str,
             run: Callable[[], float]) -> dict[str, Any]:
    try:
        with torch.cuda.device(index):
            return {key: round(run(), 3)}
    except Exception as exc:  # a GPU that cannot run the benchmark is a finding, not a crash
        return {f"{part}_error": f"{type(exc).__name__}: {exc}"}
    finally:
        torch.cuda.empty_cache()


def _sync(torch: Any, device: Any) -> Callable[[], object]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def matmul_tflops(torch: Any, device: Any, size: int, iterations: int, warmup: int) -> float:
    """bf16 n x n matmul throughput on ``device`` (also runs on "cpu", for tests)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    c = torch.empty(size, size, device=device, dtype=torch.bfloat16)
    seconds = timed(lambda: torch.matmul(a, b, out=c), iterations, warmup, _sync(torch, device))
    return 2 * size**3 * iterations / seconds / 1e12


def copy_gbps(torch: Any, device: Any, size_mib: int, iterations: int, warmup: int) -> float:
    """Device-memory bandwidth of a same-device copy, read + write bytes (GB = 1e9 B)."""
    src = torch.empty(size_mib * MIB, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), iterations, warmup, _sync(torch, device))
    return 2 * size_mib * MIB * iterations / seconds / 1e9


# ---------------------------------------------------------------- checks

def _no_gpu(name: str, why: str, expected_gpus: int) -> CheckResult:
    """No usable compute facts: fine on a node that should have no GPU, else UNKNOWN."""
    if expected_gpus == 0:
        return ok(name, f"no GPU expected (expected_gpus 0): {why}")
    return unknown(name, why)


def _figures(facts: Facts, name: str, part: str, key: str,
             expected_gpus: int) -> tuple[dict[int, float], list[str]] | CheckResult:
    """Per-GPU figures and failures, or the result that ends the check early."""
    if (why := section_error(facts, "compute")) is not None:
        return _no_gpu(name, why, expected_gpus)
    section = facts["compute"]
    if part in section.get("skipped", {}):
        return unknown(name, section["skipped"][part])
    devices = section.get("devices", [])
    if not devices:
        return _no_gpu(name, "torch sees no CUDA device", expected_gpus)
    failed = [f"GPU {d['index']} {part} failed: {d[f'{part}_error']}" for d in devices
              if f"{part}_error" in d]
    return {d["index"]: float(d[key]) for d in devices if key in d}, failed


@dataclass(frozen=True)
class MatmulParams:
    expected_gpus: int
    size: int
    iterations: int
    warmup: int
    peak_tflops: float
    min_fraction: float
    max_below_median: float


@check("gpu.matmul", "standard", ("compute",), MatmulParams)
def check_matmul(facts: Facts, p: MatmulParams) -> CheckResult:
    """bf16 matmul TFLOPS of each GPU vs the peak, and the slowest GPU vs the median."""
    got = _figures(facts, "gpu.matmul", "matmul", "matmul_tflops", p.expected_gpus)
    if isinstance(got, CheckResult):
        return got
    tflops, crits = got
    crits += [f"GPU {i} {t:.1f} TFLOPS = {t / p.peak_tflops:.2f} of peak < min "
              f"{p.min_fraction:.2f}" for i, t in tflops.items()
              if t / p.peak_tflops < p.min_fraction]
    details: dict[str, Any] = {"tflops": tflops, "peak_tflops": p.peak_tflops}
    if not tflops:
        return from_problems("gpu.matmul", crits, "", **details)
    median = statistics.median(tflops.values())
    slow = min(tflops, key=tflops.__getitem__)
    below = 1 - tflops[slow] / median
    details.update(median_tflops=median, slowest_gpu=slow, slowest_below_median=below)
    warns = [(f"GPU {slow} {tflops[slow]:.1f} TFLOPS is {below:.0%} below the median "
              f"{median:.1f} > max {p.max_below_median:.0%}")] if below > p.max_below_median else []
    good = (f"{len(tflops)} GPUs {min(tflops.values()):.1f}-{max(tflops.values()):.1f} TFLOPS, "
            f"slowest {tflops[slow] / p.peak_tflops:.2f} of peak >= min {p.min_fraction:.2f}, "
            f"{below:.0%} below the median <= max {p.max_below_median:.0%}")
    if crits:
        return from_problems("gpu.matmul", crits + warns, good, Status.CRIT, **details)
    return from_problems("gpu.matmul", warns, good, Status.WARN, **details)


@dataclass(frozen=True)
class MembwParams:
    expected_gpus: int
    size_mib: int
    iterations: int
    warmup: int
    peak_gbps: float
    min_fraction: float


@check("gpu.membw", "standard", ("compute",), MembwParams)
def check_membw(facts: Facts, p: MembwParams) -> CheckResult:
    """Device-memory copy bandwidth of each GPU at least min_fraction of the peak."""
    got = _figures(facts, "gpu.membw", "membw", "membw_gbps", p.expected_gpus)
    if isinstance(got, CheckResult):
        return got
    gbps, problems = got
    problems += [f"GPU {i} {g:.0f} GB/s = {g / p.peak_gbps:.2f} of peak < min "
                 f"{p.min_fraction:.2f}" for i, g in gbps.items()
                 if g / p.peak_gbps < p.min_fraction]
    low = min(gbps.values(), default=0.0)
    return from_problems("gpu.membw", problems,
                         f"{len(gbps)} GPUs >= {low:.0f} GB/s = {low / p.peak_gbps:.2f} of peak "
                         f">= min {p.min_fraction:.2f}", gbps=gbps, peak_gbps=p.peak_gbps)
