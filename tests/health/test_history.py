"""The sweep history in SQLite: one transaction per run, streak input, readable by pandas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aiinfra.health.history import (NodeRow, ResultRow, RunRow, connect, measure, record,
                                    recent, rows_from_report)
from aiinfra.health.result import Status


def run_row(run_id: str, t: float, status: Status = Status.OK) -> RunRow:
    return RunRow(run_id, t, t + 5, "local", "quick", status, False)


def test_runs_read_back_newest_first_per_node(tmp_path: Path) -> None:
    with connect(tmp_path / "h.sqlite") as conn:
        record(conn, run_row("r1", 1), [NodeRow("n1", Status.CRIT, "drain", "aiinfra: x")],
               [ResultRow("n1", "host.disk", Status.CRIT, None, "host.disk: x")])
        record(conn, run_row("r2", 2), [NodeRow("n1", Status.OK, "redrain", "aiinfra: x"),
                                        NodeRow("n2", Status.UNKNOWN, "none", "")], [])
        record(conn, run_row("r3", 3), [NodeRow("n1", Status.WARN, "resume", "")], [])
        got = recent(conn, ["n1", "n2", "n3"], 2)
    assert got == {"n1": [Status.WARN, Status.OK], "n2": [Status.UNKNOWN], "n3": []}


def test_a_run_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with connect(path) as conn:
        record(conn, run_row("r1", 1), [NodeRow("n1", Status.OK, "none", "")], [])
        with pytest.raises(sqlite3.IntegrityError):  # the same node twice in one run
            record(conn, run_row("r2", 2), [NodeRow("n1", Status.OK, "none", ""),
                                            NodeRow("n1", Status.OK, "none", "")],
                   [ResultRow("n1", "a", Status.OK, None, "a: ok")])
    with connect(path) as conn:
        assert conn.execute("SELECT run_id FROM runs").fetchall() == [("r1",)]
        assert conn.execute("SELECT count(*) FROM results").fetchone() == (0,)


def test_rows_from_a_report_and_from_none() -> None:
    report = {"checks": [
        {"name": "gpu.matmul", "status": "OK", "summary": "gpu.matmul: ok",
         "details": {"tflops": {"0": 700.5, "1": 650.0}}},
        {"name": "host.disk", "status": "CRIT", "summary": "host.disk: full", "details": {}}]}
    assert rows_from_report("n1", report, "") == [
        ResultRow("n1", "gpu.matmul", Status.OK, 650.0, "gpu.matmul: ok"),
        ResultRow("n1", "host.disk", Status.CRIT, None, "host.disk: full")]
    assert rows_from_report("n2", None, "no report before the deadline") == [
        ResultRow("n2", "sweep.report", Status.UNKNOWN, None,
                  "sweep.report: no report before the deadline")]


@pytest.mark.parametrize("check, details, value", [
    ("gpu.membw", {"gbps": {"0": 3000, "1": 2800.5}}, 2800.5),
    ("net.allreduce", {"busbw_gbps": 1.25}, 1.25),
    ("net.mpi_pingpong", {"bandwidth_gbps": 3}, 3.0),
    ("gpu.matmul", {"tflops": {}}, None),
    ("host.cpu", {"cpus": 2}, None),
])
def test_measure(check: str, details: dict[str, object], value: float | None) -> None:
    assert measure(check, details) == value


def test_pandas_reads_it(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    with connect(tmp_path / "h.sqlite") as conn:
        record(conn, run_row("r1", 1), [NodeRow("n1", Status.OK, "none", "")],
               [ResultRow("n1", "gpu.matmul", Status.OK, 650.0, "ok")])
        frame = pd.read_sql_query("SELECT node, check_name, status, value FROM results", conn)
    assert frame.to_dict("records") == [{"node": "n1", "check_name": "gpu.matmul",
                                         "status": 0, "value": 650.0}]
