"""The nightly sweep's decisions: pure functions of node states, results, history, settings.

Nothing here runs Slurm or touches files: the driver (:mod:`.sweeprun`) gathers the inputs,
these functions decide, and the driver carries the decisions out (or only prints them).

Ownership: a node is *ours* when it is drained with a reason that starts ``aiinfra:``; only
ours are ever resumed. A node drained, down or reserved for any other reason is *foreign*:
never checked, never touched, reported as it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..launcher.errors import AiinfraError
from ..launcher.schema import Origins, build, field
from .result import Status, worst

REASON_PREFIX = "aiinfra:"
REASON_MAX = 80  # Slurm keeps longer reasons, but sinfo and people read the first words
BUSY_STATES = frozenset({"allocated", "mixed", "completing"})
_NOT_RESPONDING = "*"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f|]+")

Kind = Literal["idle", "busy", "ours", "ours-busy", "foreign"]
Action = Literal["drain", "redrain", "resume", "none"]
Outcome = Literal["drained", "resumed", "unchanged", "skipped"]
BusyPolicy = Literal["skip", "wait"]
SweepTier = Literal["quick", "standard", "deep"]


class SweepError(AiinfraError):
    """The sweep cannot start or cannot plan (bad settings, another sweep running...)."""


def _positive(value: int) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


def _positive_float(value: float) -> str | None:
    return None if value > 0 else f"must be more than 0, got {value}"


def _fraction(value: float) -> str | None:
    return None if 0 <= value <= 1 else f"must be a share between 0 and 1, got {value}"


@dataclass(frozen=True)
class SweepSettings:
    tier: SweepTier = field("quick", doc="the checks each node runs")
    max_nodes_per_job: int = field(128, check=_positive, doc="no health job spans more nodes")
    max_jobs: int = field(100, check=_positive, doc="at most this many sbatch calls per sweep")
    deadline_s: float = field(900.0, check=_positive_float,
                              doc="a node that has not reported by then is UNKNOWN")
    busy: BusyPolicy = field("skip", doc="busy nodes: skip them, or wait until the deadline")
    drain_after: int = field(1, check=_positive, doc="consecutive CRIT sweeps before a drain")
    resume_after: int = field(2, check=_positive,
                              doc="consecutive passing sweeps before an aiinfra drain is lifted")
    max_drain_fraction: float = field(0.10, check=_fraction,
                                      doc="more new drains than this share of the swept "
                                          "nodes (never fewer than 1) drains none")
    check_drained: bool = field(True, doc="check aiinfra-drained nodes in a maintenance "
                                          "reservation so they can come back")
    state_dir: str | None = field(None, doc="lock, run directories (default "
                                            "~/.local/state/aiinfra/sweep); shared with nodes")
    history: str | None = field(None, doc="SQLite history (default STATE_DIR/history.sqlite)")
    textfile: str | None = field(None, doc="Prometheus node_exporter textfile to write")


def load_settings(tables: Iterable[tuple[str, Mapping[str, Any]]]) -> SweepSettings:
    """Lay ``(source, table)`` pairs over each other in order and build strict settings.

    Sources are e.g. the profile's ``[health.sweep]``, a ``--settings`` file's ``[sweep]``
    table, then ``--set`` flags; an unknown key or a wrong type names its source."""
    origins = Origins("sweep settings")
    merged: dict[str, Any] = {}
    for source, table in tables:
        for key, value in table.items():
            merged[key] = value
            origins.record(key, source)
    return build(SweepSettings, merged, origins)


# ---------------------------------------------------------------- node states

@dataclass(frozen=True)
class NodeState:
    """One node as sinfo shows it: ``%N``, ``%T`` (e.g. idle, drained, down*) and ``%E``."""

    name: str
    state: str
    reason: str = ""


def is_ours(reason: str) -> bool:
    return reason.startswith(REASON_PREFIX)


def classify(node: NodeState) -> Kind:
    """idle (check it), busy (running jobs), ours (drained by aiinfra, checkable),
    ours-busy (ours but not checkable now), foreign (anyone else's state: never touched)."""
    words = set(node.state.lower().rstrip(_NOT_RESPONDING + "~#!%$@^-").split("+"))
    responding = not node.state.endswith(_NOT_RESPONDING)
    if is_ours(node.reason) and words & {"drained", "draining", "drain"}:
        return "ours" if responding and words == {"drained"} else "ours-busy"
    if node.reason or not responding:
        return "foreign"
    if words == {"idle"}:
        return "idle"
    return "busy" if words <= BUSY_STATES else "foreign"


# ---------------------------------------------------------------- planning

@dataclass(frozen=True)
class Batch:
    nodes: tuple[str, ...]
    reservation: bool = False  # runs in the sweep's maintenance reservation


@dataclass(frozen=True)
class Plan:
    batches: tuple[Batch, ...]
    reserve: tuple[str, ...]  # aiinfra-drained nodes to check under a maint reservation
    skipped: Mapping[str, str]  # node -> why it is not checked

    @property
    def swept(self) -> tuple[str, ...]:
        return tuple(n for b in self.batches for n in b.nodes)


def chunk(nodes: Sequence[str], max_per_job: int) -> list[tuple[str, ...]]:
    """Split ``nodes`` (in order) into the fewest, evenly sized groups of <= max_per_job."""
    if not nodes:
        return []
    jobs = math.ceil(len(nodes) / max_per_job)
    size = math.ceil(len(nodes) / jobs)
    return [tuple(nodes[i:i + size]) for i in range(0, len(nodes), size)]


def skip_reason(node: NodeState, kind: Kind, check_drained: bool = True) -> str:
    if kind == "busy":
        return f"busy ({node.state})"
    if kind == "ours-busy":
        return f"drained by aiinfra but {node.state}: {node.reason}"
    if kind == "ours":
        why = "a dry run reserves nothing" if check_drained else "check_drained is off"
        return f"drained by aiinfra, not checked ({why}): {node.reason}"
    return f"not ours: {node.state}" + (f": {node.reason}" if node.reason else "")


def plan(nodes: Sequence[NodeState], s: SweepSettings, *, reserve: bool = True) -> Plan:
    """Which nodes to check, in which jobs. ``reserve=False`` (a dry run) leaves
    aiinfra-drained nodes unchecked: checking them needs a reservation and a resume."""
    kinds = {n.name: classify(n) for n in nodes}
    want = {"idle"} | ({"busy"} if s.busy == "wait" else set())
    reservable = s.check_drained and reserve
    free = [n.name for n in nodes if kinds[n.name] == "idle"]
    busy = [n.name for n in nodes if kinds[n.name] == "busy" and "busy" in want]
    ours = [n.name for n in nodes if kinds[n.name] == "ours" and reservable]
    batches = ([Batch(c) for c in chunk(free, s.max_nodes_per_job)]
               + [Batch(c) for c in chunk(busy, s.max_nodes_per_job)]
               + [Batch(c, reservation=True) for c in chunk(ours, s.max_nodes_per_job)])
    if len(batches) > s.max_jobs:
        raise SweepError(f"{len(nodes)} nodes need {len(batches)} health jobs of at most "
                         f"{s.max_nodes_per_job} nodes > max_jobs {s.max_jobs}: raise "
                         "max_nodes_per_job or sweep fewer nodes")
    checked = set(free) | set(busy) | set(ours)
    skipped = {n.name: skip_reason(n, kinds[n.name], s.check_drained)
               for n in nodes if n.name not in checked}
    return Plan(tuple(batches), tuple(ours), skipped)


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class NodeResult:
    """A node's verdict in this run: the worst check, and the CRIT checks' summaries."""

    node: str
    status: Status
    failing: tuple[str, ...] = ()
    note: str = ""


def node_result(node: str, report: Mapping[str, Any] | None) -> NodeResult:
    """From a ``health run`` JSON report; none (it never reported) is UNKNOWN, never OK."""
    if report is None:
        return NodeResult(node, Status.UNKNOWN, note="no report before the deadline")
    checks = report.get("checks", [])
    statuses = [Status[c["status"]] for c in checks]
    failing = tuple(c["summary"] for c in checks if c["status"] == "CRIT")
    if not checks or any(c["name"] == "health.watchdog" for c in checks):
        return NodeResult(node, Status.UNKNOWN, note="the health run did not finish")
    return NodeResult(node, worst(statuses), failing)


def passed(status: Status) -> bool:
    return status in (Status.OK, Status.WARN)


def streaks(newest_first: Sequence[Status]) -> tuple[int, int]:
    """(consecutive CRIT runs, consecutive passing runs) ending with the newest.
    UNKNOWN interrupts both: a node that did not report proved nothing."""
    fails = next((i for i, s in enumerate(newest_first) if s != Status.CRIT), len(newest_first))
    passes = next((i for i, s in enumerate(newest_first) if not passed(s)), len(newest_first))
    return fails, passes


# ---------------------------------------------------------------- decisions

@dataclass(frozen=True)
class Decision:
    node: str
    action: Action
    outcome: Outcome
    status: Status | None  # None: not checked
    reason: str = ""  # the Slurm reason for drain / redrain
    note: str = ""  # why, for people


def clean(text: str) -> str:
    return " ".join(_UNSAFE.sub(" ", text).split())


def drain_reason(failing: Sequence[str], limit: int = REASON_MAX) -> str:
    """``aiinfra: CHECK: VALUE...`` from the first CRIT summary (which names the check, the
    value and the limit), ``(+N more)`` for the rest, cut to ``limit`` characters."""
    first = clean(failing[0]) if failing else "no passing report"
    more = f" (+{len(failing) - 1} more)" if len(failing) > 1 else ""
    head = f"{REASON_PREFIX} {first}"
    room = limit - len(more)
    if len(head) > room:
        head = head[:room - 3].rstrip() + "..."
    return head + more


def decide(node: NodeState, result: NodeResult, history: Sequence[Status],
           s: SweepSettings) -> Decision:
    """One checked node. ``history`` holds the node's earlier verdicts, newest first."""
    fails, passes = streaks([result.status, *history])
    if classify(node) == "ours":
        return _decide_ours(node, result, passes, s)
    if result.status == Status.CRIT and fails >= s.drain_after:
        return Decision(node.name, "drain", "drained", result.status,
                        drain_reason(result.failing), f"CRIT {fails} sweep(s) in a row")
    note = (f"CRIT {fails} of drain_after {s.drain_after}" if result.status == Status.CRIT
            else result.note)
    return Decision(node.name, "none", "unchanged", result.status, note=note)


def _decide_ours(node: NodeState, result: NodeResult, passes: int,
                 s: SweepSettings) -> Decision:
    """An aiinfra-drained node checked in the reservation: resume it or drain it again."""
    if passes >= s.resume_after:
        return Decision(node.name, "resume", "resumed", result.status,
                        note=f"passed {passes} sweep(s) in a row")
    if result.status == Status.CRIT:
        return Decision(node.name, "redrain", "unchanged", result.status,
                        drain_reason(result.failing), "still CRIT")
    note = result.note or f"passed {passes} of resume_after {s.resume_after}"
    return Decision(node.name, "redrain", "unchanged", result.status, node.reason, note)


def skipped(node: str, why: str) -> Decision:
    return Decision(node, "none", "skipped", None, note=why)


def drain_cap(swept: int, fraction: float) -> int:
    """How many new drains one run may make: a share of the swept nodes, at least one."""
    return max(1, math.floor(fraction * swept + 1e-9))


def apply_cap(decisions: Sequence[Decision], swept: int,
              fraction: float) -> tuple[list[Decision], str | None]:
    """Over the cap, no new drain happens; the message names the cap."""
    drains = [d for d in decisions if d.action == "drain"]
    cap = drain_cap(swept, fraction)
    if len(drains) <= cap:
        return list(decisions), None
    message = (f"blast-radius cap: {len(drains)} of {swept} swept nodes would be drained, "
               f"more than max_drain_fraction {fraction:g} allows ({cap}); drained none")
    capped = [replace(d, action="none", outcome="unchanged", reason="",
                      note=f"{d.note}; not drained: blast-radius cap")
              if d.action == "drain" else d for d in decisions]
    return capped, message


# ---------------------------------------------------------------- summary

@dataclass(frozen=True)
class Summary:
    run_id: str
    decisions: tuple[Decision, ...]
    cap_message: str | None = None
    dry_run: bool = False

    @property
    def status(self) -> Status:
        if self.cap_message:
            return Status.CRIT
        return worst(d.status for d in self.decisions if d.status is not None)

    def named(self, outcome: Outcome) -> list[str]:
        return [d.node for d in self.decisions if d.outcome == outcome]

    @property
    def changed(self) -> bool:
        return bool(self.named("drained") or self.named("resumed"))

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "nodes": len(self.decisions),
                "drained": self.named("drained"), "resumed": self.named("resumed"),
                "unchanged": self.named("unchanged"), "skipped": self.named("skipped"),
                "capped": self.cap_message is not None, "status": self.status.name,
                "cap": self.cap_message, "dry_run": self.dry_run,
                "unknown": [d.node for d in self.decisions if d.status == Status.UNKNOWN],
                "nodes_detail": {d.node: {"status": d.status.name if d.status is not None else None,
                                          "action": d.action, "reason": d.reason,
                                          "note": d.note} for d in self.decisions}}


def actions_text(summary: Summary) -> list[str]:
    """One line per node, for people; a dry run says "would"."""
    verb = "would " if summary.dry_run else ""
    lines = []
    for d in summary.decisions:
        status = d.status.name if d.status is not None else "-"
        what = {"drain": f"{verb}drain: {d.reason}", "redrain": f"{verb}keep drained: {d.reason}",
                "resume": f"{verb}resume", "none": d.outcome}[d.action]
        lines.append(f"{d.node:<12} {status:<8} {what}" + (f"  ({d.note})" if d.note else ""))
    if summary.cap_message:
        lines.append(summary.cap_message)
    return lines
