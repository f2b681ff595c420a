"""Network checks: pure checks over facts, the single-process paths, and real multi-rank
runs (two local processes; two nodes of the dev cluster through mpirun and through srun)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aiinfra.health import net
from aiinfra.health.facts import CollectContext
from aiinfra.health.net import AllreduceParams, PingpongParams, World, world_from_env
from aiinfra.health.result import Status

AIINFRA = str(Path(sys.executable).parent / "aiinfra")
PINGPONG = PingpongParams(small_bytes=8, large_bytes=4 * 1024**2, iterations=100, warmup=10,
                          timeout_s=30, max_latency_us=5.0, min_bandwidth_gbps=20.0)
ALLREDUCE = AllreduceParams(size_mib=256, iterations=20, warmup=5, timeout_s=60,
                            min_busbw_gbps=40.0, max_straggler_ratio=1.2)
LAUNCH_VARS = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK",
               "PMIX_RANK", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS",
               "SLURM_STEP_NUM_TASKS", "MASTER_ADDR", "MASTER_PORT", "AIINFRA_HEAD_ADDR",
               "AIINFRA_PORT")


# ---------------------------------------------------------------- who we are

@pytest.mark.parametrize(("env", "expected"), [
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"},
     World(3, 4, "mpirun", 1)),
    ({"PMI_RANK": "1", "PMI_SIZE": "2"}, World(1, 2, "pmi", 0)),
    ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "4",
      "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"}, World(2, 4, "srun", 0)),
    ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "PMIX_RANK": "1"},
     World(1, 2, "srun-pmix", 0)),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, World(0, 1, "single")),  # the batch script
    ({}, World(0, 1, "single")),
])
def test_world_from_the_launchers_environment(env: dict[str, str], expected: World) -> None:
    assert world_from_env(env) == expected


def test_only_mpi_launchers_may_initialise_mpi() -> None:
    assert World(0, 2, "mpirun").mpi and World(0, 2, "srun-pmix").mpi
    assert not World(0, 2, "srun").mpi and not World(0, 1, "single").mpi


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_sections_say_why(clean_env: pytest.MonkeyPatch) -> None:
    ctx = CollectContext("n1", "deep", {})
    for collect in (net.collect_mpi, net.collect_dist):
        section = collect(ctx)
        assert section == {"error": "single process (single, world size 1): start one rank "
                                    "per node with mpirun (see aiinfra.health.net)"}
    assert net.check_pingpong({"mpi": section}, PINGPONG).status == Status.UNKNOWN
    assert net.check_allreduce({"dist": section}, ALLREDUCE).summary.startswith(
        "net.allreduce: single process")


def test_srun_tasks_skip_mpi_and_need_thresholds(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {"SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
                        "SLURM_STEP_NUM_TASKS": "2"}.items():
        clean_env.setenv(name, value)
    ctx = CollectContext("n1", "deep", {})
    assert "not an MPI launcher" in net.collect_mpi(ctx)["error"]
    assert net.collect_dist(ctx) == {"error": "the profile sets no net.allreduce thresholds"}


def test_rendezvous_order() -> None:
    srun = World(0, 2, "srun")
    both = {"MASTER_ADDR": "h0", "MASTER_PORT": "29500", "AIINFRA_HEAD_ADDR": "h1",
            "AIINFRA_PORT": "21000"}
    assert net.rendezvous(both, srun, 1) == ("h0", 29500, "MASTER_ADDR/MASTER_PORT")
    aiinfra_job = {"AIINFRA_HEAD_ADDR": "10.0.0.1", "AIINFRA_PORT": "21000"}
    assert net.rendezvous(aiinfra_job, srun, 1) == ("10.0.0.1", 21000,
                                                    "AIINFRA_HEAD_ADDR/AIINFRA_PORT")
    with pytest.raises(LookupError, match="no rendezvous"):
        net.rendezvous({}, srun, 1)


def test_bus_bandwidth_is_nccl_tests_definition() -> None:
    assert net.bus_gbps(10**9, 1.0, 2) == pytest.approx(1.0)
    assert net.bus_gbps(10**9, 0.5, 8) == pytest.approx(2 * 2 * 7 / 8)


# ---------------------------------------------------------------- pure checks

def mpi_facts(latency_us: float, bandwidth_gbps: float) -> dict[str, Any]:
    pair = {"ranks": [0, 1], "nodes": ["node1", "node2"], "latency_us": latency_us,
            "bandwidth_gbps": bandwidth_gbps}
    return {"mpi": {"rank": 1, "size": 2, "node": "node2", "small_bytes": 8,
                    "large_bytes": 4194304, "iterations": 100, "pair": pair, "pairs": [pair]}}


def test_pingpong_good_slow_and_lonely() -> None:
    good = net.check_pingpong(mpi_facts(2.1, 45.0), PINGPONG)
    assert good.status == Status.OK
    assert good.summary == ("net.mpi_pingpong: node1<->node2 latency 2.1 us <= max 5 us, "
                            "bandwidth 45.00 GB/s >= min 20 GB/s")
    assert good.details["latency_us"] == 2.1
    bad = net.check_pingpong(mpi_facts(12.5, 3.2), PINGPONG)
    assert bad.status == Status.CRIT
    assert bad.summary == ("net.mpi_pingpong: node1<->node2 latency 12.5 us (8 B) > max 5 us; "
                           "node1<->node2 bandwidth 3.20 GB/s (4194304 B) < min 20 GB/s")
    lonely = mpi_facts(2.0, 45.0)
    lonely["mpi"].update(rank=2, size=3, pair=None)
    result = net.check_pingpong(lonely, PINGPONG)
    assert result.status == Status.UNKNOWN and "rank 2 of 3 has no partner" in result.summary


def dist_facts(times: list[float], correct: bool = True) -> dict[str, Any]:
    world = World(0, len(times), "mpirun")
    settings = {"size_mib": 256, "iterations": 20}
    ranks = [{"rank": i, "node": f"node{i + 1}", "time_s": t} for i, t in enumerate(times)]
    return {"dist": net.summarize_allreduce("nccl", world, "node1", settings, correct, ranks)}


def test_allreduce_good() -> None:
    result = net.check_allreduce(dist_facts([0.0050, 0.0051, 0.0050, 0.0050]), ALLREDUCE)
    assert result.status == Status.OK
    # 256 MiB in 5.1 ms: algbw 52.6 GB/s, busbw x 2*3/4
    assert result.summary == ("net.allreduce: busbw 78.95 GB/s >= min 40 GB/s over 4 ranks "
                              "(nccl, 256 MiB), slowest node2 1.02x the median <= max 1.2x")
    assert [r["node"] for r in result.details["ranks"]] == ["node1", "node2", "node3", "node4"]


def test_allreduce_straggler_is_warn_naming_the_node() -> None:
    result = net.check_allreduce(dist_facts([0.0050, 0.0050, 0.0050, 0.0065]), ALLREDUCE)
    assert result.status == Status.WARN
    assert result.summary == ("net.allreduce: node4 (rank 3) 6.50 ms per all-reduce = 1.30x "
                              "the median > max 1.2x")


def test_allreduce_slow_or_wrong_is_crit() -> None:
    slow = net.check_allreduce(dist_facts([0.02, 0.02]), ALLREDUCE)
    assert slow.status == Status.CRIT
    assert slow.summary == ("net.allreduce: busbw 13.42 GB/s < min 40 GB/s over 2 ranks (nccl, "
                            "256 MiB)")
    wrong = net.check_allreduce(dist_facts([0.005, 0.005], correct=False), ALLREDUCE)
    assert wrong.status == Status.CRIT and "wrong sums" in wrong.summary


# ---------------------------------------------------------------- real multi-rank runs

# Thresholds far from this shared 2-CPU machine's figures: these tests assert that real
# figures come back from every rank, not how fast the machine is today.
NET_PROFILE = """
inherits = "local"
[health.thresholds."net.mpi_pingpong"]
small_bytes = 8
large_bytes = 1048576
iterations = 200
warmup = 20
timeout_s = 30
max_latency_us = 100000
min_bandwidth_gbps = 0.001
[health.thresholds."net.allreduce"]
size_mib = 8
iterations = 10
warmup = 2
timeout_s = 30
min_busbw_gbps = 0.001
max_straggler_ratio = 10
"""


@pytest.fixture
def net_profile(tmp_path: Path) -> Path:
    path = tmp_path / "net.toml"
    path.write_text(NET_PROFILE)
    return path


def _checks(report_file: Path) -> dict[str, dict[str, Any]]:
    report = json.loads(report_file.read_text())
    return {c["name"]: c for c in report["checks"]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_gloo_allreduce_between_two_local_processes(net_profile: Path, tmp_path: Path) -> None:
    """Two ranks as srun would start them, meeting at MASTER_ADDR: no Slurm, no MPI."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env |= {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([AIINFRA, "health", "run", "--tier", "deep", "--profile",
                               str(net_profile), "--node", f"local{rank}", "--output-dir",
                               str(tmp_path / "out")], env=env | {"SLURM_PROCID": str(rank)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    for rank in range(2):
        checks = _checks(tmp_path / "out" / f"local{rank}.json")
        allreduce = checks["net.allreduce"]
        assert allreduce["status"] == "OK", (allreduce, errors)
        assert allreduce["details"]["world_size"] == 2
        assert allreduce["details"]["backend"] == "gloo"
        assert allreduce["details"]["busbw_gbps"] > 0
        assert [r["node"] for r in allreduce["details"]["ranks"]] == ["local0", "local1"]
        assert checks["net.mpi_pingpong"]["status"] == "UNKNOWN"
        assert "not an MPI launcher" in checks["net.mpi_pingpong"]["summary"]


JOB = """\
#!/bin/bash
#SBATCH --job-name=health-deep --nodes=2 --ntasks-per-node=1 --partition=debug --time=3
#SBATCH --output={out}/slurm.log
set -euo pipefail
# What the local profile's env gives aiinfra jobs: every node is 127.0.0.1.
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1
{launch} {aiinfra} health run --tier deep --profile {profile} --output-dir {out}/reports \\
  >{out}/stdout.log 2>&1 || true
"""
MPIRUN = ("mpirun --allow-run-as-root --bind-to none --mca orte_abort_on_non_zero_status 0 -np 2 "
          "--map-by ppr:1:node")
# srun tasks meet where aiinfra jobs say the head node listens (templates/base.sh.j2).
SRUN = ('export AIINFRA_HEAD_ADDR=127.0.0.1 AIINFRA_PORT=$(( 20000 + SLURM_JOB_ID % 10000 ))\n'
        "srun --ntasks-per-node=1 --kill-on-bad-exit=0")


def _run_two_node_job(launch: str, profile: Path, out: Path) -> dict[str, dict[str, Any]]:
    from slurmjobs import hostnames, wait_final

    script = out / "job.sh"
    out.mkdir(parents=True)
    script.write_text(JOB.format(launch=launch, aiinfra=AIINFRA, profile=profile, out=out))
    job_id = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True,
                            text=True, check=True).stdout.strip().split(";")[0]
    row = wait_final(job_id, timeout_s=90, nodes=2)  # slurmdbd settles the node list late
    assert row["State"] == "COMPLETED", (row, (out / "stdout.log").read_text())
    nodes = hostnames(row["NodeList"])
    assert len(nodes) == 2
    reports = {n: _checks(out / "reports" / f"{n}.json") for n in nodes}
    return reports


@pytest.mark.slurm
def test_deep_tier_across_two_nodes_with_mpirun(cluster: None, net_profile: Path,
                                                tmp_path: Path) -> None:
    reports = _run_two_node_job(MPIRUN, net_profile, tmp_path / "mpirun")
    nodes = sorted(reports)
    for checks in reports.values():
        pingpong = checks["net.mpi_pingpong"]
        assert pingpong["status"] == "OK", pingpong
        assert sorted(pingpong["details"]["nodes"]) == nodes
        assert pingpong["details"]["latency_us"] > 0
        assert pingpong["details"]["bandwidth_gbps"] > 0
        allreduce = checks["net.allreduce"]
        assert allreduce["status"] == "OK", allreduce
        assert allreduce["details"]["world_size"] == 2
        assert allreduce["details"]["busbw_gbps"] > 0
        assert sorted(r["node"] for r in allreduce["details"]["ranks"]) == nodes
        assert all(r["time_s"] > 0 for r in allreduce["details"]["ranks"])


@pytest.mark.slurm
def test_deep_tier_across_two_nodes_with_srun(cluster: None, net_profile: Path,
                                              tmp_path: Path) -> None:
    """The preflight's way: srun, one task per node. The all-reduce is measured; the
    ping-pong says why not (mpi4py would abort a task srun started without PMI)."""
    reports = _run_two_node_job(SRUN, net_profile, tmp_path / "srun")
    nodes = sorted(reports)
    for checks in reports.values():
        allreduce = checks["net.allreduce"]
        assert allreduce["status"] == "OK", allreduce
        assert allreduce["details"]["world_size"] == 2
        assert allreduce["details"]["busbw_gbps"] > 0
        assert sorted(r["node"] for r in allreduce["details"]["ranks"]) == nodes
        pingpong = checks["net.mpi_pingpong"]
        assert pingpong["status"] == "UNKNOWN"
        assert "started by srun, not an MPI launcher" in pingpong["summary"]


def test_job_script_is_valid_bash() -> None:
    for launch in (MPIRUN, SRUN):
        text = JOB.format(launch=launch, aiinfra=AIINFRA, profile="/p.toml", out="/o")
        subprocess.run(["bash", "-n"], input=textwrap.dedent(text), text=True, check=True)
