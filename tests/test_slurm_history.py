"""sacct --duplicates history, scontrol job facts and sinfo node states: recorded output
from the dev cluster (tests/fixtures/sacct/README), and the real thing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from aiinfra.launcher import slurm
from aiinfra.launcher.slurm import AcctRow, parse_history, parse_job_info, parse_unresponsive

FIXTURES = Path(__file__).parent / "fixtures"


def history(name: str) -> tuple[slurm.Run, ...]:
    return parse_history((FIXTURES / "sacct" / f"{name}.txt").read_text())


def test_each_requeued_run_keeps_its_own_steps() -> None:
    runs = history("requeued_twice")
    assert [r.alloc.state for r in runs] == ["REQUEUED", "REQUEUED", "COMPLETED"]
    assert [r.alloc.nodes for r in runs] == ["node[1-2]", "node[2-3]", "node[1-2]"]
    assert [[s.step for s in r.steps] for r in runs] == [
        ["batch", "0", "1"], ["batch", "0", "1"], ["batch", "0", "1", "2"]]
    assert {r.alloc.job_id for r in runs} == {"4"}
    assert all(r.started and r.ended for r in runs)
    assert runs[0].alloc.start == "2026-11-23T18:26:46"


def test_the_launched_step_is_the_last_numbered_one() -> None:
    runs = history("requeued_twice")
    first = runs[0].launched_step()
    assert first == AcctRow("4", "1", "bash", "FAILED", 3, 0, "node[1-2]",
                            "2026-11-23T18:26:46", "2026-11-23T18:27:16")
    last = runs[2].launched_step()
    assert last is not None and (last.step, last.state) == ("2", "COMPLETED")


def test_after_a_gate_the_command_is_the_first_step_from_1_never_the_gate() -> None:
    (early,) = history("step_not_yet_recorded")
    assert [s.step for s in early.steps] == ["batch", "0"]
    assert early.launched_step() is not None          # the newest numbered step: the gate's
    assert early.launched_step(first=1) is None       # the command's: not recorded yet
    (run,) = history("crash_kill_on_bad_exit")
    step = run.launched_step(first=1)
    assert step is not None and (step.step, step.state, step.exit_code) == ("1", "FAILED", 3)
    assert run.launched_step(first=0) is not None and run.launched_step(first=0).step == "0"


def test_exit_code_and_signal_are_split() -> None:
    (run,) = history("timeout")
    assert (run.alloc.state, run.alloc.exit_code, run.alloc.signal) == ("TIMEOUT", 0, 0)
    assert [(s.step, s.state, s.signal) for s in run.steps] == [
        ("batch", "CANCELLED", 15), ("0", "CANCELLED", 15)]


def test_a_state_with_words_after_it_keeps_the_first() -> None:
    (run,) = history("cancelled")
    assert run.alloc.state == "CANCELLED"


def test_a_run_that_never_started() -> None:
    first, second = history("admin_requeue_then_cancel")
    assert first.alloc.state == "REQUEUED" and first.ended
    assert second.alloc.start is None and second.alloc.nodes == "None assigned"
    assert not second.started and not second.ended and second.steps == ()
    assert second.launched_step() is None


def test_a_job_without_steps_and_empty_output() -> None:
    assert parse_history("") == ()
    (run,) = parse_history("7|x|PENDING|0:0|None assigned|Unknown|Unknown\n")
    assert run.launched_step() is None and not run.started


def test_scontrol_show_job_fields() -> None:
    info = parse_job_info((FIXTURES / "scontrol_show_job_running.txt").read_text())
    assert info == slurm.JobInfo("14", "RUNNING", 0, None, "node[1-2]", "", "debug", None)
    preempted = parse_job_info("JobId=9 JobState=COMPLETING Restarts=2 "
                               "PreemptTime=2026-11-23T18:40:00 ExcNodeList=node3 NodeList=node1 "
                               "EndTime=2026-11-23T18:41:00")
    assert (preempted.restarts, preempted.preempt_time, preempted.excluded) == (
        2, "2026-11-23T18:40:00", "node3")
    assert preempted.end_time == "2026-11-23T18:41:00"


@pytest.mark.parametrize(("line", "dead"), [
    ("node1|idle", False), ("node1|allocated", False), ("node1|mixed", False),
    ("node1|drained", False), ("node1|idle*", True), ("node1|allocated*", True),
    ("node1|down*", True), ("node1|down", True), ("node1|fail", True),
    ("node1|down~", True), ("node1|completing", False),
])
def test_unresponsive_node_states(line: str, dead: bool) -> None:
    assert parse_unresponsive(line + "\n") == (("node1",) if dead else ())


# --- the real cluster ----------------------------------------------------------------------

REQUEUE_ONCE = """#!/bin/bash
#SBATCH --job-name=aiinfra-test-history
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --requeue
#SBATCH --time=00:03:00
#SBATCH --output={log}
#SBATCH --open-mode=append
srun --ntasks=2 --kill-on-bad-exit=1 bash -c '[ "$SLURM_PROCID" = 1 ] && exit 3; sleep 20' || true
if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then
  trap '' TERM
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
srun --ntasks=2 true
"""


@pytest.mark.slurm
def test_job_history_of_a_real_requeued_job(cluster: None, tmp_path: Path) -> None:
    script = tmp_path / "requeue_once.sh"
    script.write_text(REQUEUE_ONCE.format(log=tmp_path / "job.log"))
    job_id = slurm.sbatch(script)
    try:
        runs = _wait_for_runs(job_id, 2, timeout_s=240)
    finally:
        subprocess.run(["scancel", job_id], check=False, capture_output=True)
    first, second = runs
    assert first.alloc.state == "REQUEUED" and second.alloc.state == "COMPLETED"
    crash = first.launched_step()
    assert crash is not None and (crash.step, crash.state, crash.exit_code) == (
        "0", "FAILED", 3)
    assert [s.step for s in second.steps if s.step.isdigit()] == ["0", "1"]
    assert slurm.job_info(job_id).restarts == 1


@pytest.mark.slurm
def test_partition_nodes_and_a_real_sinfo_state_line(cluster: None) -> None:
    assert slurm.partition_nodes("debug") == ("node1", "node2", "node3", "node4")
    states = slurm.run(["sinfo", "--noheader", "--Node", "--nodes", "node[1-4]",
                        "--format=%N|%T"])
    assert {line.split("|")[0] for line in states.split()} == {f"node{n}" for n in range(1, 5)}
    assert set(slurm.unresponsive_nodes("node[1-4]")) == set(parse_unresponsive(states))


def _wait_for_runs(job_id: str, count: int, timeout_s: float) -> tuple[slurm.Run, ...]:
    """The history once ``count`` runs have ended and two reads in a row agree."""
    deadline = time.monotonic() + timeout_s
    last: tuple[slurm.Run, ...] = ()
    while time.monotonic() < deadline:
        runs = slurm.job_history(job_id)
        if len(runs) == count and all(r.ended for r in runs) and runs == last:
            return runs
        last = runs
        time.sleep(2)
    raise AssertionError(f"job {job_id}: {last}")


def test_a_job_name_with_the_delimiter_parses() -> None:
    """Job names are the user's: `|` in one must not shift the other fields."""
    from aiinfra.launcher.slurm import parse_history, split_fields

    assert split_fields("7|a|b|c|RUNNING|0:0", 4) == ["7", "a|b|c", "RUNNING", "0:0"]
    assert split_fields("7|a|b|RUNNING|0:0", 4) == ["7", "a|b", "RUNNING", "0:0"]
    assert split_fields("7|ab|RUNNING|0:0", 4) == ["7", "ab", "RUNNING", "0:0"]
    runs = parse_history("12|x|y;z|COMPLETED|0:0|node1|2026-01-01T00:00:00|2026-01-01T00:01:00\n"
                         "12.0|x|y;z|FAILED|3:0|node1|2026-01-01T00:00:00|2026-01-01T00:01:00\n")
    assert runs[0].alloc.name == "x|y;z" and runs[0].steps[0].exit_code == 3
