"""InfiniBand checks over sysfs trees in the kernel's format (tests/fixtures/ib/<state>/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiinfra.health import ib, registry
from aiinfra.health.facts import CollectContext
from aiinfra.health.result import Status
from aiinfra.health.runner import evaluate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ib"
CTX = CollectContext("dgx-017", "quick", {})
COMPUTE = ("mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11")
PORTS = ib.PortsParams(8, 400, COMPUTE)
ERRORS = ib.ErrorsParams({"symbol_error": 100, "link_error_recovery": 10, "link_downed": 5,
                          "port_rcv_errors": 50, "local_link_integrity_errors": 10,
                          "excessive_buffer_overrun_errors": 10}, "warn", COMPUTE)


def facts_for(state: str) -> dict[str, Any]:
    return {"ib": ib.collect_ib(CTX, root=FIXTURES / state)}


# ---------------------------------------------------------------- collector

def test_collector_reads_the_sysfs_tree() -> None:
    hcas = facts_for("dgx_h100_good")["ib"]["hcas"]
    assert sorted(hcas) == sorted(f"mlx5_{n}" for n in range(12))
    port = hcas["mlx5_0"]["ports"]["1"]
    assert {k: port[k] for k in ib.PORT_FILES} == {
        "state": "4: ACTIVE", "phys_state": "5: LinkUp", "rate": "400 Gb/sec (4X NDR)",
        "link_layer": "InfiniBand"}
    assert port["counters"] == {"symbol_error": 0, "link_error_recovery": 0, "link_downed": 1,
                                "port_rcv_errors": 0, "port_xmit_discards": 0,
                                "excessive_buffer_overrun_errors": 0,
                                "local_link_integrity_errors": 0}
    assert hcas["mlx5_1"]["ports"]["1"]["link_layer"] == "Ethernet"


def test_facts_survive_a_json_record_and_replay() -> None:
    facts = facts_for("dgx_h100_counter_errors")
    assert json.loads(json.dumps(facts)) == facts


def test_no_sysfs_class_is_an_error(tmp_path: Path) -> None:
    assert ib.collect_ib(CTX, root=tmp_path) == {
        "error": "no InfiniBand devices (/sys/class/infiniband absent)", "absent": True}


def test_this_machine() -> None:
    section = ib.collect_ib(CTX)
    if Path("/sys/class/infiniband").is_dir():
        assert "hcas" in section
    else:
        assert section["error"] == ib.ABSENT


def test_missing_files_are_null_and_fail_the_port(tmp_path: Path) -> None:
    port = tmp_path / "sys/class/infiniband/mlx5_0/ports/1"
    port.mkdir(parents=True)
    (port / "state").write_text("4: ACTIVE\n")
    (port / "phys_state").write_text("5: LinkUp\n")
    facts = {"ib": ib.collect_ib(CTX, root=tmp_path)}
    data = facts["ib"]["hcas"]["mlx5_0"]["ports"]["1"]
    assert data["rate"] is None and set(data["counters"].values()) == {None}
    result = ib.check_ports(facts, ib.PortsParams(1, 400))
    assert result.summary == "ib.ports: mlx5_0/1 rate missing < min 400 Gb/s"


@pytest.mark.parametrize(("text", "gbps"), [
    ("400 Gb/sec (4X NDR)", 400.0), ("200 Gb/sec (2X NDR)", 200.0), ("2.5 Gb/sec (1X SDR)", 2.5),
    ("56 Gb/sec (4X FDR)", 56.0), (None, None), ("", None),
])
def test_rate_parses_the_kernel_format(text: str | None, gbps: float | None) -> None:
    assert ib.rate_gbps(text) == gbps


# ---------------------------------------------------------------- checks, one fixture per state

def test_the_healthy_node_passes_both_checks() -> None:
    facts = facts_for("dgx_h100_good")
    ports = ib.check_ports(facts, PORTS)
    assert (ports.status, ports.summary) == (
        Status.OK, "ib.ports: 8 ports == expected 8, all ACTIVE/LinkUp at >= 400 Gb/s")
    errors = ib.check_errors(facts, ERRORS)
    assert errors.status == Status.OK and errors.summary.startswith(
        "ib.errors: 8 ports: symbol_error 2 <= max 100, link_error_recovery 0 <= max 10")


STATES = [
    ("dgx_h100_port_down", "ib.ports", Status.CRIT,
     "ib.ports: mlx5_4/1 DOWN/Polling != expected ACTIVE/LinkUp; mlx5_4/1 rate 10 Gb/sec "
     "(4X SDR) < min 400 Gb/s"),
    ("dgx_h100_rate_degraded", "ib.ports", Status.CRIT,
     "ib.ports: mlx5_9/1 rate 200 Gb/sec (2X NDR) < min 400 Gb/s"),
    ("dgx_h100_hca_missing", "ib.ports", Status.CRIT,
     "ib.ports: 7 ports != expected 8; mlx5_11 absent (listed in devices)"),
    ("dgx_h100_counter_errors", "ib.errors", Status.WARN,
     "ib.errors: mlx5_10/1 symbol_error 1532 > max 100; mlx5_10/1 port_rcv_errors 87 > max 50"),
]


@pytest.mark.parametrize(("state", "name", "status", "summary"), STATES,
                         ids=[s[0] for s in STATES])
def test_each_bad_state_fails_its_check_only(state: str, name: str, status: Status,
                                             summary: str) -> None:
    facts = facts_for(state)
    results = {"ib.ports": ib.check_ports(facts, PORTS),
               "ib.errors": ib.check_errors(facts, ERRORS)}
    assert (results[name].status, results[name].summary) == (status, summary)
    assert {n: r.status for n, r in results.items() if n != name} == {
        n: Status.OK for n in results if n != name}


def test_counter_severity_comes_from_the_params() -> None:
    strict = ib.ErrorsParams(ERRORS.max_counts, "crit", COMPUTE)
    assert ib.check_errors(facts_for("dgx_h100_counter_errors"), strict).status == Status.CRIT


def test_all_hcas_when_none_are_listed_skip_ethernet_ports() -> None:
    facts = facts_for("dgx_h100_good")
    result = ib.check_ports(facts, ib.PortsParams(8, 400))
    assert result.status == Status.OK
    assert sorted(result.details["ports"]) == sorted(f"{hca}/1" for hca in COMPUTE)


def test_a_listed_ethernet_port_is_checked() -> None:
    facts = facts_for("dgx_h100_good")
    assert ib.check_ports(facts, ib.PortsParams(2, 200, ("mlx5_1", "mlx5_2"))).status == Status.OK
    slow = ib.check_ports(facts, ib.PortsParams(1, 400, ("mlx5_1",)))
    assert slow.summary == "ib.ports: mlx5_1/1 rate 200 Gb/sec (4X HDR) < min 400 Gb/s"


# ---------------------------------------------------------------- nodes without InfiniBand

ABSENT = {"ib": {"error": ib.ABSENT, "absent": True}}


def test_zero_expected_ports_and_no_devices_is_ok() -> None:
    result = ib.check_ports(ABSENT, ib.PortsParams(0, 0))
    assert (result.status, result.summary) == (
        Status.OK, "ib.ports: 0 ports expected (no InfiniBand devices (/sys/class/infiniband "
                   "absent))")


def test_expected_ports_on_a_node_without_devices_is_crit() -> None:
    result = ib.check_ports(ABSENT, PORTS)
    assert (result.status, result.summary) == (
        Status.CRIT, "ib.ports: 0 ports != expected 8: no InfiniBand devices "
                     "(/sys/class/infiniband absent)")


def test_counters_without_devices_are_unknown_with_the_reason() -> None:
    result = ib.check_errors(ABSENT, ERRORS)
    assert (result.status, result.summary) == (Status.UNKNOWN, f"ib.errors: {ib.ABSENT}")


def test_missing_section_is_unknown() -> None:
    assert ib.check_ports({}, PORTS).status == Status.UNKNOWN


def test_unknown_counter_names_are_rejected_with_the_valid_list() -> None:
    table = {"max_counts": {"symbol_errors": 10}, "severity": "warn"}
    result = evaluate(registry.checks()["ib.errors"], facts_for("dgx_h100_good"), table, "site")
    assert result.status == Status.UNKNOWN
    assert "unknown counters ['symbol_errors']" in result.summary
    assert "symbol_error" in result.summary.split("known:")[1]
