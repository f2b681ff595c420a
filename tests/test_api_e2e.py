"""The Python API against the real dev cluster (issue 7): submit, wait, read logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import aiinfra
from aiinfra.launcher.errors import SpecError
from slurmjobs import REPO

pytestmark = pytest.mark.slurm


def test_submit_wait_and_read_the_logs(cluster: None, tmp_path: Path) -> None:
    job = aiinfra.submit(REPO / "examples/train_ddp.toml", "local", cwd=REPO,
                         set={"log_dir": str(tmp_path / "logs"), "env.SEED": "3",
                              "command": ["python3", "examples/train_ddp.py", "--steps", "5"]})
    assert job.log.parent == tmp_path / "logs" and job.script.is_file()
    assert job.wait(timeout=300) == "COMPLETED"
    assert job.state == "COMPLETED" and job.done()
    assert "world_size=2" in job.logs() and "final_checksum=" in job.logs(attempt=0)
    (only,) = job.attempts()
    assert (only.outcome, only.state) == ("completed", "COMPLETED")
    follower = aiinfra.submit(REPO / "examples/train_ddp.toml", "local", cwd=REPO,
                              after=[job.job_id], set={"log_dir": str(tmp_path / "logs")})
    follower.cancel()
    assert follower.wait(timeout=120) == "CANCELLED"


def test_bad_input_raises_the_typed_error_and_submits_nothing(cluster: None,
                                                              tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="nodes"):
        aiinfra.submit(REPO / "examples/train_ddp.toml", "local", nodes=99,
                       set={"log_dir": str(tmp_path / "logs")})
    with pytest.raises(SpecError, match="--after: job 99999999: unknown"):
        aiinfra.submit(REPO / "examples/train_ddp.toml", "local", after=["99999999"],
                       set={"log_dir": str(tmp_path / "logs")})
    assert not list(tmp_path.glob("logs/*.sbatch"))


def test_importing_aiinfra_loads_no_launcher_code() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, aiinfra; "
                          "print(sorted(m for m in sys.modules if m.startswith('aiinfra')))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['aiinfra']"
