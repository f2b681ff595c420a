"""The requeue policy, branch by branch (pure functions, no Slurm)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from aiinfra.launcher.ledger import Entry
from aiinfra.launcher.requeue import (Attempt, Budget, Decision, Evidence, Outcome, Room,
                                      classify, decide, progressed, stalled,
                                      time_limit_reached)
from aiinfra.launcher.slurm import AcctRow, parse_history

SACCT = Path(__file__).parent / "fixtures" / "sacct"


def step(state: str, code: int = 0, sig: int = 0, number: str = "1") -> AcctRow:
    return AcctRow("42", number, "python3", state, code, sig, "node[1-2]", "t0", "t1")


OK = step("COMPLETED")
CRASH3 = step("FAILED", 3)
KILLED = step("CANCELLED", 0, 15)


@pytest.mark.parametrize(("name", "evidence", "kind", "code", "sig"), [
    ("clean exit", Evidence(step=OK, returncode=0), "completed", 0, 0),
    ("no step line, launcher said 0", Evidence(returncode=0), "completed", 0, 0),
    ("step exit 3 beats the batch's 143", Evidence(step=CRASH3, returncode=143), "crash", 3, 0),
    ("no step line: 143 is signal 15", Evidence(returncode=143), "crash", 0, 15),
    ("no step line: subprocess -9", Evidence(returncode=-9), "crash", 0, 9),
    ("no step line: plain exit 2", Evidence(returncode=2), "crash", 2, 0),
    ("no exit status at all", Evidence(), "crash", 0, 0),
    ("step 0:0 but OUT_OF_MEMORY", Evidence(step=step("OUT_OF_MEMORY")), "crash", 0, 0),
    ("USR2 then clean exit: stopped early", Evidence(step=OK, signals=frozenset({"USR2"})),
     "time_limit", 0, 0),
    ("time limit without USR2", Evidence(step=KILLED, time_limit=True), "time_limit", 0, 15),
    ("sacct TIMEOUT", Evidence(job_state="TIMEOUT"), "time_limit", 0, 0),
    ("TERM with PreemptTime", Evidence(step=OK, signals=frozenset({"TERM"}), preempt_time=True),
     "preempted", 0, 0),
    ("PREEMPTED state", Evidence(step=KILLED, job_state="PREEMPTED"), "preempted", 0, 15),
    ("requeued from outside", Evidence(step=KILLED, signals=frozenset({"TERM"}), requeued=True),
     "preempted", 0, 15),
    ("preemption beats USR2", Evidence(signals=frozenset({"TERM", "USR2"}), preempt_time=True),
     "preempted", 0, 0),
    ("bare TERM is scancel", Evidence(step=KILLED, signals=frozenset({"TERM"})),
     "cancelled", 0, 15),
    ("step cancelled, no signal", Evidence(step=KILLED), "cancelled", 0, 15),
    ("sacct CANCELLED", Evidence(job_state="CANCELLED"), "cancelled", 0, 0),
    ("node not responding", Evidence(step=CRASH3, unresponsive=("node2",)), "node_fail", 3, 0),
    ("NODE_FAIL state beats TERM", Evidence(signals=frozenset({"TERM"}), job_state="NODE_FAIL"),
     "node_fail", 0, 0),
    ("step NODE_FAIL", Evidence(step=step("NODE_FAIL", 0, 9)), "node_fail", 0, 9),
    ("gate verdict first", Evidence(bad_nodes=("node3", "node1", "node3"), returncode=0),
     "gate_bad_nodes", 0, 0),
])
def test_classify(name: str, evidence: Evidence, kind: str, code: int, sig: int) -> None:
    outcome = classify(evidence)
    assert (outcome.kind, outcome.exit_code, outcome.signal) == (kind, code, sig), name
    assert outcome.detail


def test_classify_names_the_bad_and_the_failed_nodes_sorted_once() -> None:
    assert classify(Evidence(bad_nodes=("node3", "node1", "node3"))).bad_nodes == (
        "node1", "node3")
    assert classify(Evidence(unresponsive=("node4", "node2"))).bad_nodes == ("node2", "node4")


def test_the_measured_crash_trap_reads_the_step_line_not_the_allocation() -> None:
    """Recorded on the dev cluster: rank 1 exits 3, srun --kill-on-bad-exit kills rank 0,
    the batch script gets 143 and the allocation shows FAILED 15:0."""
    (run,) = parse_history((SACCT / "crash_kill_on_bad_exit.txt").read_text())
    assert (run.alloc.state, run.alloc.exit_code) == ("FAILED", 15)
    outcome = classify(Evidence(step=run.launched_step(), returncode=143,
                                job_state=run.alloc.state))
    assert (outcome.kind, outcome.exit_code, outcome.signal) == ("crash", 3, 0)
    assert outcome.describe() == "crash (exit code 3)"


def test_a_recorded_time_limit_and_a_recorded_scancel() -> None:
    (timeout,) = parse_history((SACCT / "timeout.txt").read_text())
    assert classify(Evidence(step=timeout.launched_step(), job_state=timeout.alloc.state,
                             signals=frozenset({"USR2"}))).kind == "time_limit"
    (cancelled,) = parse_history((SACCT / "cancelled.txt").read_text())
    assert classify(Evidence(step=cancelled.launched_step(), signals=frozenset({"TERM"}))
                    ).kind == "cancelled"


# --- decide --------------------------------------------------------------------------------

def past(outcome: str, before: int | None, after: int | None,
         bad: tuple[str, ...] = ()) -> Entry:
    return Entry("42", 0, ("node1",), outcome, 0, 0, bad, "", before, after, None, None,
                 "requeue", "REQUEUED", "")


def attempt(kind: str, before: int | None = None, after: int | None = None,
            bad: tuple[str, ...] = (), room: Room | None = None) -> Attempt:
    return Attempt(Outcome(kind, 3 if kind == "crash" else 0, bad_nodes=bad),  # type: ignore[arg-type]
                   before, after, room)


B = Budget(max_restarts=2, gate_retries=2)
ROOM = Room(("node1", "node2", "node3", "node4"), 2)
STALL = past("crash", 10, 10)
GATE1 = past("gate_bad_nodes", None, None, ("node1",))


@pytest.mark.parametrize(("name", "att", "ledger", "budget", "action", "state", "exclude"), [
    ("completed", attempt("completed", 0, 50), [STALL, STALL, STALL], B, "final", "COMPLETED",
     ()),
    ("cancelled, even with progress", attempt("cancelled", 0, 50), [], B, "final",
     "CANCELLED", ()),
    ("preempted without progress", attempt("preempted", 10, 10), [], B, "requeue", "REQUEUED",
     ()),
    ("preempted with the stall budget spent", attempt("preempted"), [STALL] * 5, B,
     "requeue", "REQUEUED", ()),
    ("time limit with progress", attempt("time_limit", 10, 20), [], B, "requeue", "REQUEUED",
     ()),
    ("time limit, first checkpoint", attempt("time_limit", None, 0), [], B, "requeue",
     "REQUEUED", ()),
    ("time limit without progress", attempt("time_limit", 10, 10), [], B, "final", "TIMEOUT",
     ()),
    ("time limit, no checkpoint at all", attempt("time_limit"), [], B, "final", "TIMEOUT", ()),
    ("crash with progress, budget spent", attempt("crash", 10, 20), [STALL] * 5, B, "requeue",
     "REQUEUED", ()),
    ("crash without progress, first stall", attempt("crash", 10, 10), [], B, "requeue",
     "REQUEUED", ()),
    ("crash without progress, last stall allowed", attempt("crash", 10, 10), [STALL], B,
     "requeue", "REQUEUED", ()),
    ("crash without progress, one stall too many", attempt("crash", 10, 10), [STALL, STALL], B,
     "final", "FAILED", ()),
    ("progress resets nothing", attempt("crash", 20, 20),
     [STALL, past("time_limit", 10, 20), STALL], B, "final", "FAILED", ()),
    ("preemptions are not stalls", attempt("crash", 10, 10),
     [past("preempted", 10, 10), past("preempted", 10, 10), STALL], B, "requeue", "REQUEUED",
     ()),
    ("a step going backwards is no progress", attempt("crash", 20, 10), [STALL, STALL], B,
     "final", "FAILED", ()),
    ("max_restarts 0: the first stall ends the job", attempt("crash"), [], Budget(0, 2),
     "final", "FAILED", ()),
    ("node failure without progress", attempt("node_fail", 10, 10), [], B, "requeue",
     "REQUEUED", ()),
    ("node failure, budget spent", attempt("node_fail", 10, 10), [STALL, STALL], B, "final",
     "NODE_FAIL", ()),
    ("node failure with progress", attempt("node_fail", 10, 30), [STALL] * 3, B, "requeue",
     "REQUEUED", ()),
    ("gate: first round", attempt("gate_bad_nodes", bad=("node2",), room=ROOM), [], B,
     "requeue", "REQUEUED", ("node2",)),
    ("gate: excludes accumulate, with the job's own", attempt(
        "gate_bad_nodes", bad=("node2",), room=Room(ROOM.partition_nodes, 1, ("node4",))),
     [GATE1], Budget(5, 2), "requeue", "REQUEUED", ("node1", "node2", "node4")),
    ("gate: round gate_retries + 1", attempt("gate_bad_nodes", bad=("node2",), room=ROOM),
     [GATE1, GATE1], Budget(9, 2), "final", "FAILED", ()),
    ("gate: too few nodes left", attempt("gate_bad_nodes", bad=("node2", "node3"), room=ROOM),
     [GATE1], Budget(9, 5), "final", "FAILED", ()),
    ("gate: exactly enough nodes left", attempt("gate_bad_nodes", bad=("node2",), room=ROOM),
     [GATE1], Budget(9, 5), "requeue", "REQUEUED", ("node1", "node2")),
    ("gate: an exclude outside the partition does not count",
     attempt("gate_bad_nodes", bad=("node2",), room=Room(ROOM.partition_nodes, 3, ("gpu9",))),
     [], B, "requeue", "REQUEUED", ("gpu9", "node2")),
    ("gate: rounds are stalls too", attempt("gate_bad_nodes", bad=("node2",), room=ROOM),
     [STALL, STALL], B, "final", "FAILED", ()),
    ("gate without a room: no node guard", attempt("gate_bad_nodes", bad=("node2",)), [], B,
     "requeue", "REQUEUED", ("node2",)),
    ("crash after gate rounds keeps the exclude", attempt("crash", 0, 10), [GATE1], B,
     "requeue", "REQUEUED", ("node1",)),
])
def test_decide(name: str, att: Attempt, ledger: list[Entry], budget: Budget, action: str,
                state: str, exclude: tuple[str, ...]) -> None:
    decision = decide(att, ledger, budget)
    assert (decision.action, decision.state, decision.exclude) == (action, state, exclude), (
        name, decision.reason)
    assert decision.reason


def test_a_deterministic_crash_stops_after_exactly_max_restarts_requeues() -> None:
    ledger: list[Entry] = []
    for number in range(10):
        decision = decide(attempt("crash", 5, 5), ledger, Budget(max_restarts=3))
        if decision.action == "final":
            break
        ledger.append(past("crash", 5, 5))
    assert number == 3 and decision.state == "FAILED"
    assert "4 attempts without progress, more than max_restarts=3" in decision.reason


@pytest.mark.parametrize(("att", "ledger", "words"), [
    (attempt("crash", 10, 10), [STALL, STALL], ["crash (exit code 3)", "step 10 -> 10",
                                                "max_restarts=2", "giving up"]),
    (attempt("time_limit", None, 0), [], ["checkpoint advanced", "step none -> 0"]),
    (attempt("gate_bad_nodes", bad=("node2",), room=ROOM), [GATE1, GATE1],
     ["bad nodes node2", "after 2 requeues", "gate_retries=2", "did not run"]),
    (attempt("gate_bad_nodes", bad=("node2", "node3"), room=ROOM), [GATE1],
     ["only 1 nodes of the partition remain for 2", "node1,node2,node3"]),
    (attempt("preempted"), [], ["no restart budget"]),
])
def test_reasons_name_the_cause_and_the_numbers(att: Attempt, ledger: list[Entry],
                                                words: list[str]) -> None:
    reason = decide(att, ledger, B).reason
    for word in words:
        assert word in reason


@pytest.mark.parametrize(("before", "after", "moved"), [
    (None, None, False), (None, 0, True), (3, None, False), (3, 3, False), (3, 4, True),
    (4, 3, False),
])
def test_progress(before: int | None, after: int | None, moved: bool) -> None:
    assert progressed(before, after) is moved
    assert stalled("crash", before, after) is not moved
    assert stalled("preempted", before, after) is False


def test_decisions_are_frozen() -> None:
    decision = Decision("final", "FAILED", "x")
    with pytest.raises(AttributeError):
        decision.state = "COMPLETED"  # type: ignore[misc]


@pytest.mark.parametrize(("now", "reached"), [
    ("2026-11-23T18:40:00", False), ("2026-11-23T18:40:54", False),
    ("2026-11-23T18:40:56", True), ("2026-11-23T18:41:00", True), ("2026-11-23T18:42:30", True),
])
def test_time_limit_reached_against_scontrols_end_time(now: str, reached: bool) -> None:
    when = datetime.datetime.fromisoformat(now)
    assert time_limit_reached("2026-11-23T18:41:00", when) is reached
    local = when.astimezone()  # an aware "now" is compared in local time, as scontrol prints
    assert time_limit_reached("2026-11-23T18:41:00", local) is reached


def test_no_end_time_is_no_time_limit() -> None:
    assert time_limit_reached(None, datetime.datetime.now()) is False
