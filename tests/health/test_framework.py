"""The health framework: statuses, thresholds per node, runner, profile validation, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiinfra.health import registry
from aiinfra.health.facts import CollectContext, FunctionCollector, gather, new_facts
from aiinfra.health.gate import judge, watchdog, WatchdogExpired
from aiinfra.health.registry import Check
from aiinfra.health.result import CheckResult, Status, crit, ok, worst
from aiinfra.health.runner import evaluate, node_thresholds, run_node
from aiinfra.health.thresholds import for_node, node_matches
from aiinfra.launcher.errors import SpecError
from aiinfra.launcher.profile import load_profile

AIINFRA = str(Path(sys.executable).parent / "aiinfra")


def test_worst_orders_crit_over_warn_over_unknown_over_ok() -> None:
    assert worst([]) == Status.OK
    assert worst([Status.OK, Status.UNKNOWN]) == Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.WARN]) == Status.WARN
    assert worst([Status.WARN, Status.CRIT, Status.UNKNOWN]) == Status.CRIT
    assert [s.value for s in Status] == [0, 1, 2, 3]


@pytest.mark.parametrize(("node", "pattern", "expected"), [
    ("node3", "node3", True), ("node3", "node[1-3]", True), ("node4", "node[1-3]", False),
    ("gpu017", "gpu[001-128]", True), ("gpu17", "gpu[001-128]", False),
    ("node10", "node[1-3,10]", True), ("gpu-a7", "gpu-*", True), ("cpu-a7", "gpu-*", False),
])
def test_node_patterns_are_slurm_hostlists_or_globs(node: str, pattern: str,
                                                    expected: bool) -> None:
    assert node_matches(node, pattern) is expected


def test_overrides_apply_to_matching_nodes_only_and_in_order() -> None:
    base = {"host.disk": {"path": "/tmp", "min_free_gib": 1}}
    overrides = [("node3", {"host.disk": {"min_free_gib": 10**9}}),
                 ("node[3-4]", {"host.cpu": {"min_cpus": 8}})]
    assert for_node(base, overrides, "node1") == base
    assert for_node(base, overrides, "node3") == {
        "host.disk": {"path": "/tmp", "min_free_gib": 10**9}, "host.cpu": {"min_cpus": 8}}
    assert for_node(base, overrides, "node4")["host.disk"]["min_free_gib"] == 1
    assert base["host.disk"]["min_free_gib"] == 1  # the profile's table is not changed


OVERRIDE_PROFILE = """
inherits = "local"
[health.thresholds."host.disk"]
path = "/tmp"
min_free_gib = 1
[[health.override]]
nodes = "node3"
[health.override.thresholds."host.disk"]
min_free_gib = 1000000000
"""


def test_the_issue_override_format_fails_host_disk_on_node3_only(tmp_path: Path) -> None:
    profile = tmp_path / "site.toml"
    profile.write_text(OVERRIDE_PROFILE)
    health = load_profile(str(profile)).profile.health
    reports = {n: run_node(health, "site", "quick", n)[0] for n in ("node1", "node3")}
    disk = {n: next(r for r in rep.results if r.name == "host.disk") for n, rep in reports.items()}
    assert disk["node1"].status == Status.OK
    assert disk["node3"].status == Status.CRIT
    assert "< min 1e+09 GiB" in disk["node3"].summary
    assert node_thresholds(health, "node1")["host.disk"]["min_free_gib"] == 1


@pytest.mark.parametrize(("text", "field", "words"), [
    ('[health.thresholds."host.disks"]\npath = "/"\n', "health.thresholds.host.disks",
     "unknown check"),
    ('[health.thresholds."host.disk"]\npath = "/"\nmin_free = 1\n',
     "health.thresholds.host.disk.min_free", "unknown key"),
    ('[health.thresholds."host.cpu"]\nmin_cpus = "many"\n', "health.thresholds.host.cpu.min_cpus",
     "expected an integer"),
    ('[[health.override]]\nnodes = "node[3-"\n', "health.override[0].nodes",
     "not a node list"),
    ('[health]\ngate_tier = "fast"\n', "health.gate_tier", "not allowed"),
])
def test_bad_health_tables_name_file_and_field(tmp_path: Path, text: str, field: str,
                                               words: str) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text('inherits = "local"\n' + text)
    with pytest.raises(SpecError) as err:
        load_profile(str(profile))
    assert err.value.field == field and words in str(err.value)
    assert err.value.source == str(profile.resolve())


@dataclass(frozen=True)
class NeedsX:
    x: int


def _check(func: object) -> Check:
    return Check("t.check", "quick", (), NeedsX, func, "")  # type: ignore[arg-type]


def test_evaluate_never_raises() -> None:
    def boom(facts: object, p: NeedsX) -> CheckResult:
        raise ZeroDivisionError("bad math")

    assert evaluate(_check(boom), {}, None, "p").status == Status.UNKNOWN
    missing = evaluate(_check(boom), {}, {}, "p")
    assert missing.status == Status.UNKNOWN and "x: required key is missing" in missing.summary
    failed = evaluate(_check(boom), {}, {"x": 1}, "p")
    assert failed.status == Status.UNKNOWN and "ZeroDivisionError: bad math" in failed.summary
    good = evaluate(_check(lambda f, p: ok("t.check", f"x={p.x}")), {}, {"x": 2}, "p")
    assert good.status == Status.OK and good.summary == "t.check: x=2"


def test_a_hung_collector_leaves_an_error_not_a_hang() -> None:
    facts = new_facts("n")
    slow = FunctionCollector("slow", lambda ctx: time.sleep(5) or {})  # type: ignore[func-returns-value]
    start = time.monotonic()
    gather(facts, [slow], CollectContext("n", "quick", {}), timeout_s=0.2)
    assert time.monotonic() - start < 2
    assert facts["slow"] == {"error": "collector timed out after 0.2 s"}


def test_a_raising_collector_is_recorded() -> None:
    facts = new_facts("n")
    gather(facts, [FunctionCollector("bad", lambda ctx: {}[1])], CollectContext("n", "q", {}), 1)
    assert facts["bad"]["error"].startswith("KeyError")


def test_watchdog_interrupts_a_long_run() -> None:
    with pytest.raises(WatchdogExpired):
        with watchdog(0.2):
            time.sleep(3)


def test_fail_fast_stops_at_the_first_crit(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('inherits = "local"\n[health.thresholds."host.cpu"]\nmin_cpus = 100000\n')
    health = load_profile(str(profile)).profile.health
    full, _ = run_node(health, "p", "quick", "node1")
    fast, _ = run_node(health, "p", "quick", "node1", fail_fast=True)
    crits = [r.name for r in full.results if r.status == Status.CRIT]
    assert crits == ["host.cpu"]
    assert fast.results[-1].name == "host.cpu" and fast.stopped_early
    assert all(r.status != Status.CRIT for r in fast.results[:-1])
    assert len(fast.results) < len(full.results) == len(registry.checks_for("quick"))


def test_recorded_facts_replay_through_the_same_checks(tmp_path: Path) -> None:
    facts = tmp_path / "facts.json"
    subprocess.run([AIINFRA, "health", "record", str(facts), "--tier", "quick", "--node", "n1"],
                   check=True, capture_output=True)
    recorded = json.loads(facts.read_text())
    assert recorded["node"] == "n1" and "host" in recorded
    recorded["host"]["cpus"] = 0
    facts.write_text(json.dumps(recorded))
    proc = subprocess.run([AIINFRA, "health", "run", "--json", "--facts", str(facts)],
                          capture_output=True, text=True)
    report = json.loads(proc.stdout)
    assert report["node"] == "n1"
    cpu = next(c for c in report["checks"] if c["name"] == "host.cpu")
    assert cpu["status"] == "CRIT" and cpu["summary"] == "host.cpu: 0 CPUs < min 1"
    assert proc.returncode == Status.CRIT


def test_health_run_reports_every_check_and_exits_with_the_worst() -> None:
    proc = subprocess.run([AIINFRA, "health", "run", "--json", "--tier", "deep"],
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert {c["name"] for c in report["checks"]} == set(registry.checks())
    statuses = [Status[c["status"]] for c in report["checks"]]
    assert proc.returncode == worst(statuses).value == Status[report["status"]].value
    for c in report["checks"]:
        assert set(c) == {"name", "status", "summary", "details", "duration_s"}
        assert c["summary"].startswith(c["name"] + ": ")


def test_judge_blocks_crit_and_missing_nodes_only(tmp_path: Path) -> None:
    def report(node: str, status: str, checks: list[CheckResult]) -> None:
        (tmp_path / f"{node}.json").write_text(json.dumps(
            {"node": node, "status": status, "checks": [c.as_json() for c in checks]}))

    report("node1", "OK", [ok("host.cpu", "fine")])
    report("node2", "WARN", [CheckResult("gpu.power", Status.WARN, "gpu.power: high")])
    report("node3", "CRIT", [crit("host.disk", "/tmp free 1 GiB < min 5 GiB")])
    (tmp_path / "node5.json").write_text("{not json")
    verdict = judge(tmp_path, ["node1", "node2", "node3", "node4", "node5"])
    assert verdict.bad == ["node3", "node4", "node5"]
    assert "node3 CRIT: host.disk: /tmp free 1 GiB < min 5 GiB" in verdict.messages
    assert "node2 WARN: gpu.power: high" in verdict.messages
    assert any(m.startswith("node4 CRIT: no health report") for m in verdict.messages)


PROBE = ("import sys\nfrom aiinfra.launcher.profile import load_profile\n"
         "try:\n    load_profile(sys.argv[1])\n    print('ok')\n"
         "except Exception as exc:\n    print('error', exc)\n"
         "print('imported-checks', 'aiinfra.health.gpu' in sys.modules)\n")


def _load_in_fresh_process(ref: str, cache: Path) -> str:
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, "-c", PROBE, ref], capture_output=True, text=True,
                          env=env, check=True).stdout


def test_a_validated_profile_is_remembered_and_a_bad_one_never(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert _load_in_fresh_process("local", cache) == "ok\nimported-checks True\n"
    assert _load_in_fresh_process("local", cache) == "ok\nimported-checks False\n"
    bad = tmp_path / "bad.toml"
    bad.write_text('inherits = "local"\n[health.thresholds."host.cpu"]\nmin_cpus = "x"\n')
    for _ in range(2):
        out = _load_in_fresh_process(str(bad), cache)
        assert out.startswith("error ") and "min_cpus: expected an integer" in out


def test_skipped_checks_report_ok_by_profile_without_reading_facts(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('inherits = "local"\n[health]\nskip = ["host.*"]\n')
    health = load_profile(str(profile)).profile.health
    report, facts = run_node(health, "p", "quick", "node1")
    host_results = [r for r in report.results if r.name.startswith("host.")]
    assert len(host_results) == 6
    assert all(r.status == Status.OK and r.summary.endswith("not checked: profile 'p' skips it")
               for r in host_results)
    assert "host" not in facts


def test_a_skip_pattern_must_match_a_check(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('inherits = "local"\n[health]\nskip = ["gpu.eec"]\n')
    with pytest.raises(SpecError) as err:
        load_profile(str(profile))
    assert err.value.field == "health.skip[0]" and "'gpu.eec' matches no check" in str(err.value)
