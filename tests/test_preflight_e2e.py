"""The preflight health gate in real jobs on the dev cluster."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from slurmjobs import aiinfra, wait_final

pytestmark = pytest.mark.slurm

JOB = """
name = "gate-{tag}"
launcher = "srun"
command = ["bash", "-c", "echo ran-on=$SLURMD_NODENAME"]
nodes = 3
time = "5"
"""

FAIL_NODES = """
inherits = "local"
[health]
gate_retries = {retries}
[health.thresholds."host.disk"]
path = "/tmp"
min_free_gib = 1
[[health.override]]
nodes = "{bad}"
[health.override.thresholds."host.disk"]
min_free_gib = 1000000000
"""


def submit_gated(tmp: Path, tag: str, bad: str, retries: int) -> tuple[str, Path]:
    (tmp / "job.toml").write_text(JOB.format(tag=tag))
    (tmp / "site.toml").write_text(FAIL_NODES.format(bad=bad, retries=retries))
    out = aiinfra("submit", str(tmp / "job.toml"), "--profile", str(tmp / "site.toml"),
                  "--set", f"log_dir={tmp / 'logs'}").stdout.strip()
    return out, tmp / "logs"


def test_a_bad_node_is_kept_out_and_the_job_runs_on_the_others(cluster: None,
                                                               tmp_path: Path) -> None:
    # Hold node4 so that the first allocation is node[1-3] and includes the bad node3.
    blocker = subprocess.run(["sbatch", "--parsable", "--nodelist=node4", "--exclusive",
                              "--output=/dev/null",
                              "--wrap", "sleep 20"], capture_output=True, text=True,
                             check=True).stdout.strip()
    job_id, logs = submit_gated(tmp_path, "keepout", "node3", retries=2)
    row = wait_final(job_id, timeout_s=240)
    batch = (logs / f"gate-keepout-{job_id}.log").read_text()
    subprocess.run(["scancel", blocker], check=False)
    assert row["State"] == "COMPLETED", batch
    assert "aiinfra: preflight: node3 CRIT: host.disk: /tmp free" in batch
    assert "< min 1e+09 GiB" in batch
    assert "preflight: bad nodes node3 (round 1 of 2)" in batch and "excluding node3" in batch
    assert re.search(r"attempt 0 on node1 node2 node3", batch)
    assert "preflight passed on node1 node2 node4" in batch
    ran = sorted(re.findall(r"ran-on=(\w+)", (logs / f"gate-keepout-{job_id}.attempt1.log")
                            .read_text()))
    assert ran == ["node1", "node2", "node4"]
    assert not (logs / f"gate-keepout-{job_id}.attempt0.log").exists()  # never ran on node3


def test_the_gate_stops_after_its_budget(cluster: None, tmp_path: Path) -> None:
    job_id, logs = submit_gated(tmp_path, "budget", "node[1-4]", retries=0)
    row = wait_final(job_id)
    batch = (logs / f"gate-budget-{job_id}.log").read_text()
    assert row["State"] == "FAILED" and row["ExitCode"] == "1:0", batch
    assert "final: FAILED: preflight: bad nodes" in batch
    assert "after 0 requeues (gate_retries=0): the command did not run" in batch
    assert not list(logs.glob(f"gate-budget-{job_id}.attempt*.log"))


def test_the_gate_gives_up_when_too_few_nodes_would_remain(cluster: None,
                                                           tmp_path: Path) -> None:
    job_id, logs = submit_gated(tmp_path, "few", "node[1-3]", retries=2)
    row = wait_final(job_id)
    batch = (logs / f"gate-few-{job_id}.log").read_text()
    assert row["State"] == "FAILED", batch
    assert re.search(r"only [12] nodes of the partition remain for 3: the command did not run",
                     batch)


def test_a_gate_that_cannot_run_fails_the_job_at_once(cluster: None, tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(JOB.format(tag="nogate"))
    (tmp_path / "site.toml").write_text('inherits = "local"\naiinfra = "/nonexistent/aiinfra"\n')
    job_id = aiinfra("submit", str(tmp_path / "job.toml"), "--profile", str(tmp_path / "site.toml"),
                     "--set", f"log_dir={tmp_path / 'logs'}").stdout.strip()
    row = wait_final(job_id)
    batch = (tmp_path / "logs" / f"gate-nogate-{job_id}.log").read_text()
    assert row["State"] == "FAILED", batch
    assert "aiinfra: cannot run /nonexistent/aiinfra on " in batch
    assert "the command did not run" in batch
    assert not (tmp_path / "logs" / f"gate-nogate-{job_id}.excluded").exists()
