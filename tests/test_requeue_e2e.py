"""Requeue from checkpoints on the real dev cluster: the supervisor, the signal chain, the
ledger and the policy, end to end (issue 6)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from slurmjobs import (REPO, aiinfra, attempt_log, checksums, job_env, ledger_of,
                       reference_checksum, submit, wait_final)

pytestmark = pytest.mark.slurm

STEPS, STEP_S, EVERY = 60, 1.0, 10


def test_time_limit_checkpoints_requeues_and_resumes(cluster: None, tmp_path: Path) -> None:
    """A 1-minute limit on ~60 s of steps: USR2 20 s ahead, the ranks save through the stop
    file, the supervisor requeues, the next attempt resumes; the result equals an
    uninterrupted run's."""
    command = json.dumps(["python3", "examples/train_ddp.py", "--steps", str(STEPS),
                          "--step-seconds", str(STEP_S), "--checkpoint-every", str(EVERY)])
    job = submit(REPO / "examples/train_ddp.toml", tmp_path / "logs", "--time", "1",
                 "--set", f"command={command}", "--set", f"checkpoint.dir={tmp_path / 'ck'}",
                 "--set", "checkpoint.signal_lead_s=20", "--set", "checkpoint.max_restarts=1")
    expected = reference_checksum(STEPS)
    row = wait_final(job["job_id"], timeout_s=900, nodes=2)
    log = Path(job["log"])
    batch = log.read_text()
    assert row["State"] == "COMPLETED", batch
    entries = ledger_of(log, job["job_id"])
    assert len(entries) >= 2, batch
    assert all(e["outcome"] == "time_limit" and e["action"] == "requeue" for e in entries[:-1])
    assert entries[-1]["outcome"] == "completed" and entries[-1]["state"] == "COMPLETED"
    for before, after in zip(entries, entries[1:]):
        assert after["step_before"] == before["step_after"]  # lost work: none past the save
    last = log.with_name(f"{log.stem}.attempt{entries[-1]['attempt']}.log").read_text()
    assert f"resumed_from_step={entries[-1]['step_before']}" in last
    assert re.findall(r"final_checksum=([0-9a-f]{64})", last) == [expected]
    shown = json.loads(aiinfra("status", job["job_id"], "--json").stdout)
    assert [a["outcome"] for a in shown["attempts"]] == [e["outcome"] for e in entries]
    assert shown["final"]["state"] == "COMPLETED"
    text = aiinfra("status", job["job_id"]).stdout
    assert text.count("  time limit  step ") == len(entries) - 1, text
    assert "\n  final: COMPLETED: " in text, text


def test_a_deterministic_crash_stops_after_its_budget(cluster: None, tmp_path: Path) -> None:
    """One rank of two exits 3: srun kills the other, and only sacct's step line says 3.
    With max_restarts = 1 the job runs twice, then ends FAILED with the reason."""
    job_file = tmp_path / "crash.toml"
    job_file.write_text('name = "crash"\nlauncher = "srun"\nnodes = 2\ntime = "5"\n'
                        'command = ["bash", "-c", "[ \\"$SLURM_PROCID\\" = 1 ] && exit 3; '
                        'sleep 60"]\n[checkpoint]\nmax_restarts = 1\n')
    job = submit(job_file, tmp_path / "logs")
    row = wait_final(job["job_id"], timeout_s=300)
    log = Path(job["log"])
    batch = log.read_text()
    assert row["State"] == "FAILED", batch
    entries = ledger_of(log, job["job_id"])
    assert [e["outcome"] for e in entries] == ["crash", "crash"], batch
    assert [e["exit_code"] for e in entries] == [3, 3]  # the step line, not the 143 of a kill
    assert [e["action"] for e in entries] == ["requeue", "final"]
    assert "final: FAILED: crash (exit code 3)" in batch
    assert "more than max_restarts=1" in batch
    status = aiinfra("status", job["job_id"]).stdout
    assert status.count("  crash (exit code 3)  ") == 2, status
    assert "\n  final: FAILED: " in status, status


def _mpi_reference(steps: int) -> str:
    """examples/mpi_train.py uninterrupted on this machine (2 ranks, no Slurm)."""
    env = {**job_env(), "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    env.pop("AIINFRA_CHECKPOINT_DIR", None)
    out = subprocess.run(["mpirun", "-n", "2", "--oversubscribe", "python3",
                          "examples/mpi_train.py", "--steps", str(steps)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return checksums(out)[0]


def test_an_mpirun_job_checkpoints_requeues_and_resumes(cluster: None, tmp_path: Path) -> None:
    """The mpirun twin of the time-limit test (mpi4py, 2 nodes): USR2 reaches only the batch
    shell; the supervisor's stop file stops every rank at the same step."""
    command = json.dumps(["python3", "examples/mpi_train.py", "--steps", str(STEPS),
                          "--step-seconds", str(STEP_S), "--checkpoint-every", str(EVERY)])
    job = submit(REPO / "examples/mpi_train.toml", tmp_path / "logs", "--time", "1",
                 "--set", f"command={command}", "--set", f"checkpoint.dir={tmp_path / 'ck'}",
                 "--set", "checkpoint.signal_lead_s=20", "--set", "checkpoint.max_restarts=1")
    row = wait_final(job["job_id"], timeout_s=900, nodes=2)
    log = Path(job["log"])
    assert row["State"] == "COMPLETED", log.read_text()
    entries = ledger_of(log, job["job_id"])
    assert len(entries) >= 2 and entries[-1]["outcome"] == "completed", log.read_text()
    assert all(e["outcome"] == "time_limit" for e in entries[:-1])
    for before, after in zip(entries, entries[1:]):
        assert after["step_before"] == before["step_after"]
    # mpirun tags output chunks, not lines: a line may end in another chunk's tag.
    last = attempt_log(log, entries[-1]["attempt"]).read_text()
    assert re.search(rf"resumed_from_step={entries[-1]['step_before']}(?!\d)", last), last
    assert checksums(last) == [_mpi_reference(STEPS)]
