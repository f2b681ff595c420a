"""The preflight gate and kernel.log on the dev cluster: a drain-class signature keeps a node
out, a warn-class one lets it in. The four nodes share one kernel, so the profile points
node3 and node2 at recorded logs (tests/fixtures/kernlog) through per-node overrides."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from slurmjobs import aiinfra, wait_final

pytestmark = pytest.mark.slurm

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kernlog"

JOB = """
name = "kgate"
launcher = "srun"
command = ["bash", "-c", "echo ran-on=$SLURMD_NODENAME"]
nodes = 3
time = "5"
"""

PROFILE = f"""
inherits = "local"
[health]
gate_retries = 1
[[health.override]]
nodes = "node3"
[health.override.thresholds."kernel.log"]
log_file = "{FIXTURES / 'nvsentinel_155_fallen_off_bus.log'}"
[[health.override]]
nodes = "node2"
[health.override.thresholds."kernel.log"]
log_file = "{FIXTURES / 'ganesha_1295_nfs.log'}"
"""


def test_drain_signature_keeps_node3_out_warn_signature_lets_node2_in(cluster: None,
                                                                      tmp_path: Path) -> None:
    # Hold node4 so that the first allocation is node[1-3] and includes node3.
    blocker = subprocess.run(["sbatch", "--parsable", "--nodelist=node4", "--exclusive",
                              "--output=/dev/null", "--wrap", "sleep 20"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "job.toml").write_text(JOB)
    (tmp_path / "site.toml").write_text(PROFILE)
    job_id = aiinfra("submit", str(tmp_path / "job.toml"), "--profile", str(tmp_path / "site.toml"),
                     "--set", f"log_dir={tmp_path / 'logs'}").stdout.strip()
    row = wait_final(job_id, timeout_s=240)
    subprocess.run(["scancel", blocker], check=False)
    batch = (tmp_path / "logs" / f"kgate-{job_id}.log").read_text()
    assert row["State"] == "COMPLETED", batch
    assert ("aiinfra: preflight: node3 CRIT: kernel.log: gpu.fallen_off_bus on GPU "
            "0000:b3:00.0 x1 (drain:") in batch
    assert ("aiinfra: preflight: node2 WARN: kernel.log: nfs.not_responding on NFS server "
            "100.73.159.36 x3 (warn:") in batch
    assert re.search(r"attempt 0 on node1 node2 node3", batch)
    assert "preflight: bad nodes node3 (round 1 of 1)" in batch and "excluding node3" in batch
    assert "preflight passed on node1 node2 node4" in batch
    ran = sorted(re.findall(r"ran-on=(\w+)",
                            (tmp_path / "logs" / f"kgate-{job_id}.attempt1.log").read_text()))
    assert ran == ["node1", "node2", "node4"]
