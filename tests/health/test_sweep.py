"""The sweep's pure decisions: planning, ownership, hysteresis, the blast-radius cap."""

from __future__ import annotations

import pytest

from aiinfra.health.result import Status
from aiinfra.health.sweep import (REASON_MAX, Decision, NodeResult, NodeState, SweepError,
                                  SweepSettings, Summary, actions_text, apply_cap, chunk,
                                  classify, decide, drain_cap, drain_reason, load_settings,
                                  node_result, plan, streaks)
from aiinfra.launcher.errors import SpecError

OK, WARN, CRIT, UNKNOWN = Status.OK, Status.WARN, Status.CRIT, Status.UNKNOWN
OURS = "aiinfra: host.disk: /tmp free 1.0 GiB < min 5 GiB"


@pytest.mark.parametrize("state, reason, kind", [
    ("idle", "", "idle"),
    ("mixed", "", "busy"),
    ("allocated", "", "busy"),
    ("completing", "", "busy"),
    ("drained", OURS, "ours"),
    ("draining", OURS, "ours-busy"),
    ("drained*", OURS, "ours-busy"),          # not responding: cannot be checked
    ("drained", "maintenance", "foreign"),
    ("draining", "maintenance", "foreign"),
    ("down*", "Not responding", "foreign"),
    ("down", OURS.replace("aiinfra:", "aiinfra"), "foreign"),  # the prefix needs the colon
    ("idle*", "", "foreign"),
    ("reserved", "", "foreign"),
    ("idle+cloud", "", "foreign"),
    ("maint", "", "foreign"),
])
def test_classify(state: str, reason: str, kind: str) -> None:
    assert classify(NodeState("n1", state, reason)) == kind


@pytest.mark.parametrize("count, per_job, sizes", [
    (0, 128, []),
    (1, 128, [1]),
    (128, 128, [128]),
    (129, 128, [65, 64]),
    (300, 100, [100, 100, 100]),
    (10, 3, [3, 3, 3, 1]),
])
def test_chunk_sizes(count: int, per_job: int, sizes: list[int]) -> None:
    nodes = [f"n{i}" for i in range(count)]
    got = chunk(nodes, per_job)
    assert [len(c) for c in got] == sizes
    assert [n for c in got for n in c] == nodes  # order kept, nothing lost


def test_ten_thousand_nodes_need_at_most_100_jobs_of_at_most_the_limit() -> None:
    nodes = [NodeState(f"gpu{i:05d}", "idle") for i in range(10_000)]
    got = plan(nodes, SweepSettings())
    assert len(got.batches) <= 100
    assert max(len(b.nodes) for b in got.batches) <= SweepSettings().max_nodes_per_job
    assert sorted(got.swept) == sorted(n.name for n in nodes)


def test_too_many_jobs_is_refused_with_the_way_out() -> None:
    nodes = [NodeState(f"n{i}", "idle") for i in range(500)]
    with pytest.raises(SweepError, match="need 10 health jobs .* > max_jobs 5"):
        plan(nodes, SweepSettings(max_nodes_per_job=50, max_jobs=5))


NODES = [NodeState("node1", "idle"), NodeState("node2", "mixed"),
         NodeState("node3", "drained", OURS), NodeState("node4", "drained", "maintenance"),
         NodeState("node5", "down*", "Not responding")]


@pytest.mark.parametrize("busy, reserve, check_drained, batches, skipped", [
    ("skip", True, True, [(("node1",), False), (("node3",), True)], ["node2", "node4", "node5"]),
    ("wait", True, True, [(("node1",), False), (("node2",), False), (("node3",), True)],
     ["node4", "node5"]),
    ("skip", False, True, [(("node1",), False)], ["node2", "node3", "node4", "node5"]),
    ("skip", True, False, [(("node1",), False)], ["node2", "node3", "node4", "node5"]),
])
def test_plan_policies(busy: str, reserve: bool, check_drained: bool,
                       batches: list[tuple[tuple[str, ...], bool]], skipped: list[str]) -> None:
    settings = load_settings([("t", {"busy": busy, "check_drained": check_drained})])
    got = plan(NODES, settings, reserve=reserve)
    assert [(b.nodes, b.reservation) for b in got.batches] == batches
    assert sorted(got.skipped) == skipped
    assert got.skipped["node4"] == "not ours: drained: maintenance"
    assert got.reserve == (("node3",) if reserve and check_drained else ())


def test_busy_nodes_wait_in_their_own_jobs() -> None:
    nodes = [NodeState(f"n{i}", "idle" if i % 2 else "allocated") for i in range(6)]
    got = plan(nodes, SweepSettings(busy="wait"))
    assert [b.nodes for b in got.batches] == [("n1", "n3", "n5"), ("n0", "n2", "n4")]


def report(*checks: tuple[str, str, str]) -> dict[str, object]:
    return {"checks": [{"name": n, "status": s, "summary": m} for n, s, m in checks]}


@pytest.mark.parametrize("rep, status, failing", [
    (None, UNKNOWN, ()),
    (report(), UNKNOWN, ()),
    (report(("health.watchdog", "UNKNOWN", "exceeded")), UNKNOWN, ()),
    (report(("a", "OK", "a: fine"), ("b", "WARN", "b: meh")), WARN, ()),
    (report(("a", "CRIT", "a: 1 > 0"), ("b", "UNKNOWN", "b: ?"), ("c", "CRIT", "c: x")), CRIT,
     ("a: 1 > 0", "c: x")),
    (report(("a", "OK", "a"), ("b", "UNKNOWN", "b: no lib")), UNKNOWN, ()),
])
def test_node_result(rep: dict[str, object] | None, status: Status,
                     failing: tuple[str, ...]) -> None:
    got = node_result("n1", rep)
    assert (got.status, got.failing) == (status, failing)


@pytest.mark.parametrize("history, fails, passes", [
    ([], 0, 0),
    ([CRIT], 1, 0),
    ([CRIT, CRIT, OK], 2, 0),
    ([OK, WARN, CRIT], 0, 2),
    ([OK, UNKNOWN, OK], 0, 1),       # UNKNOWN breaks a streak
    ([UNKNOWN, CRIT], 0, 0),
])
def test_streaks(history: list[Status], fails: int, passes: int) -> None:
    assert streaks(history) == (fails, passes)


IDLE = NodeState("n1", "idle")
DRAINED = NodeState("n1", "drained", OURS)
BAD = NodeResult("n1", CRIT, ("gpu.ecc: GPU 3: uncorrected ECC 12 > max 0",))
GOOD = NodeResult("n1", OK)
LOST = NodeResult("n1", UNKNOWN, note="no report before the deadline")


@pytest.mark.parametrize("node, result, history, drain_after, resume_after, action, outcome", [
    (IDLE, BAD, [], 1, 2, "drain", "drained"),
    (IDLE, BAD, [], 2, 2, "none", "unchanged"),            # hysteresis: first failure
    (IDLE, BAD, [CRIT], 2, 2, "drain", "drained"),
    (IDLE, BAD, [CRIT, OK], 3, 2, "none", "unchanged"),
    (IDLE, GOOD, [CRIT, CRIT], 1, 2, "none", "unchanged"),
    (IDLE, LOST, [CRIT, CRIT], 1, 2, "none", "unchanged"),  # UNKNOWN never drains
    (DRAINED, GOOD, [], 1, 2, "redrain", "unchanged"),      # 1 pass of 2
    (DRAINED, GOOD, [OK], 1, 2, "resume", "resumed"),
    (DRAINED, GOOD, [UNKNOWN, OK], 1, 2, "redrain", "unchanged"),
    (DRAINED, BAD, [OK, OK], 1, 2, "redrain", "unchanged"),
    (DRAINED, LOST, [OK, OK], 1, 1, "redrain", "unchanged"),  # UNKNOWN never resumes
    (DRAINED, GOOD, [], 1, 1, "resume", "resumed"),
])
def test_decide(node: NodeState, result: NodeResult, history: list[Status], drain_after: int,
                resume_after: int, action: str, outcome: str) -> None:
    settings = SweepSettings(drain_after=drain_after, resume_after=resume_after)
    got = decide(node, result, history, settings)
    assert (got.action, got.outcome) == (action, outcome)
    if action == "drain":
        assert got.reason == "aiinfra: gpu.ecc: GPU 3: uncorrected ECC 12 > max 0"


def test_a_redrain_keeps_our_reason_while_passing_and_names_a_new_failure() -> None:
    settings = SweepSettings(resume_after=3)
    assert decide(DRAINED, GOOD, [], settings).reason == OURS
    assert decide(DRAINED, LOST, [], settings).reason == OURS
    assert decide(DRAINED, BAD, [], settings).reason.startswith("aiinfra: gpu.ecc: GPU 3")


@pytest.mark.parametrize("failing, expected", [
    ([], "aiinfra: no passing report"),
    (["host.disk: /tmp free 1.0 GiB < min 5 GiB"], "aiinfra: host.disk: /tmp free 1.0 GiB < min 5 GiB"),
    (["a: x", "b: y", "c: z"], "aiinfra: a: x (+2 more)"),
    (["a: bad|value\nnext line\ttab"], "aiinfra: a: bad value next line tab"),
])
def test_drain_reason(failing: list[str], expected: str) -> None:
    assert drain_reason(failing) == expected


def test_a_long_reason_is_cut_but_keeps_its_prefix_and_count() -> None:
    got = drain_reason(["gpu.xid: " + "GPU 0 Xid 79 fell off the bus; " * 10, "b: y"])
    assert REASON_MAX - 3 <= len(got) <= REASON_MAX
    assert got.startswith("aiinfra: gpu.xid: GPU 0 Xid 79")
    assert got.endswith("... (+1 more)")


@pytest.mark.parametrize("swept, fraction, cap", [
    (4, 0.10, 1), (10, 0.10, 1), (20, 0.10, 2), (1000, 0.10, 100), (3, 0.0, 1), (10, 0.3, 3),
])
def test_drain_cap(swept: int, fraction: float, cap: int) -> None:
    assert drain_cap(swept, fraction) == cap


def drains(n: int) -> list[Decision]:
    return [Decision(f"n{i}", "drain", "drained", CRIT, "aiinfra: x") for i in range(n)]


def test_within_the_cap_every_drain_stays() -> None:
    decisions = drains(2) + [Decision("r", "redrain", "unchanged", CRIT, OURS)]
    got, message = apply_cap(decisions, 20, 0.10)
    assert message is None and got == decisions


def test_over_the_cap_nothing_is_drained_and_the_message_names_it() -> None:
    redrain = Decision("r", "redrain", "unchanged", CRIT, OURS)
    got, message = apply_cap(drains(4) + [redrain], 4, 0.10)
    assert [d.action for d in got] == ["none"] * 4 + ["redrain"]  # ours stay drained
    assert message is not None and "max_drain_fraction 0.1" in message
    assert "4 of 4 swept nodes" in message and "drained none" in message
    summary = Summary("r1", tuple(got), message)
    assert summary.status == CRIT and summary.as_json()["capped"] is True
    assert summary.as_json()["drained"] == []


def test_summary_json_and_text() -> None:
    decisions = (Decision("node1", "none", "unchanged", OK),
                 Decision("node3", "drain", "drained", CRIT, "aiinfra: x: 1 > 0", "CRIT 1"),
                 Decision("node2", "none", "unchanged", UNKNOWN, note="no report"),
                 Decision("node4", "none", "skipped", None, note="not ours: drained: maint"))
    summary = Summary("r1", decisions, dry_run=True)
    data = summary.as_json()
    assert {k: data[k] for k in ("run_id", "nodes", "drained", "resumed", "unchanged",
                                 "skipped", "capped", "status")} == {
        "run_id": "r1", "nodes": 4, "drained": ["node3"], "resumed": [],
        "unchanged": ["node1", "node2"], "skipped": ["node4"], "capped": False,
        "status": "CRIT"}
    assert data["unknown"] == ["node2"]
    assert data["nodes_detail"]["node1"]["status"] == "OK"  # OK is 0: still named
    assert data["nodes_detail"]["node4"]["status"] is None
    text = "\n".join(actions_text(summary))
    assert "node3        CRIT     would drain: aiinfra: x: 1 > 0" in text
    assert "node4        -        skipped  (not ours: drained: maint)" in text


@pytest.mark.parametrize("table, message", [
    ({"drain_after": 0}, "drain_after: must be at least 1"),
    ({"max_drain_fraction": 1.5}, "max_drain_fraction: must be a share"),
    ({"busy": "later"}, "busy: 'later' is not allowed (valid: skip, wait)"),
    ({"drian_after": 2}, "drian_after: unknown key"),
    ({"deadline_s": "10m"}, "deadline_s: expected a number"),
])
def test_bad_settings_name_source_and_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match="sweep.toml") as err:
        load_settings([("profile", {}), ("sweep.toml", table)])
    assert message in str(err.value)


def test_later_sources_win() -> None:
    got = load_settings([("profile", {"drain_after": 3, "busy": "wait"}),
                         ("--set", {"drain_after": 1})])
    assert (got.drain_after, got.busy, got.resume_after) == (1, "wait", 2)
