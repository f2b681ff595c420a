"""The fault matrix on the real dev cluster (issue 6): a 2-node torchrun training is hit
mid-run, requeued, resumes from its last good checkpoint and ends with the checksum of an
uninterrupted run; the ledger bounds the lost work and `aiinfra status` names the fault."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from slurmjobs import (REPO, aiinfra, attempt_log, checksums, hostnames, ledger_of,
                       reference_checksum, sacct_row, submit, wait_final, wait_for_text)

pytestmark = pytest.mark.slurm

STEPS, EVERY = 60, 10
NODE_FAIL_STEPS = 90


def submit_train(tmp_path: Path, *extra: str, steps: int = STEPS) -> tuple[str, Path]:
    command = json.dumps(["python3", "examples/train_ddp.py", "--steps", str(steps),
                          "--step-seconds", "1", "--checkpoint-every", str(EVERY)])
    job = submit(REPO / "examples/train_ddp.toml", tmp_path / "logs",
                 "--set", f"command={command}", "--set", f"checkpoint.dir={tmp_path / 'ck'}",
                 "--set", "checkpoint.keep=3", "--set", "checkpoint.max_restarts=2", *extra)
    return job["job_id"], Path(job["log"])


def recovered(job_id: str, log: Path, steps: int = STEPS) -> list[dict[str, object]]:
    """The job's ledger once it has COMPLETED with the uninterrupted checksum, 2+ attempts."""
    row = wait_final(job_id, timeout_s=600, nodes=2)
    # Every attempt, as `aiinfra status` shows them: an attempt whose supervisor was killed
    # before it wrote its line (a node failure's KillWait) is filled in from sacct.
    entries: list[dict[str, object]] = json.loads(
        aiinfra("status", job_id, "--json").stdout)["attempts"]
    assert row["State"] == "COMPLETED", log.read_text()
    assert len(entries) >= 2, log.read_text()
    last = attempt_log(log, entries[-1]["attempt"]).read_text()
    assert checksums(last) == [reference_checksum(steps)]
    assert re.search(rf"resumed_from_step={entries[-1]['step_before']}(?!\d)", last), last
    return entries


def last_saved(text: str) -> int:
    return max(int(s) for s in re.findall(r"saved_checkpoint_step=(\d+) ", text))


def first_entry(log: Path, job_id: str, timeout_s: float = 240) -> dict[str, object]:
    """Attempt 0's ledger line, as soon as the supervisor has written it."""
    deadline = time.monotonic() + timeout_s
    while not (entries := ledger_of(log, job_id)):
        assert time.monotonic() < deadline, f"no ledger line after {timeout_s} s"
        time.sleep(0.5)
    return entries[0]


def status_of(job_id: str) -> str:
    return aiinfra("status", job_id).stdout


def test_kill_9_of_one_rank_resumes_from_the_last_checkpoint(cluster: None,
                                                             tmp_path: Path) -> None:
    """SIGKILL of rank 1's worker: its torchrun agent fails, srun ends the step, the
    supervisor reads the crash from sacct's step line and requeues (the checkpoint advanced);
    at most one checkpoint interval is lost."""
    job_id, log = submit_train(tmp_path)
    first = attempt_log(log, 0)
    wait_for_text(first, r"saved_checkpoint_step=10 ", job_id)
    pid = int(wait_for_text(first, r"rank=1 host=\S+ pid=(\d+)", job_id)[1])
    os.kill(pid, signal.SIGKILL)
    entries = recovered(job_id, log)
    killed = entries[0]
    assert (killed["outcome"], killed["action"]) == ("crash", "requeue")
    # No saved checkpoint is lost: the next attempt starts at the last one rank 0 saved
    # (saves come every EVERY steps, so at most one interval of work is redone).
    assert entries[1]["step_before"] == killed["step_after"] == last_saved(first.read_text())
    shown = status_of(job_id)
    assert "attempt 0  node" in shown and "  crash (" in shown, shown
    assert "\n  final: COMPLETED: " in shown, shown


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(cluster: None,
                                                                    tmp_path: Path) -> None:
    """A 1-minute limit ends attempt 0; while the job waits to restart, its newest checkpoint
    is cut short. The next attempt sees the size/hash mismatch and resumes from the one
    before; the result is still the uninterrupted one."""
    job_id, log = submit_train(tmp_path, "--time", "1", "--set", "checkpoint.signal_lead_s=20")
    newest = int(str(first_entry(log, job_id)["step_after"]))
    (data,) = [p for p in (tmp_path / "ck").iterdir()
               if p.name.startswith(f"step-{newest:08d}.") and not p.name.endswith(".complete")]
    previous = max(int(p.name[5:13]) for p in (tmp_path / "ck").glob("step-*.complete")
                   if int(p.name[5:13]) < newest)  # the stop save is off the 10-step grid
    with data.open("r+b") as handle:
        handle.truncate(max(1, data.stat().st_size // 2))
    entries = recovered(job_id, log)
    assert entries[0]["outcome"] == "time_limit"
    assert int(str(entries[1]["step_before"])) == previous, entries
    shown = status_of(job_id)
    assert f"step {previous} -> " in shown, shown


@pytest.mark.exclusive
def test_a_real_preemption_checkpoints_in_the_grace_time_and_resumes(cluster: None,
                                                                      tmp_path: Path) -> None:
    """An urgent job on the victim's nodes preempts it (PreemptMode=REQUEUE): the ranks get
    SIGTERM and save at once; the supervisor sees the PreemptTime and requeues; the job
    resumes from the step it stopped at."""
    job_id, log = submit_train(tmp_path, "--set", "sbatch.exclusive=true")
    first = attempt_log(log, 0)
    wait_for_text(first, r"saved_checkpoint_step=10 ", job_id)
    nodes = ",".join(hostnames(sacct_row(job_id)["NodeList"]))
    urgent = subprocess.run(
        ["sbatch", "--parsable", "--partition=urgent", "--exclusive", "--nodes=2",
         f"--nodelist={nodes}", "--time=1", "--job-name=aiinfra-test-urgent",
         "--output=/dev/null", "--wrap=sleep 1"],
        capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        entries = recovered(job_id, log)
        assert wait_final(urgent, timeout_s=180)["State"] == "COMPLETED"
    finally:
        subprocess.run(["scancel", urgent], check=False)
    preempted = entries[0]
    assert preempted["outcome"] == "preempted" and preempted["action"] == "requeue"
    stopped = wait_for_text(first, r"stopped_at_step=(\d+) signal=15 ", job_id, timeout_s=5)
    assert int(stopped[1]) == preempted["step_after"] == entries[1]["step_before"]
    shown = status_of(job_id)
    assert "attempt 0  node" in shown and "  preempted  step " in shown, shown


def slurmd_pid(node: str) -> int:
    """The pid of this cluster's slurmd for ``node`` (other dev-cluster instances run
    slurmds of the same names: their SLURM_CONF differs)."""
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        theirs = next((e[11:].decode() for e in env if e.startswith(b"SLURM_CONF=")), None)
        if argv[:3] == [b"slurmd", b"-N", node.encode()] and (theirs or
                                                               "/etc/slurm/slurm.conf") == conf:
            return int(proc.name)
    raise AssertionError(f"no slurmd for {node}")


def wait_node_down(node: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "--noheader", "--Node", f"--nodes={node}",
                                "--format=%T"], capture_output=True, text=True).stdout
        if state.strip().startswith("down"):
            return
        time.sleep(1)
    raise AssertionError(f"{node} not down after {timeout_s} s")


@pytest.mark.exclusive
def test_a_node_failure_requeues_and_resumes(cluster: None, tmp_path: Path) -> None:
    """The slurmd of the job's second node dies mid-run: after SlurmdTimeout slurmctld marks
    the node down, the job NODE_FAIL and requeues it; the test restarts that slurmd and the
    job resumes from its last checkpoint on the nodes left."""
    # 90 steps: the node is declared down up to SlurmdTimeout (60 s) after the kill, and
    # the training must still be running then.
    job_id, log = submit_train(tmp_path, steps=NODE_FAIL_STEPS)
    wait_for_text(attempt_log(log, 0), r"saved_checkpoint_step=10 ", job_id)
    info = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id],
                          capture_output=True, text=True, check=True).stdout
    batch_host = re.search(r"BatchHost=(\S+)", info)[1]  # type: ignore[index]
    (victim,) = [n for n in hostnames(re.search(r" NodeList=(\S+)", info)[1])  # type: ignore[index]
                 if n != batch_host]
    os.kill(slurmd_pid(victim), signal.SIGKILL)
    try:
        wait_node_down(victim)
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "dev-cluster.sh"), "up"],
                       capture_output=True, check=True, timeout=300)
    entries = recovered(job_id, log, NODE_FAIL_STEPS)
    assert entries[0]["outcome"] == "node_fail", entries
    assert int(str(entries[1]["step_before"])) < NODE_FAIL_STEPS, entries  # resumed mid-run
    shown = status_of(job_id)
    assert "attempt 0  node" in shown and "  node fail" in shown, shown
