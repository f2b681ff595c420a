"""`aiinfra logs` against the real dev cluster (issue 7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slurmjobs import REPO, aiinfra, job_env, submit, wait_final

pytestmark = pytest.mark.slurm


def test_logs_follow_a_running_two_node_job_and_return_when_it_ends(cluster: None,
                                                                   tmp_path: Path) -> None:
    command = json.dumps(["python3", "examples/train_ddp.py", "--steps", "20",
                          "--step-seconds", "0.5"])
    job = submit(REPO / "examples/train_ddp.toml", tmp_path / "logs",
                 "--set", f"command={command}")
    followed = subprocess.run([str(Path(sys.executable).parent / "aiinfra"), "logs", "-f",
                               job["job_id"]], cwd=tmp_path, env=job_env(),
                              capture_output=True, text=True, timeout=300)
    assert followed.returncode == 0, followed.stderr
    assert wait_final(job["job_id"], timeout_s=60)["State"] == "COMPLETED"
    lines = followed.stdout.splitlines()
    assert {line.split(" ")[0] for line in lines if line.startswith("rank=")} == {"rank=0",
                                                                                  "rank=1"}
    assert any(line.startswith("final_checksum=") for line in lines), followed.stdout
    whole = aiinfra("logs", job["job_id"]).stdout  # followed to the very end of the file:
    assert whole == Path(job["log"]).with_name(
        f"{Path(job['log']).stem}.attempt0.log").read_text() == followed.stdout
    assert "aiinfra: preflight passed" in aiinfra("logs", "--batch", job["job_id"]).stdout
