"""`aiinfra status` attempt lines: pure views of ledger entries and the log lookup."""

from __future__ import annotations

from pathlib import Path

from aiinfra.launcher import attempts
from aiinfra.launcher.ledger import Entry, reconcile
from aiinfra.launcher.slurm import log_from_submit_line, parse_history

SACCT = Path(__file__).parent / "fixtures" / "sacct"


def crash(attempt: int, action: str, state: str) -> Entry:
    return Entry("6", attempt, ("node1", "node2"), "crash", 3, 0, (), "step .1", 10, 20,
                 "2026-11-23T18:26:46+00:00", "2026-11-23T19:27:50+00:00", action, state,
                 "the checkpoint advanced: requeued")


def test_an_attempt_line_names_nodes_outcome_steps_duration_and_decision() -> None:
    line = attempts.attempt_line(crash(0, "requeue", "REQUEUED"))
    assert line == ("attempt 0  node1,node2  crash (exit code 3)  step 10 -> 20  01:01:04"
                    "  -> REQUEUED: the checkpoint advanced: requeued")


def test_final_only_once_an_attempt_ended_the_job() -> None:
    going = [crash(0, "requeue", "REQUEUED")]
    assert attempts.final(going) is None and attempts.as_json(going)["final"] is None
    ended = [*going, crash(1, "final", "FAILED")]
    lines = attempts.status_lines(ended)
    assert len(lines) == 3 and lines[-1] == "  final: FAILED: the checkpoint advanced: requeued"
    assert attempts.as_json(ended)["final"] == {"state": "FAILED",
                                                "reason": "the checkpoint advanced: requeued"}
    assert [a["attempt"] for a in attempts.as_json(ended)["attempts"]] == [0, 1]


def test_a_reconciled_attempt_mixes_sacct_and_ledger_times() -> None:
    """sacct's times have no offset, the ledger's have one: both are local time."""
    (lost,) = reconcile([], parse_history((SACCT / "crash_kill_on_bad_exit.txt").read_text()))
    line = attempts.attempt_line(lost)
    assert "crash (exit code 3)  step none -> none  00:00:03  -> FAILED: reconciled" in line
    assert attempts.duration("2026-11-23T18:28:45", "2026-11-23T18:28:48+00:00") == "00:00:03"
    assert attempts.duration(None, "2026-11-23T18:28:48") == "-"


def test_the_ledger_lies_beside_the_log() -> None:
    log = Path("/p/logs/train-ddp-41.log")
    assert attempts.ledger_beside(log, "41") == Path("/p/logs/train-ddp-41.ledger.jsonl")


def test_the_log_comes_from_the_scripts_output_line(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "my job-abc.sbatch").write_text(
        "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --output='/p/my logs/my job-%j.log'\n")
    line = f"{tmp_path}|sbatch --parsable logs/my job-abc.sbatch"
    assert log_from_submit_line(line, "77") is None  # a path with a space splits: unknown
    (tmp_path / "logs" / "job-abc.sbatch").write_text(
        "#SBATCH --output='/p/my logs/job-%j.log'\n")
    assert log_from_submit_line(f"{tmp_path}|sbatch --parsable logs/job-abc.sbatch",
                                "77") == Path("/p/my logs/job-77.log")
    assert log_from_submit_line(f"{tmp_path}|sbatch --wrap=true", "77") is None
    assert log_from_submit_line("", "77") is None
