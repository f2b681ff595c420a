"""The requeue policy: how an attempt ended, and what happens next (pure functions).

The supervisor gathers facts (:class:`Evidence`), :func:`classify` turns them into an
:class:`Outcome`, and :func:`decide` turns the outcome, the checkpoint steps and the ledger
so far into a :class:`Decision`: requeue (with the nodes to exclude) or a final state.

Rules, in the order :func:`decide` applies them:

1. completed -> COMPLETED; cancelled by the user -> CANCELLED. Never retried.
2. preempted -> requeue, always: preemption is the scheduler's choice, not a fault of the
   job, and does not use the restart budget.
3. Progress: an attempt *made progress* when its checkpoint step after is known and greater
   than the step before (or there was none before). Progress is what lets a retry happen;
   it resets nothing.
4. A *stall* is an attempt that ended in a crash, a node failure or a failed preflight gate
   without progress. ``max_restarts`` is the number of stalls the job may be restarted
   from, counted over the whole ledger (not in a row): the stall that brings the count
   above ``max_restarts`` ends the job.
5. time limit -> requeue only with progress; without it the next attempt would redo the
   same work, so the job ends TIMEOUT at once.
6. crash -> requeue with progress; without it, requeue while the stalls stay within
   ``max_restarts`` (a GPU or network fault often kills a rank before the next checkpoint),
   else FAILED. A crash that repeats without progress therefore stops after the budget.
7. node failure -> as a crash (infrastructure fault: retried), final state NODE_FAIL.
8. failed preflight gate -> requeue without the bad nodes (plus every node excluded
   before, plus the job's own ``--exclude``), unless this is gate round number
   ``gate_retries + 1``, or fewer nodes than the job needs would remain in the partition,
   or the stall budget is spent. Gate rounds live in the same ledger and count as stalls.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from .slurm import AcctRow

OutcomeKind = Literal["completed", "time_limit", "preempted", "node_fail", "crash",
                      "gate_bad_nodes", "cancelled"]
OUTCOMES: tuple[OutcomeKind, ...] = ("completed", "time_limit", "preempted", "node_fail",
                                     "crash", "gate_bad_nodes", "cancelled")
Action = Literal["requeue", "final"]
_STALLING: frozenset[str] = frozenset({"crash", "node_fail", "gate_bad_nodes"})


@dataclass(frozen=True)
class Evidence:
    """What the supervisor knows when an attempt's command has ended (or never started).

    ``step``: the launched step's final sacct line (the truth about a crash: when one rank
    exits 3, srun kills the others, the batch script sees 143 and the allocation FAILED
    15:0, but the step line says FAILED 3:0); ``returncode``: what the launch command
    returned, used only when the step line is missing; ``signals``: signals the
    supervisor received ("USR2" before the time limit, "TERM"); ``preempt_time``:
    ``scontrol show job`` shows a PreemptTime; ``requeued``: Slurm's restart count moved
    past this attempt (someone else requeued the job); ``time_limit``: the job reached
    its time limit (:func:`time_limit_reached`: a TERM without USR2 at the limit is the
    limit, not a scancel); ``job_state``: the allocation's state; ``unresponsive``: allocated
    nodes that are down or not responding; ``bad_nodes``: the preflight gate's verdict
    (the command did not run).
    """

    step: AcctRow | None = None
    returncode: int | None = None
    signals: frozenset[str] = frozenset()
    preempt_time: bool = False
    requeued: bool = False
    time_limit: bool = False
    job_state: str = ""
    unresponsive: tuple[str, ...] = ()
    bad_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended; ``detail`` names the evidence that decided it."""

    kind: OutcomeKind
    exit_code: int = 0
    signal: int = 0
    bad_nodes: tuple[str, ...] = ()  # the gate's bad nodes, or the nodes that failed
    detail: str = ""

    def describe(self) -> str:
        text = self.kind.replace("_", " ")
        if self.kind == "crash":
            text += f" ({_status_text(self.exit_code, self.signal)})"
        if self.bad_nodes:
            text += f" on {','.join(self.bad_nodes)}"
        return text


@dataclass(frozen=True)
class Budget:
    max_restarts: int = 3
    gate_retries: int = 2


@dataclass(frozen=True)
class Room:
    """Where the job can still run: the gate's "too few nodes left" guard."""

    partition_nodes: tuple[str, ...]  # every node of the job's partition
    nodes_needed: int
    excluded: tuple[str, ...] = ()  # the job's own --exclude


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    step_before: int | None = None
    step_after: int | None = None
    room: Room | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    state: str  # REQUEUED, or the final state: COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL
    reason: str
    exclude: tuple[str, ...] = ()  # the whole ExcNodeList to set before the next attempt


class PastAttempt(Protocol):
    """A ledger line as :func:`decide` reads it (see ``ledger.Entry``)."""

    @property
    def outcome(self) -> str: ...
    @property
    def bad_nodes(self) -> tuple[str, ...]: ...
    @property
    def step_before(self) -> int | None: ...
    @property
    def step_after(self) -> int | None: ...


# --- classify ------------------------------------------------------------------------------

def time_limit_reached(end_time: str | None, now: datetime.datetime,
                       slack_s: float = 5.0) -> bool:
    """``now`` is at or past the job's EndTime (``scontrol show job``, local time).

    Slurm sends SIGTERM at the time limit, never before it (its timer may be late), so a
    TERM at this point is the limit even when no USR2 came first.
    """
    if end_time is None:
        return False
    end = datetime.datetime.fromisoformat(end_time)
    if end.tzinfo is None and now.tzinfo is not None:
        now = now.astimezone().replace(tzinfo=None)  # scontrol prints local time
    return (now - end).total_seconds() >= -slack_s


def classify(ev: Evidence) -> Outcome:
    """How the attempt ended, from the strongest evidence down (see the module doc)."""
    code, sig = _exit_status(ev)
    if ev.bad_nodes:
        return Outcome("gate_bad_nodes", bad_nodes=_sorted(ev.bad_nodes),
                       detail="the preflight gate found bad nodes; the command did not run")
    if ev.unresponsive or ev.job_state == "NODE_FAIL" or _step_state(ev) == "NODE_FAIL":
        return Outcome("node_fail", code, sig, _sorted(ev.unresponsive), _node_fail_detail(ev))
    if ev.preempt_time or ev.job_state == "PREEMPTED":
        return Outcome("preempted", code, sig, detail="scontrol shows a PreemptTime")
    if ev.requeued:
        return Outcome("preempted", code, sig, detail="requeued from outside the job")
    if "USR2" in ev.signals or ev.time_limit or ev.job_state == "TIMEOUT":
        return Outcome("time_limit", code, sig, detail=_time_limit_detail(ev))
    if "TERM" in ev.signals or "CANCELLED" in (ev.job_state, _step_state(ev)):
        return Outcome("cancelled", code, sig, detail=_cancel_detail(ev))
    if code == 0 and sig == 0 and ev.step is None and ev.returncode is None:
        return Outcome("crash", detail="the command left no exit status")
    if code == 0 and sig == 0 and _step_state(ev) in ("", "COMPLETED"):
        return Outcome("completed", detail=_status_source(ev))
    return Outcome("crash", code, sig, detail=_status_source(ev))


def _exit_status(ev: Evidence) -> tuple[int, int]:
    """``(exit code, signal)`` of the command: the step line, else the launcher's code."""
    if ev.step is not None:
        return ev.step.exit_code, ev.step.signal
    if ev.returncode is None:
        return 0, 0
    if ev.returncode > 128:
        return 0, ev.returncode - 128  # bash: 128 + N for a child killed by signal N
    if ev.returncode < 0:
        return 0, -ev.returncode  # subprocess: -N for a child killed by signal N
    return ev.returncode, 0


def _step_state(ev: Evidence) -> str:
    return ev.step.state if ev.step is not None else ""


def _sorted(nodes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(nodes)))


def _node_fail_detail(ev: Evidence) -> str:
    if ev.unresponsive:
        return f"not responding: {','.join(_sorted(ev.unresponsive))}"
    return "Slurm reports NODE_FAIL"


def _time_limit_detail(ev: Evidence) -> str:
    return "USR2 before the time limit" if "USR2" in ev.signals else "the time limit was reached"


def _cancel_detail(ev: Evidence) -> str:
    if "TERM" in ev.signals:
        return "SIGTERM without preemption, requeue or time limit: scancel"
    return "the job was cancelled" if ev.job_state == "CANCELLED" else "the step was cancelled"


def _status_source(ev: Evidence) -> str:
    if ev.step is not None:
        return f"step {ev.step.step} {ev.step.state} {ev.step.exit_code}:{ev.step.signal}"
    return f"launch command returned {ev.returncode}"


def _status_text(code: int, sig: int) -> str:
    return f"signal {sig}" if sig else f"exit code {code}"


# --- decide --------------------------------------------------------------------------------

def progressed(step_before: int | None, step_after: int | None) -> bool:
    """The checkpoint advanced: a step after, greater than the step before (if any)."""
    return step_after is not None and (step_before is None or step_after > step_before)


def stalled(outcome: str, step_before: int | None, step_after: int | None) -> bool:
    """A crash, node failure or gate round that left the checkpoint where it was."""
    return outcome in _STALLING and not progressed(step_before, step_after)


def decide(attempt: Attempt, ledger: Sequence[PastAttempt], budget: Budget) -> Decision:
    """Requeue or stop after ``attempt``, given the earlier attempts of the same job."""
    kind = attempt.outcome.kind
    what = attempt.outcome.describe()
    if kind == "completed":
        return Decision("final", "COMPLETED", "the command completed")
    if kind == "cancelled":
        return Decision("final", "CANCELLED", f"cancelled ({attempt.outcome.detail})")
    exclude = _excluded(attempt, ledger)
    if kind == "preempted":
        return Decision("requeue", "REQUEUED", f"{what}: requeued (preemption uses no "
                        "restart budget)", exclude)
    if kind == "gate_bad_nodes":
        return _decide_gate(attempt, ledger, budget, exclude)
    moved = progressed(attempt.step_before, attempt.step_after)
    steps = _steps_text(attempt)
    if moved:
        return Decision("requeue", "REQUEUED", f"{what}; checkpoint advanced ({steps}): "
                        "requeued", exclude)
    if kind == "time_limit":
        return Decision("final", "TIMEOUT", f"{what} without checkpoint progress ({steps}): "
                        "another attempt would redo the same work")
    return _within_budget(attempt, ledger, budget, exclude, f"{what} without checkpoint "
                          f"progress ({steps})")


def _decide_gate(attempt: Attempt, ledger: Sequence[PastAttempt], budget: Budget,
                 exclude: tuple[str, ...]) -> Decision:
    bad = ",".join(attempt.outcome.bad_nodes)
    rounds = 1 + sum(1 for past in ledger if past.outcome == "gate_bad_nodes")
    if rounds > budget.gate_retries:
        return Decision("final", "FAILED", f"preflight: bad nodes {bad} after {rounds - 1} "
                        f"requeues (gate_retries={budget.gate_retries}): the command did not "
                        "run")
    room = attempt.room
    left = len(set(room.partition_nodes) - set(exclude)) if room else 0
    if room and left < room.nodes_needed:
        return Decision("final", "FAILED", f"preflight: bad nodes {bad}; without "
                        f"{','.join(exclude)} only {left} nodes of the partition remain for "
                        f"{room.nodes_needed}: the command did not run")
    return _within_budget(attempt, ledger, budget, exclude, f"preflight: bad nodes {bad} "
                          f"(round {rounds} of {budget.gate_retries})")


def _within_budget(attempt: Attempt, ledger: Sequence[PastAttempt], budget: Budget,
                   exclude: tuple[str, ...], what: str) -> Decision:
    """Requeue a stall while the stalls so far, this one included, fit ``max_restarts``."""
    stalls = 1 + sum(1 for p in ledger if stalled(p.outcome, p.step_before, p.step_after))
    if stalls <= budget.max_restarts:
        return Decision("requeue", "REQUEUED", f"{what}: requeued (attempt without progress "
                        f"{stalls} of max_restarts={budget.max_restarts})", exclude)
    final = "NODE_FAIL" if attempt.outcome.kind == "node_fail" else "FAILED"
    return Decision("final", final, f"{what}: {stalls} attempts without progress, more "
                    f"than max_restarts={budget.max_restarts}: giving up")


def _excluded(attempt: Attempt, ledger: Sequence[PastAttempt]) -> tuple[str, ...]:
    """The job's own exclude, every earlier gate's bad nodes, and this gate's."""
    nodes = set(attempt.room.excluded if attempt.room else ())
    for past in ledger:
        if past.outcome == "gate_bad_nodes":
            nodes.update(past.bad_nodes)
    if attempt.outcome.kind == "gate_bad_nodes":
        nodes.update(attempt.outcome.bad_nodes)
    return tuple(sorted(nodes))


def _steps_text(attempt: Attempt) -> str:
    before = "none" if attempt.step_before is None else str(attempt.step_before)
    after = "none" if attempt.step_after is None else str(attempt.step_after)
    return f"step {before} -> {after}"
