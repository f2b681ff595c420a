"""Hostile input on the real dev cluster (issue 8): the rows only Slurm itself can judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slurmjobs import REPO, aiinfra, wait_final

pytestmark = pytest.mark.slurm

LONG_NAME = "hostile-" + "n" * 292  # 300 characters


def _scontrol_field(job_id: str, key: str) -> str:
    out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True,
                         text=True, check=True).stdout
    return out.split(f" {key}=", 1)[1].split(" ", 1)[0]


def test_a_held_job_runs_as_submitted(cluster: None, tmp_path: Path) -> None:
    """One job carries four rows of the issue: a 300-character name, a `%` in its log
    directory, `--export=NONE` from a PATH without the install, and a profile edited while
    it pends (the gate must read the submit-time snapshot, not the file)."""
    site = tmp_path / "site.toml"
    site.write_text('inherits = "local"\n')
    job = tmp_path / "job.toml"
    job.write_text(f'name = "{LONG_NAME}"\nlauncher = "srun"\ncommand = ["/bin/echo", "ran"]\n'
                   f'time = "2"\nlog_dir = "{tmp_path}/logs/%u-%j"\n')
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    proc = subprocess.run([str(Path(sys.executable).parent / "aiinfra"), "submit", str(job),
                           "-p", str(site), "--json", "--set", "sbatch.hold=true",
                           "--set", "sbatch.export=NONE"], cwd=REPO, env=bare,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)
    job_id = sub["job_id"]
    assert sub["log"] == f"{tmp_path}/logs/%u-%j/{Path(sub['log']).name}"
    assert _scontrol_field(job_id, "JobName") == LONG_NAME
    # Edit the profile so that every node fails the gate, then let the job start.
    site.write_text('inherits = "local"\n[[health.override]]\nnodes = "node[1-4]"\n'
                    '[health.override.thresholds."host.disk"]\nmin_free_gib = 1000000000\n')
    edited = aiinfra("health", "run", "--profile", str(site), "--node", "node1", check=False)
    assert edited.returncode == 2, "the edited profile really fails the gate"
    subprocess.run(["scontrol", "release", job_id], check=True)
    row = wait_final(job_id, timeout_s=120)
    log = Path(sub["log"])
    assert row["State"] == "COMPLETED", (row, log.read_text() if log.exists() else "no log")
    text = log.read_text()
    assert "aiinfra: preflight passed" in text
    step_log = log.with_name(f"{log.stem}.attempt0.log")
    assert step_log.read_text().strip() == "ran"


def test_cancel_of_an_unknown_or_ended_job_is_an_error(cluster: None) -> None:
    unknown = aiinfra("cancel", "99999999", check=False)
    assert unknown.returncode == 1
    assert "job 99999999 is unknown to Slurm" in unknown.stderr
    done = subprocess.run(["sbatch", "--parsable", "--wrap", "true"], capture_output=True,
                          text=True, check=True).stdout.strip()
    wait_final(done, timeout_s=60)
    ended = aiinfra("cancel", done, check=False)
    assert ended.returncode == 1 and f"job {done} has already ended (COMPLETED" in ended.stderr
