"""kernel.log: failure signatures in the kernel log, judged by policy kept in data.

The collector reads the kernel log once (``dmesg``, else ``journalctl -k``; or the file a
profile names in ``log_file``) under a time limit and counts the signature events of the
time window (health/kernlog.py, signatures in health/kernel_signatures.toml). The check is
pure: each group of events becomes a finding whose action comes from the profile, the
Xid/SXid tables (health/xid_policy.toml) or the signature; the worst action sets the status
(drain -> CRIT, warn -> WARN). ``scan_file`` runs the same path over a saved log.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiinfra.launcher.schema import Origins, build, field
from aiinfra.launcher.files import package_dir

from .facts import CollectContext, Facts, FunctionCollector, Section, section_error
from .kernlog import (ACTIONS, CODE_TABLES, SEVERITY, Action, Signature, SignatureError, Window,
                      check_site_signatures, normal_pci, scan, signature, signatures_from_toml)
from .registry import check, collector
from .result import SUMMARY_PROBLEMS, CheckResult, Status, crit, ok, unknown, warn

NAME = "kernel.log"
SIGNATURE_FILE = "kernel_signatures.toml"
POLICY_FILE = "xid_policy.toml"
LOG_TIMEOUT_S = 20.0
PROC_STAT = Path("/proc/stat")
# Runs a command: argv -> (exit status, stdout, stderr); injectable for tests.
Runner = Callable[[list[str]], tuple[int, str, str]]


# ---------------------------------------------------------------- data files

@functools.cache
def builtin_signatures() -> tuple[Signature, ...]:
    return signatures_from_toml((package_dir("aiinfra.health") / SIGNATURE_FILE).read_text())


@functools.cache
def code_policy() -> Mapping[str, Mapping[int, tuple[str, str]]]:
    """{"xid": {code: (action, reason)}, "sxid": {...}} from xid_policy.toml."""
    data = tomllib.loads((package_dir("aiinfra.health") / POLICY_FILE).read_text())
    tables: dict[str, dict[int, tuple[str, str]]] = {}
    for name in CODE_TABLES:
        tables[name] = {}
        for code, entry in data[name].items():
            if entry["action"] not in ACTIONS:
                raise ValueError(f"{POLICY_FILE}: [{name}] {code}: action {entry['action']!r} "
                                 f"not in {ACTIONS}")
            tables[name][int(code)] = (entry["action"], entry["reason"])
    return tables


def all_signatures(site: Sequence[Mapping[str, Any]] = ()) -> tuple[Signature, ...]:
    """The shipped signatures, then the site's (from the profile)."""
    return builtin_signatures() + _site(json.dumps([dict(t) for t in site], sort_keys=True))


@functools.lru_cache(maxsize=32)
def _site(encoded: str) -> tuple[Signature, ...]:
    return tuple(signature(t) for t in json.loads(encoded))


# ---------------------------------------------------------------- params

def _check_codes(policy: Mapping[str, str]) -> str | None:
    bad = [key for key in policy if not key.isdigit()]
    return f"keys must be code numbers such as \"79\", not {bad}" if bad else None


def _check_classes(table: Mapping[str, Any]) -> str | None:
    known = {s.cls for s in builtin_signatures()}
    bad = [key for key in table if key not in known]
    return f"unknown classes {bad} (site signatures add theirs with their own action)" if bad \
        else None


@dataclass(frozen=True)
class KernelLogParams:
    window_hours: float = field(24.0, doc="how far back in the kernel log to look")
    default_action: Action = field("warn", doc="for Xid/SXid codes the policy tables do not list")
    log_file: str = field("", doc="read this saved log instead of the live kernel log")
    xid_policy: Mapping[str, Action] = field({}, check=_check_codes,
                                             doc="site Xid overrides: {\"79\" = \"drain\"}")
    sxid_policy: Mapping[str, Action] = field({}, check=_check_codes,
                                              doc="site SXid overrides: {\"20034\" = \"warn\"}")
    actions: Mapping[str, Action] = field({}, check=_check_classes,
                                          doc="per-class action overrides")
    storm_counts: Mapping[str, int] = field({}, check=_check_classes,
                                            doc="per-class event counts that escalate")
    signatures: tuple[Mapping[str, Any], ...] = field((), check=check_site_signatures,
                                                      doc="site signatures, same keys as the file")


# ---------------------------------------------------------------- collector

def collect_kernlog(ctx: CollectContext, run: Runner | None = None,
                    now: datetime | None = None) -> Section:
    table = ctx.thresholds.get(NAME)
    if table is None:
        return {"error": f"the profile sets no {NAME} thresholds"}
    hours = table.get("window_hours", 24.0)
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(hours=hours)
    try:
        sigs = all_signatures(table.get("signatures", ()))
    except SignatureError as exc:
        return {"error": str(exc)}
    found = _read_log(str(table.get("log_file", "")), run or _run, since)
    if isinstance(found, str):
        return {"error": found}
    source, text, boot = found
    groups = scan(text, sigs, Window(since.timestamp(), boot, now.year))
    return {"source": source, "now": now.isoformat(), "window_hours": hours,
            "lines": text.count("\n"), "groups": groups}


collector(FunctionCollector("kernlog", collect_kernlog))


def _read_log(log_file: str, run: Runner, since: datetime) -> tuple[str, str, float | None] | str:
    """(source, text, boot time) of the live log or the profile's saved file, or why not."""
    if log_file:
        try:
            return f"file {log_file}", Path(log_file).read_text(errors="replace"), None
        except OSError as exc:
            return f"kernel log file unreadable: {log_file}: {exc.strerror or exc}"
    found = read_kernel_log(run, since)
    return found if isinstance(found, str) else (*found, boot_time())


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


def boot_time(proc_stat: Path = PROC_STAT) -> float | None:
    """Epoch seconds of the boot (btime in /proc/stat): turns since-boot stamps absolute."""
    try:
        for line in proc_stat.read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _has_messages(out: str) -> bool:
    """A booted kernel always has messages; journalctl's "-- No entries --" is none."""
    return any(line.strip() and not line.startswith("-- ") for line in out.splitlines()[:50])


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


# ---------------------------------------------------------------- policy (pure)

def judge(group: Mapping[str, Any], sig: Signature, p: KernelLogParams) -> tuple[str, str]:
    """(action, reason) for one group of events: site class override, then the code
    tables or the signature, then the storm escalation."""
    cls = group["class"]
    if cls in p.actions:
        return p.actions[cls], "site policy for the class"
    action, reason = _code_action(sig, group, p) if sig.codes else (sig.action, sig.reason)
    storm = p.storm_counts.get(cls, sig.storm_count)
    if storm and group["count"] >= storm and SEVERITY[sig.storm_action] > SEVERITY[action]:
        return sig.storm_action, f"{group['count']} events >= storm count {storm}: {reason}"
    return action, reason


def _code_action(sig: Signature, group: Mapping[str, Any], p: KernelLogParams) -> tuple[str, str]:
    code = group["code"]
    site = p.xid_policy if sig.codes == "xid" else p.sxid_policy
    if code is not None and str(code) in site:
        return site[str(code)], "site policy"
    table = code_policy()[sig.codes].get(code) if code is not None else None
    if group.get("severity") == "Fatal":
        return "drain", f"reported Fatal{f': {table[1]}' if table else ''}"
    if table is not None:
        return table
    return p.default_action, f"not in the {sig.codes.upper()} policy table"


def findings(groups: Sequence[Mapping[str, Any]], p: KernelLogParams,
             gpus: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each group with its action, reason and (when NVML answered) the GPU's index/UUID."""
    by_class: dict[str, Signature] = {}
    for sig in all_signatures(p.signatures):
        by_class.setdefault(sig.cls, sig)
    out = []
    for group in groups:
        action, reason = judge(group, by_class[group["class"]], p)
        gpu = (gpus or {}).get(group.get("pci") or "")
        out.append({**group, "action": action, "reason": reason,
                    **({"gpu_index": gpu["index"], "gpu_uuid": gpu.get("uuid")} if gpu else {})})
    return sorted(out, key=lambda f: (-SEVERITY[f["action"]], f["class"], f["device"]))


def gpu_map(facts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Normalised PCI address -> NVML index/UUID, from the gpu facts when they were read."""
    section = facts.get("gpu")
    if not isinstance(section, Mapping) or "gpus" not in section:
        return {}
    return {normal_pci(g["pci_bus_id"]): {"index": g["index"], "uuid": g.get("uuid")}
            for g in section["gpus"] if "pci_bus_id" in g}


def describe(f: Mapping[str, Any]) -> str:
    """One finding for people: class, code, device, process, count, action and why."""
    code = f" {f['code']}" if f.get("code") is not None else ""
    where = f" on {f['device']}" if f.get("device") else ""
    if "gpu_index" in f:
        where += f" (GPU {f['gpu_index']})"
    who = f" by {f['process']}" if f.get("process") else ""
    who += f"[{f['pid']}]" if f.get("process") and f.get("pid") else ""
    return f"{f['class']}{code}{where}{who} x{f['count']} ({f['action']}: {f['reason']})"


def verdict(found: Sequence[Mapping[str, Any]], scope: str, **details: Any) -> CheckResult:
    """The worst action sets the status; the summary names the findings that act."""
    acting = [f for f in found if f["action"] != "ignore"]
    details = {"findings": list(found), **details}
    if not acting:
        ignored = f", {len(found)} ignored by policy" if found else ""
        return ok(NAME, f"no signature to drain or warn {scope}{ignored}", **details)
    shown = [describe(f) for f in acting[:SUMMARY_PROBLEMS]]
    if len(acting) > SUMMARY_PROBLEMS:
        shown.append(f"... {len(acting) - SUMMARY_PROBLEMS} more")
    result = crit if acting[0]["action"] == "drain" else warn
    return result(NAME, "; ".join(shown), **details)


@check(NAME, "quick", ("kernlog",), KernelLogParams)
def check_kernel_log(facts: Facts, p: KernelLogParams) -> CheckResult:
    """No failure signature in the kernel log that the policy drains (CRIT) or warns about."""
    if (why := section_error(facts, "kernlog")) is not None:
        return unknown(NAME, why)
    section = facts["kernlog"]
    found = findings(section["groups"], p, gpu_map(facts))
    return verdict(found, f"in the last {section['window_hours']:g} h ({section['source']})",
                   source=section["source"], lines=section["lines"])


# ---------------------------------------------------------------- scan-log

@dataclass(frozen=True)
class ScanReport:
    path: str
    lines: int
    result: CheckResult

    @property
    def status(self) -> Status:
        return self.result.status

    def as_json(self) -> dict[str, Any]:
        return {"file": self.path, "lines": self.lines, "status": self.status.name,
                "summary": self.result.summary, "findings": self.result.details["findings"]}


def scan_text(text: str, table: Mapping[str, Any], name: str = "log") -> ScanReport:
    """A saved log through the check's path, every line kept (no window: a post-mortem)."""
    params = build(KernelLogParams, table, Origins("profile"), f"health.thresholds.{NAME}")
    groups = scan(text, all_signatures(params.signatures), Window())
    return ScanReport(name, text.count("\n"), verdict(findings(groups, params), f"in {name}"))
