"""The sweep's history in SQLite (stdlib, no server): runs, node verdicts, check results.

One row per node x check x run in ``results``; one row per node x run in ``nodes`` (the
node's verdict and what the sweep did); one row per run in ``runs``. A run is written in
one transaction: a reader sees all of it or none. pandas reads it (``aiinfra report``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .result import Status

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    profile TEXT NOT NULL,
    tier TEXT NOT NULL,
    status INTEGER NOT NULL,
    capped INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    run INTEGER NOT NULL REFERENCES runs(run),
    node TEXT NOT NULL,
    status INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (run, node)
);
CREATE TABLE IF NOT EXISTS results (
    run INTEGER NOT NULL REFERENCES runs(run),
    node TEXT NOT NULL,
    check_name TEXT NOT NULL,
    status INTEGER NOT NULL,
    value REAL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_by_node ON nodes (node, run);
CREATE INDEX IF NOT EXISTS results_by_run ON results (run);
"""

MISSING_CHECK = "sweep.report"  # the row of a node that never reported


def _min_of(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    def get(details: Mapping[str, Any]) -> float | None:
        values = details.get(key)
        return min(values.values()) if isinstance(values, Mapping) and values else None
    return get


def _scalar(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    def get(details: Mapping[str, Any]) -> float | None:
        value = details.get(key)
        return float(value) if isinstance(value, (int, float)) else None
    return get


# The measured value kept per check (higher is better for all): the slowest GPU's figure,
# the pair's bandwidth, the all-reduce bus bandwidth.
MEASURES: Mapping[str, Callable[[Mapping[str, Any]], float | None]] = {
    "gpu.matmul": _min_of("tflops"),
    "gpu.membw": _min_of("gbps"),
    "net.mpi_pingpong": _scalar("bandwidth_gbps"),
    "net.allreduce": _scalar("busbw_gbps"),
}


@dataclass(frozen=True)
class ResultRow:
    node: str
    check: str
    status: Status
    value: float | None
    summary: str


@dataclass(frozen=True)
class NodeRow:
    node: str
    status: Status
    action: str
    reason: str


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started: float
    finished: float
    profile: str
    tier: str
    status: Status
    capped: bool


def measure(check: str, details: Mapping[str, Any]) -> float | None:
    get = MEASURES.get(check)
    return get(details) if get is not None else None


def rows_from_report(node: str, report: Mapping[str, Any] | None, note: str) -> list[ResultRow]:
    """A node's ``health run`` report as rows; a node without one gets a single UNKNOWN."""
    if report is None:
        return [ResultRow(node, MISSING_CHECK, Status.UNKNOWN, None, f"{MISSING_CHECK}: {note}")]
    return [ResultRow(node, c["name"], Status[c["status"]],
                      measure(c["name"], c.get("details") or {}), c["summary"])
            for c in report.get("checks", [])]


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """Open (creating the file and tables when new) and close the history."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.executescript(SCHEMA)
        yield conn


def record(conn: sqlite3.Connection, run: RunRow, nodes: Sequence[NodeRow],
           results: Sequence[ResultRow]) -> int:
    """Write a whole run in one transaction; returns its run number."""
    with conn:
        cur = conn.execute(
            "INSERT INTO runs (run_id, started, finished, profile, tier, status, capped) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, run.started, run.finished, run.profile, run.tier, int(run.status),
             int(run.capped)))
        number = cur.lastrowid
        assert number is not None
        conn.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?)",
                         [(number, n.node, int(n.status), n.action, n.reason) for n in nodes])
        conn.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)",
                         [(number, r.node, r.check, int(r.status), r.value, r.summary)
                          for r in results])
    return number


def recent(conn: sqlite3.Connection, nodes: Sequence[str],
           limit: int) -> dict[str, list[Status]]:
    """Each node's last ``limit`` verdicts, newest first (nodes it skipped leave no row)."""
    out: dict[str, list[Status]] = {n: [] for n in nodes}
    query = "SELECT status FROM nodes WHERE node = ? ORDER BY run DESC LIMIT ?"
    for node in nodes:
        out[node] = [Status(row[0]) for row in conn.execute(query, (node, limit))]
    return out
