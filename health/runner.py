"""Run a tier's checks on this node: gather facts lazily, evaluate, report."""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiinfra.health.facts import CollectContext, Facts, gather, new_facts
from aiinfra.health.registry import Check, Tier, checks_for, collectors
from aiinfra.health.result import CheckResult, Status, ok, unknown, worst
from aiinfra.health.thresholds import for_node
from aiinfra.launcher.errors import SpecError
from aiinfra.launcher.schema import Origins, build
from aiinfra.launcher.profile import HealthSettings


@dataclass(frozen=True)
class NodeReport:
    node: str
    tier: str
    profile: str
    results: tuple[CheckResult, ...]
    stopped_early: bool = False

    @property
    def status(self) -> Status:
        return worst(r.status for r in self.results)

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "status": self.status.name, "tier": self.tier,
                "profile": self.profile, "stopped_early": self.stopped_early,
                "checks": [r.as_json() for r in self.results]}


def node_thresholds(health: HealthSettings, node: str) -> dict[str, dict[str, Any]]:
    return for_node(health.thresholds, [(o.nodes, o.thresholds) for o in health.override], node)


def run_node(health: HealthSettings, profile_name: str, tier: Tier, node: str, *,
             fail_fast: bool = False, recorded: Facts | None = None,
             only: Sequence[Check] = ()) -> tuple[NodeReport, Facts]:
    """Evaluate ``tier`` (or just the checks in ``only``) on ``node``. Facts are gathered as
    the checks need them (so a fail-fast gate stops before the expensive ones) unless
    ``recorded`` facts replay."""
    thresholds = node_thresholds(health, node)
    ctx = CollectContext(node, tier, thresholds)
    facts = recorded if recorded is not None else new_facts(node)
    results: list[CheckResult] = []
    stopped = False
    for chk in only or checks_for(tier):
        start = time.monotonic()
        if any(fnmatch.fnmatchcase(chk.name, pattern) for pattern in health.skip):
            results.append(ok(chk.name, f"not checked: profile {profile_name!r} skips it"))
            continue
        if recorded is None:
            missing = [collectors()[s] for s in chk.needs if s not in facts]
            gather(facts, missing, ctx, health.collect_timeout_s)
        result = evaluate(chk, facts, thresholds.get(chk.name), profile_name)
        results.append(dataclasses.replace(result, duration_s=time.monotonic() - start))
        if fail_fast and result.status == Status.CRIT:
            stopped = True
            break
    return NodeReport(node, tier, profile_name, tuple(results), stopped), facts


def evaluate(chk: Check, facts: Facts, table: Mapping[str, Any] | None,
             profile_name: str) -> CheckResult:
    """One check: its thresholds from the profile, then the pure function; never raises."""
    if table is None:
        return unknown(chk.name, f"profile {profile_name!r} sets no thresholds for it")
    try:
        params: Any = build(chk.params, table, Origins(f"profile {profile_name}"),
                       f"health.thresholds.{chk.name}")
    except SpecError as exc:
        return unknown(chk.name, str(exc))
    try:
        return chk.func(facts, params)
    except Exception as exc:  # a check bug is reported, never a traceback
        return unknown(chk.name, f"check failed: {type(exc).__name__}: {exc}")


def all_sections(tier: Tier) -> list[str]:
    """Every facts section a tier's checks read, in first-use order."""
    seen: dict[str, None] = {}
    for chk in checks_for(tier):
        seen.update(dict.fromkeys(chk.needs))
    return list(seen)


def record(health: HealthSettings, tier: Tier, node: str) -> Facts:
    """All facts a tier reads, for fixtures and bug reports."""
    ctx = CollectContext(node, tier, node_thresholds(health, node))
    facts = new_facts(node)
    gather(facts, [collectors()[s] for s in all_sections(tier)], ctx, health.collect_timeout_s)
    return facts


def table(report: NodeReport) -> str:
    """The report for people: one line per check."""
    width = max((len(r.name) for r in report.results), default=5)
    lines = [f"{report.node}: {report.status.name} (tier {report.tier}, profile {report.profile})"]
    for r in report.results:
        lines.append(f"  {r.status.name:<7} {r.name:<{width}}  {r.summary}")
    if report.stopped_early:
        lines.append("  (stopped at the first CRIT: fail-fast)")
    return "\n".join(lines)
