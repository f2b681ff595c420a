"""`submit --after`: a dependency on the real dev cluster (issue 7)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slurmjobs import aiinfra, wait_final

pytestmark = pytest.mark.slurm

JOB = 'name = "after"\nlauncher = "srun"\ncommand = ["/bin/echo", "ran"]\ntime = "2"\n'


def _field(job_id: str, key: str) -> str:
    out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True,
                         text=True, check=True).stdout
    return out.split(f" {key}=", 1)[1].split(" ", 1)[0]


def _times(job_id: str) -> tuple[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=Start,End"],
                         capture_output=True, text=True, check=True).stdout.split()[0]
    start, end = out.split("|")
    return start, end


def test_after_holds_a_job_until_its_dependency_completes(cluster: None, tmp_path: Path) -> None:
    first = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--time=2",
                            "--job-name=aiinfra-test-first", "--output=/dev/null",
                            "--wrap=sleep 15"], capture_output=True, text=True,
                           check=True).stdout.strip()
    job = tmp_path / "job.toml"
    job.write_text(JOB + f'log_dir = "{tmp_path}/logs"\n')
    second = json.loads(aiinfra("submit", str(job), "-p", "local", "--json",
                                "--after", first).stdout)["job_id"]
    assert f"#SBATCH --dependency=afterok:{first}" in next((tmp_path / "logs").glob(
        "*.sbatch")).read_text()
    assert (_field(second, "JobState"), _field(second, "Reason")) == ("PENDING", "Dependency")
    assert wait_final(first, timeout_s=120)["State"] == "COMPLETED"
    assert wait_final(second, timeout_s=120)["State"] == "COMPLETED"
    assert _times(second)[0] >= _times(first)[1]  # ISO times: started after the first ended


def test_an_unknown_dependency_is_refused_before_submission(cluster: None,
                                                            tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(JOB + f'log_dir = "{tmp_path}/logs"\n')
    proc = aiinfra("submit", str(job), "-p", "local", "--after-any", "99999999", check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["Error: --after-any: job 99999999: unknown to squeue "
                                        "and sacct", "nothing was submitted"]
    assert not list(tmp_path.glob("logs/*.sbatch"))  # not even the script was written
