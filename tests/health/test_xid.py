"""gpu.xid over kernel logs in the real formats (tests/fixtures/xid/*.txt)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aiinfra.health import registry, xid
from aiinfra.health.facts import CollectContext
from aiinfra.health.result import Status
from aiinfra.health.runner import evaluate
from aiinfra.launcher.files import package_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xid"
NOW = datetime(2024, 5, 15, 6, 0, tzinfo=timezone.utc)
DAY = xid.XidParams(24, "warn")
DMESG_DENIED = (1, "", "dmesg: read kernel buffer failed: Operation not permitted\n")
NO_JOURNAL = (0, "-- No entries --\n", "No journal files were found.\n")


def log(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


def ctx(window_hours: float | None = 24) -> CollectContext:
    thresholds = {} if window_hours is None else {"gpu.xid": {"window_hours": window_hours}}
    return CollectContext("dgx-017", "quick", thresholds)


class FakeRun:
    """Answers dmesg and journalctl with fixed (status, stdout, stderr); records the argv."""

    def __init__(self, **answers: tuple[int, str, str]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        return self.answers.get(argv[0], (127, "", "No such file or directory"))


def facts_from(name: str, window_hours: float | None = 24) -> dict[str, Any]:
    run = FakeRun(dmesg=(0, log(name), ""))
    return {"xid": xid.collect_xid(ctx(window_hours), run=run, now=NOW)}


# ---------------------------------------------------------------- parsing

def test_parses_a_dmesg_iso_line_with_unknown_pid() -> None:
    assert xid.parse_xid_lines(log("dmesg_xid79")) == [{
        "time": "2024-05-14T21:47:09.553137+00:00", "pci": "0000:5d:00", "xid": 79,
        "pid": None, "name": None, "text": "GPU has fallen off the bus."}]


def test_parses_pid_and_process_name() -> None:
    events = xid.parse_xid_lines(log("dmesg_app_faults"))
    assert [e["xid"] for e in events] == [13, 13, 13, 43, 31, 45]
    assert (events[0]["pid"], events[0]["name"]) == (2214871, "python")
    assert events[4]["text"].startswith("Ch 0000000a, intr 00000000. MMU Fault: ENGINE GRAPHICS")


def test_parses_journalctl_short_iso_lines() -> None:
    events = xid.parse_xid_lines(log("journalctl_nvlink"))
    assert [(e["time"], e["pci"], e["xid"]) for e in events] == [
        ("2024-05-14T11:02:44+00:00", "0000:ba:00", 74),
        ("2024-05-14T11:02:44+00:00", "0000:ba:00", 74),
        ("2024-05-14T11:05:13+00:00", "0000:db:00", 119)]
    assert (events[2]["pid"], events[2]["name"]) == (3387, "nvidia-smi")


def test_parses_lines_of_drivers_without_pid_and_name() -> None:
    assert xid.parse_xid_lines(log("dmesg_r450_xid79")) == [{
        "time": "2021-03-02T08:15:51.884102+00:00", "pci": "0000:3b:00", "xid": 79,
        "pid": None, "name": None, "text": "GPU has fallen off the bus."}]


def test_other_kernel_lines_are_not_events() -> None:
    assert xid.parse_xid_lines(log("dmesg_clean")) == []


# ---------------------------------------------------------------- check, one fixture per state

STATES = [
    ("dmesg_clean", Status.OK,
     "gpu.xid: 0 Xid events in the last 24 h (expected none to drain or warn)"),
    ("dmesg_xid79", Status.CRIT,
     "gpu.xid: Xid 79 on PCI:0000:5d:00 x1 in the last 24 h (drain: GPU has fallen off the "
     "bus: reboot and check PCIe, power and cooling)"),
    ("dmesg_app_faults", Status.WARN,
     "gpu.xid: Xid 13 on PCI:0000:18:00 x3 in the last 24 h (warn: graphics engine exception: "
     "usually an application fault (out-of-range access), rarely hardware)"),
    ("dmesg_ecc", Status.CRIT,
     "gpu.xid: Xid 48 on PCI:0000:ab:00 x1 in the last 24 h (drain: double-bit "
     "(uncorrectable) ECC error: reset the GPU, then check row remapping); Xid 95 on "
     "PCI:0000:ab:00 x1 in the last 24 h (drain: uncontained ECC error: every application on "
     "the GPU is affected, reset the GPU); Xid 63 on PCI:0000:ab:00 x1 in the last 24 h "
     "(warn: ECC page retirement or row remapping recorded: reset when convenient "
     "(gpu.remapped_rows flags the pending remap))"),
]


@pytest.mark.parametrize(("state", "status", "summary"), STATES, ids=[s[0] for s in STATES])
def test_each_log_state(state: str, status: Status, summary: str) -> None:
    result = xid.check_xid(facts_from(state), DAY)
    assert (result.status, result.summary) == (status, summary)


def test_journalctl_log_names_xid_pci_and_count() -> None:
    run = FakeRun(dmesg=DMESG_DENIED, journalctl=(0, log("journalctl_nvlink"), ""))
    facts = {"xid": xid.collect_xid(ctx(), run=run, now=NOW)}
    result = xid.check_xid(facts, DAY)
    assert result.status == Status.CRIT
    assert result.summary.startswith("gpu.xid: Xid 74 on PCI:0000:ba:00 x2 in the last 24 h "
                                     "(drain: NVLink error")
    assert "; Xid 119 on PCI:0000:db:00 x1 in the last 24 h (drain: GSP RPC timeout" in (
        result.summary)


def test_ignored_xids_are_ok_and_listed() -> None:
    result = xid.check_xid(facts_from("dmesg_app_faults"), xid.XidParams(15, "warn"))
    assert result.status == Status.OK  # 14:20 (Xid 13, 43) is more than 15 h before 06:00
    assert result.summary == ("gpu.xid: 2 Xid events in the last 15 h (expected none to drain "
                              "or warn), all ignored by policy (2 kinds)")
    assert [line.split(" (")[0] for line in result.details["ignore"]] == [
        "Xid 31 on PCI:0000:9a:00 x1 in the last 15 h",
        "Xid 45 on PCI:0000:9a:00 x1 in the last 15 h"]


def test_site_policy_overrides_the_table() -> None:
    facts = facts_from("dmesg_app_faults")
    quiet = xid.check_xid(facts, xid.XidParams(24, "warn", {"13": "ignore"}))
    assert quiet.status == Status.OK
    strict = xid.check_xid(facts, xid.XidParams(24, "warn", {"31": "drain"}))
    assert strict.status == Status.CRIT
    assert "Xid 31 on PCI:0000:9a:00 x1 in the last 24 h (drain: site policy)" in strict.summary


@pytest.mark.parametrize(("default", "status"), [("warn", Status.WARN), ("drain", Status.CRIT),
                                                 ("ignore", Status.OK)])
def test_unlisted_xids_take_the_default_action(default: xid.Action, status: Status) -> None:
    event = {"time": "2024-05-15T01:00:00+00:00", "pci": "0000:18:00", "xid": 999, "pid": None,
             "name": None, "text": "unlisted"}
    facts = {"xid": {"source": "dmesg", "now": NOW.isoformat(), "window_hours": 24,
                     "events": [event]}}
    result = xid.check_xid(facts, xid.XidParams(24, default))
    assert result.status == status
    if status != Status.OK:
        assert result.summary == (f"gpu.xid: Xid 999 on PCI:0000:18:00 x1 in the last 24 h "
                                  f"({default}: not in the Xid policy table)")


# ---------------------------------------------------------------- collector

def test_collector_keeps_the_window_and_records_its_source() -> None:
    section = facts_from("dmesg_app_faults", window_hours=15)["xid"]
    assert (section["source"], section["now"], section["window_hours"]) == (
        "dmesg", "2024-05-15T06:00:00+00:00", 15)
    assert [e["xid"] for e in section["events"]] == [31, 45]


def test_without_a_window_every_event_is_kept() -> None:
    assert len(facts_from("dmesg_app_faults", window_hours=None)["xid"]["events"]) == 6


def test_falls_back_to_journalctl_when_dmesg_is_denied() -> None:
    run = FakeRun(dmesg=DMESG_DENIED, journalctl=(0, log("journalctl_nvlink"), ""))
    section = xid.collect_xid(ctx(24), run=run, now=NOW)
    assert section["source"] == "journalctl" and len(section["events"]) == 3
    assert run.calls[0] == ["dmesg", "--time-format=iso"]
    since = (NOW - timedelta(hours=24)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert run.calls[1] == ["journalctl", "-k", "-o", "short-iso", "--no-pager", "--since", since]


def test_no_readable_kernel_log_is_an_error_and_unknown() -> None:
    section = xid.collect_xid(ctx(), run=FakeRun(dmesg=DMESG_DENIED, journalctl=NO_JOURNAL),
                              now=NOW)
    assert section == {"error": "kernel log unreadable: dmesg --time-format=iso: dmesg: read "
                                "kernel buffer failed: Operation not permitted; journalctl -k: "
                                "no kernel messages (No journal files were found.)"}
    result = xid.check_xid({"xid": section}, DAY)
    assert result.status == Status.UNKNOWN and result.summary == f"gpu.xid: {section['error']}"


def test_a_missing_command_is_reported_not_raised() -> None:
    status, out, err = xid._run(["/nonexistent/dmesg", "--time-format=iso"])
    assert (status, out) == (127, "") and "No such file" in err


def test_this_machine_gives_a_section_or_a_reason() -> None:
    section = xid.collect_xid(ctx())
    assert "error" in section or section["source"] in ("dmesg", "journalctl")


# ---------------------------------------------------------------- policy data

REQUIRED = {13, 31, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 119, 120, 140}


def test_policy_table_covers_the_documented_xids() -> None:
    table = xid.policy_table()
    assert REQUIRED <= set(table)
    for number, (action, reason) in table.items():
        assert action in xid.ACTIONS and reason and "\n" not in reason, number


def test_policy_file_ships_inside_the_package() -> None:
    assert (package_dir("aiinfra.health") / xid.POLICY_FILE).is_file()


@pytest.mark.parametrize(("table", "words"), [
    ({"window_hours": 24, "default_action": "warn", "policy": {"abc": "drain"}},
     "keys must be Xid numbers"),
    ({"window_hours": 24, "default_action": "warn", "policy": {"79": "reboot"}},
     "'reboot' is not allowed"),
    ({"window_hours": 24, "default_action": "panic"}, "'panic' is not allowed"),
])
def test_bad_params_are_unknown_with_the_reason(table: dict[str, Any], words: str) -> None:
    result = evaluate(registry.checks()["gpu.xid"], facts_from("dmesg_clean"), table, "site")
    assert result.status == Status.UNKNOWN and words in result.summary
