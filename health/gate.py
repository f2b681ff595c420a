"""The `aiinfra health` commands' work: run with a watchdog, record, judge a gate."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import cast

from aiinfra.health.kernel import NAME, ScanReport, describe, scan_text
from aiinfra.health.registry import Check, Tier, checks
from aiinfra.health.result import CheckResult, Status
from aiinfra.health.runner import NodeReport, node_thresholds, record, run_node, table
from aiinfra.launcher.errors import AiinfraError, SpecError
from aiinfra.launcher.files import write_atomic
from aiinfra.launcher.profile import load_profile

__all__ = ["judge", "record_command", "run_command", "scan_log_command", "scan_table", "table"]


class WatchdogExpired(AiinfraError):
    """The whole run outlived the profile's health.watchdog_s."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise WatchdogExpired(f"health run exceeded its watchdog of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def this_node(node: str | None) -> str:
    return node or socket.gethostname().split(".")[0]


def run_command(profile_ref: str, tier: str, node: str | None, fail_fast: bool,
                facts_file: Path | None, output_dir: Path | None,
                only: Sequence[str] = ()) -> NodeReport:
    loaded = load_profile(profile_ref)
    chosen = selected_checks(only)
    health = loaded.profile.health
    recorded = json.loads(facts_file.read_text()) if facts_file else None
    name = this_node(node or (recorded or {}).get("node"))
    try:
        with watchdog(health.watchdog_s):
            report, _ = run_node(health, loaded.name, cast(Tier, tier), name,
                                 fail_fast=fail_fast, recorded=recorded, only=chosen)
    except WatchdogExpired as exc:
        report = NodeReport(name, tier, loaded.name,
                            (CheckResult("health.watchdog", Status.UNKNOWN, str(exc)),))
    if output_dir is not None:
        write_atomic(output_dir / f"{report.node}.json", json.dumps(report.as_json(), indent=2) + "\n")
    return report


def selected_checks(only: Sequence[str]) -> tuple[Check, ...]:
    """The checks ``--check`` names, in the registry's order; an unknown name is an error."""
    known = checks()
    unknown = [name for name in only if name not in known]
    if unknown:
        raise SpecError("--check", unknown[0], "unknown check", list(known))
    return tuple(chk for name, chk in known.items() if name in only)


def scan_log_command(log_file: Path, profile_ref: str, node: str | None) -> ScanReport:
    """A saved kernel log judged with the profile's kernel.log thresholds for ``node``."""
    loaded = load_profile(profile_ref)
    thresholds = node_thresholds(loaded.profile.health, this_node(node))
    text = log_file.read_text(errors="replace")
    return scan_text(text, thresholds.get(NAME, {}), str(log_file))


def scan_table(report: ScanReport) -> str:
    """The scan for people: the status, then one line per finding."""
    lines = [f"{report.path}: {report.status.name} ({report.lines} lines)"]
    for f in report.as_json()["findings"]:
        when = f["first"] if f["first"] == f["last"] else f"{f['first']} .. {f['last']}"
        lines.append(f"  {f['action']:<6} {describe(f)}  [{when}]")
    return "\n".join(lines)


def record_command(facts_file: Path, profile_ref: str, tier: str, node: str | None) -> list[str]:
    loaded = load_profile(profile_ref)
    facts = record(loaded.profile.health, cast(Tier, tier), this_node(node))
    write_atomic(facts_file, json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n")
    return [k for k in facts if k not in ("node", "collected_at", "durations_s")]


@dataclass(frozen=True)
class Verdict:
    bad: list[str]
    messages: list[str]


def judge(results_dir: Path, nodes: Sequence[str]) -> Verdict:
    """A node is bad when its report is CRIT, or missing or unreadable (it could not even
    run the checks). WARN and UNKNOWN never block; they are named in the messages."""
    bad, messages = [], []
    for node in nodes:
        path = results_dir / f"{node}.json"
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            bad.append(node)
            messages.append(f"{node} CRIT: no health report ({exc.__class__.__name__}: {path})")
            continue
        for chk in report.get("checks", []):
            if chk["status"] != "OK":
                messages.append(f"{node} {chk['status']}: {chk['summary']}")
        if report.get("status") == "CRIT":
            bad.append(node)
    return Verdict(bad, messages)
