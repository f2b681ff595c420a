"""Compute checks over recorded-style facts, and the collector for real on this CPU machine."""

from __future__ import annotations

import contextlib
import json
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

from aiinfra.health import compute
from aiinfra.health.compute import MatmulParams, MembwParams, check_matmul, check_membw
from aiinfra.health.facts import CollectContext
from aiinfra.health.result import Status
from aiinfra.health.runner import run_node
from aiinfra.launcher.profile import load_profile

H100 = "NVIDIA H100 80GB HBM3"
MATMUL = MatmulParams(expected_gpus=8, size=8192, iterations=20, warmup=5, peak_tflops=989.0,
                      min_fraction=0.6, max_below_median=0.1)
MEMBW = MembwParams(expected_gpus=8, size_mib=1024, iterations=20, warmup=5, peak_gbps=3350.0,
                    min_fraction=0.7)
NO_CUDA = {"error": "no CUDA device (torch 2.13.0+cpu: torch.cuda.is_available() is False)"}


def facts(tflops: list[float], gbps: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    gbps = gbps or [2900.0] * len(tflops)
    devices = [{"index": i, "name": H100, "matmul_tflops": t, "membw_gbps": g}
               for i, (t, g) in enumerate(zip(tflops, gbps))]
    return {"compute": {"torch": "2.13.0", "cuda": "12.8", "devices": devices, "skipped": {},
                        **extra}}


GOOD = [715.0, 720.0, 712.0, 718.0, 709.0, 722.0, 716.0, 711.0]


def test_good_node() -> None:
    result = check_matmul(facts(GOOD), MATMUL)
    assert result.status == Status.OK
    assert result.summary == ("gpu.matmul: 8 GPUs 709.0-722.0 TFLOPS, slowest 0.72 of peak >= "
                              "min 0.60, 1% below the median <= max 10%")
    assert check_membw(facts(GOOD), MEMBW).status == Status.OK


def test_a_slow_gpu_is_crit_naming_gpu_actual_and_expected() -> None:
    result = check_matmul(facts([*GOOD[:2], 412.0, *GOOD[3:]]), MATMUL)
    assert result.status == Status.CRIT
    assert result.summary.startswith(
        "gpu.matmul: GPU 2 412.0 TFLOPS = 0.42 of peak < min 0.60; GPU 2 412.0 TFLOPS is 42% "
        "below the median")
    assert result.details["slowest_gpu"] == 2


def test_a_straggler_above_the_floor_is_warn() -> None:
    result = check_matmul(facts([*GOOD[:5], 620.0, *GOOD[6:]]), MATMUL)
    assert result.status == Status.WARN
    assert result.summary == ("gpu.matmul: GPU 5 620.0 TFLOPS is 13% below the median 713.5 "
                              "> max 10%")


def test_slow_memory() -> None:
    result = check_membw(facts(GOOD, [2900.0] * 7 + [1500.0]), MEMBW)
    assert result.status == Status.CRIT
    assert result.summary == "gpu.membw: GPU 7 1500 GB/s = 0.45 of peak < min 0.70"


def test_a_gpu_that_fails_the_benchmark_is_crit() -> None:
    data = facts(GOOD)
    del data["compute"]["devices"][3]["matmul_tflops"]
    data["compute"]["devices"][3]["matmul_error"] = "RuntimeError: CUDA error: ECC error"
    result = check_matmul(data, MATMUL)
    assert result.status == Status.CRIT
    assert result.summary == "gpu.matmul: GPU 3 matmul failed: RuntimeError: CUDA error: ECC error"


def test_no_cuda_is_ok_when_the_profile_expects_no_gpu_else_unknown() -> None:
    cpu_node = MatmulParams(0, 8192, 20, 5, 989.0, 0.6, 0.1)
    result = check_matmul({"compute": NO_CUDA}, cpu_node)
    assert result.status == Status.OK
    assert result.summary == f"gpu.matmul: no GPU expected (expected_gpus 0): {NO_CUDA['error']}"
    assert check_membw({"compute": NO_CUDA}, MembwParams(0, 1, 1, 1, 1.0, 0.5)).status == Status.OK
    gpu_node = check_matmul({"compute": NO_CUDA}, MATMUL)
    assert gpu_node.status == Status.UNKNOWN and "no CUDA device" in gpu_node.summary
    assert check_membw({}, MEMBW).status == Status.UNKNOWN


def test_a_measurement_the_profile_does_not_configure_is_unknown() -> None:
    data = facts(GOOD)
    data["compute"]["skipped"] = {"membw": "the profile sets no gpu.membw thresholds"}
    result = check_membw(data, MEMBW)
    assert result.status == Status.UNKNOWN
    assert result.summary == "gpu.membw: the profile sets no gpu.membw thresholds"


@pytest.fixture(scope="module")
def torch() -> Any:
    """torch, imported by the tests that run it (collection stays light)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
        return pytest.importorskip("torch")


def test_collector_without_cuda_for_real(torch: Any) -> None:
    assert not torch.cuda.is_available()  # this test machine has no GPU
    section = compute.collect_compute(CollectContext("n1", "standard", {}))
    assert set(section) == {"error", "torch"}
    assert section["error"].startswith("no CUDA device (torch ")
    assert json.loads(json.dumps(section)) == section  # recorded and replayed as JSON


def test_knobs_come_from_the_check_tables() -> None:
    ctx = CollectContext("n1", "standard", {"gpu.matmul": {"size": 64, "iterations": 2}})
    assert ctx.params("gpu.matmul", ("size", "iterations")) == {"size": 64,
                                                                         "iterations": 2}
    assert ctx.params("gpu.matmul", compute.MATMUL_KNOBS) == "gpu.matmul sets no warmup"
    assert ctx.params("gpu.membw", ()) == "the profile sets no gpu.membw thresholds"


def test_benchmarks_measure_real_work_on_cpu(torch: Any) -> None:
    cpu = torch.device("cpu")
    assert compute.matmul_tflops(torch, cpu, size=64, iterations=3, warmup=1) > 0
    assert compute.copy_gbps(torch, cpu, size_mib=1, iterations=3, warmup=1) > 0


def _cpu_as_cuda(torch: Any) -> types.SimpleNamespace:
    """torch with "cuda" devices that are the CPU: the per-device code without a GPU."""
    cuda = types.SimpleNamespace(device=lambda index: contextlib.nullcontext(),
                                 get_device_name=lambda index: f"fake {index}",
                                 empty_cache=lambda: None)
    return types.SimpleNamespace(device=lambda kind, index: torch.device("cpu"), cuda=cuda,
                                 randn=torch.randn, empty=torch.empty, empty_like=torch.empty_like,
                                 matmul=torch.matmul, bfloat16=torch.bfloat16, uint8=torch.uint8)


def test_bench_device_records_figures_and_failures(torch: Any) -> None:
    fake = _cpu_as_cuda(torch)
    # size 256: enough work that the figure survives rounding to 3 decimals on a busy CPU
    out = compute.bench_device(fake, 1, {"size": 256, "iterations": 2, "warmup": 1},
                               {"size_mib": -1, "iterations": 2, "warmup": 1})
    assert out["index"] == 1 and out["name"] == "fake 1" and out["matmul_tflops"] > 0
    assert out["membw_error"].startswith("RuntimeError: ")  # a negative size fails in torch
    skipped = compute.bench_device(fake, 0, "no table", "no table")
    assert skipped == {"index": 0, "name": "fake 0"}


LOCAL_BLOCK = """
inherits = "local"
[health.thresholds."gpu.matmul"]
expected_gpus = 0
size = 4096
iterations = 20
warmup = 3
peak_tflops = 1.0
min_fraction = 0.5
max_below_median = 0.15
[health.thresholds."gpu.membw"]
expected_gpus = 0
size_mib = 512
iterations = 20
warmup = 3
peak_gbps = 1.0
min_fraction = 0.5
"""


def test_standard_tier_on_this_cpu_node_through_the_runner(tmp_path: Path) -> None:
    profile = tmp_path / "cpu.toml"
    profile.write_text(LOCAL_BLOCK)
    report, recorded = run_node(load_profile(str(profile)).profile.health, "cpu", "standard", "n1")
    by_name = {r.name: r for r in report.results}
    assert by_name["gpu.matmul"].status == by_name["gpu.membw"].status == Status.OK
    assert "no GPU expected (expected_gpus 0): no CUDA device" in by_name["gpu.membw"].summary
    assert "error" in json.loads(json.dumps(recorded))["compute"]
