"""gpu.xid: NVIDIA Xid events in the kernel log, judged by a policy table kept in data.

The collector reads the kernel log once (``dmesg``, else ``journalctl -k``) and keeps the
NVRM Xid lines of the time window; parsing is a pure function over the log text; the
policy (health/xid_policy.toml, overridable per site) maps each Xid to drain, warn or ignore.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from aiinfra.health.facts import CollectContext, Facts, FunctionCollector, Section, section_error
from aiinfra.health.registry import check, collector
from aiinfra.health.result import CheckResult, crit, ok, unknown, warn
from aiinfra.launcher.schema import field
from aiinfra.launcher.files import package_dir

Action = Literal["drain", "warn", "ignore"]
ACTIONS: tuple[str, ...] = ("drain", "warn", "ignore")
POLICY_FILE = "xid_policy.toml"
LOG_TIMEOUT_S = 20.0
# Runs a command: argv -> (exit status, stdout, stderr); injectable for tests.
Runner = Callable[[list[str]], tuple[int, str, str]]

# "<ISO time> [host kernel: ]NVRM: Xid (PCI:0000:18:00): 79, pid=..., name=..., text"
# dmesg --time-format=iso writes 2024-05-01T10:23:45,123456+00:00; journalctl -o short-iso
# writes 2024-05-01T10:23:45+0000 host kernel: ...; drivers before R470 print no pid/name.
XID_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\S+)\s.*?NVRM: Xid \((?:PCI:)?(?P<pci>[0-9A-Fa-f]{4,8}:"
    r"[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)\): (?P<xid>\d+), (?P<rest>.*)$")
XID_DETAIL = re.compile(
    r"^(?:pid=(?P<pid>'<unknown>'|<unknown>|\d+), )?(?:name=(?P<name>[^,]*), )?(?P<text>.*)$")


# ---------------------------------------------------------------- parsing (pure)

def parse_xid_lines(text: str) -> list[dict[str, Any]]:
    """Every NVRM Xid event in kernel-log text (dmesg iso or journalctl short-iso lines)."""
    events = []
    for line in text.splitlines():
        match = XID_LINE.match(line.strip())
        if match is None:
            continue
        try:
            when = _utc(match["time"])
        except ValueError:
            continue  # not a timestamp after all
        detail = XID_DETAIL.match(match["rest"])
        assert detail is not None  # the pattern matches any text
        pid = detail["pid"]
        events.append({"time": when.isoformat(), "pci": match["pci"].lower(),
                       "xid": int(match["xid"]), "pid": int(pid) if pid and pid.isdigit() else None,
                       "name": _known(detail["name"]), "text": detail["text"].strip()})
    return events


def _utc(stamp: str) -> datetime:
    """An ISO time from the kernel log in UTC; a time without offset is local time."""
    return datetime.fromisoformat(stamp).astimezone(timezone.utc)


def _known(name: str | None) -> str | None:
    return None if name is None or name.strip("'") == "<unknown>" else name


def within(events: list[dict[str, Any]], now: datetime, hours: float) -> list[dict[str, Any]]:
    """The events logged in the ``hours`` before ``now``."""
    start = now - timedelta(hours=hours)
    return [e for e in events if datetime.fromisoformat(e["time"]) >= start]


# ---------------------------------------------------------------- collector

def collect_xid(ctx: CollectContext, run: Runner | None = None,
                now: datetime | None = None) -> Section:
    settings = ctx.params("gpu.xid", ("window_hours",))
    hours = settings["window_hours"] if isinstance(settings, dict) else None
    now = now or datetime.now(timezone.utc)
    since = None if hours is None else now - timedelta(hours=hours)
    found = read_kernel_log(run or _run, since)
    if isinstance(found, str):
        return {"error": found}
    source, text = found
    events = parse_xid_lines(text)
    return {"source": source, "now": now.isoformat(), "window_hours": hours,
            "events": events if hours is None else within(events, now, hours)}


collector(FunctionCollector("xid", collect_xid))


def read_kernel_log(run: Runner, since: datetime | None) -> tuple[str, str] | str:
    """(source, text) from the first kernel log source that answers, else why none did."""
    since_arg = [] if since is None else [
        "--since", since.astimezone().strftime("%Y-%m-%d %H:%M:%S")]  # journalctl: local time
    sources = [("dmesg", ["dmesg", "--time-format=iso"]),
               ("journalctl", ["journalctl", "-k", "-o", "short-iso", "--no-pager", *since_arg])]
    failures = []
    for source, argv in sources:
        status, out, err = run(argv)
        if status == 0 and _has_messages(out):
            return source, out
        failures.append(f"{' '.join(argv[:2])}: {_why(status, err)}")
    return f"kernel log unreadable: {'; '.join(failures)}"


def _has_messages(out: str) -> bool:
    """A booted kernel always has messages; journalctl's "-- No entries --" is none."""
    return any(line.strip() and not line.startswith("-- ") for line in out.splitlines())


def _why(status: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if status == 0:
        return f"no kernel messages{f' ({lines[-1]})' if lines else ''}"
    return lines[-1] if lines else f"exit status {status}"


def _run(argv: list[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=LOG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {LOG_TIMEOUT_S:g} s"
    except OSError as exc:
        return 127, "", exc.strerror or str(exc)
    return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------- policy

@functools.cache
def policy_table() -> Mapping[int, tuple[str, str]]:
    """Xid -> (action, reason) from health/xid_policy.toml, shipped inside the package."""
    data = tomllib.loads((package_dir("aiinfra.health") / POLICY_FILE).read_text())
    table = {}
    for xid, entry in data["xid"].items():
        if entry["action"] not in ACTIONS:
            raise ValueError(f"{POLICY_FILE}: Xid {xid}: action {entry['action']!r} not in "
                             f"{ACTIONS}")
        table[int(xid)] = (entry["action"], entry["reason"])
    return table


def action_for(xid: int, site: Mapping[str, str], default: str) -> tuple[str, str]:
    """(action, reason) for one Xid: the site's override, the table, else the default."""
    if str(xid) in site:
        return site[str(xid)], "site policy"
    return policy_table().get(xid, (default, "not in the Xid policy table"))


def _check_policy(policy: Mapping[str, str]) -> str | None:
    bad = [key for key in policy if not key.isdigit()]
    return f"keys must be Xid numbers such as \"79\", not {bad}" if bad else None


# ---------------------------------------------------------------- check

@dataclass(frozen=True)
class XidParams:
    window_hours: float = field(doc="how far back in the kernel log to look")
    default_action: Action = field(doc="for Xids the policy table does not list")
    policy: Mapping[str, Action] = field({}, check=_check_policy,
                                         doc="site overrides: {\"79\" = \"drain\"}")


@check("gpu.xid", "quick", ("xid",), XidParams)
def check_xid(facts: Facts, p: XidParams) -> CheckResult:
    """No Xid the policy drains (CRIT) or warns about (WARN) within window_hours."""
    if (why := section_error(facts, "xid")) is not None:
        return unknown("gpu.xid", why)
    section = facts["xid"]
    recent = within(section["events"], datetime.fromisoformat(section["now"]), p.window_hours)
    found: dict[str, list[str]] = {"drain": [], "warn": [], "ignore": []}
    for (xid, pci), count in sorted(Counter((e["xid"], e["pci"]) for e in recent).items()):
        action, reason = action_for(xid, p.policy, p.default_action)
        found[action].append(f"Xid {xid} on PCI:{pci} x{count} in the last {p.window_hours:g} h "
                             f"({action}: {reason})")
    details = {"events": recent, **{action: lines for action, lines in found.items() if lines}}
    if found["drain"] or found["warn"]:
        result = crit if found["drain"] else warn
        return result("gpu.xid", "; ".join(found["drain"] + found["warn"]), **details)
    ignored = f", all ignored by policy ({len(found['ignore'])} kinds)" if recent else ""
    return ok("gpu.xid", f"{len(recent)} Xid events in the last {p.window_hours:g} h "
              f"(expected none to drain or warn){ignored}", **details)
