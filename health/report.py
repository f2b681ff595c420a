"""`aiinfra report nodes|jobs|goodput`: the sweep history and sacct, through pandas.

pandas and matplotlib are the ``report`` extra: they are imported inside the functions that
use them, never at module import (login nodes run ``aiinfra --help`` without them).
Aggregations over the per-check results run in SQLite (one pass over the rows); pandas
works on the much smaller per-node and per-job frames.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..launcher.errors import AiinfraError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

Format = Literal["table", "csv", "json", "html"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json", "html")
# JobName last: a name may hold the delimiter, so each line splits on the first 12 only.
SACCT_FIELDS = ("JobIDRaw", "User", "Partition", "State", "ExitCode", "NodeList", "NNodes",
                "ElapsedRaw", "Start", "End", "AllocTRES", "AllocCPUS", "JobName")
FAILED_STATES = frozenset({"FAILED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "TIMEOUT",
                           "DEADLINE"})
CATEGORIES = {"COMPLETED": "good", "RUNNING": "running", "REQUEUED": "lost: requeue",
              "PREEMPTED": "lost: preemption", "CANCELLED": "cancelled"}
_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_GPU_TRES = re.compile(r"gres/gpu(?::[^=,]+)?=(\d+)")


class ReportError(AiinfraError):
    """A report cannot be made (no history, pandas missing, bad --since)."""


def since_seconds(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w`` -> seconds."""
    match = _SINCE.match(text.strip())
    if not match:
        raise ReportError(f"--since {text!r}: expected a number and a unit m, h, d or w "
                          "(e.g. 30d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Plot:
    title: str
    draw: Callable[[Axes], None]


@dataclass(frozen=True)
class Section:
    title: str
    frame: pd.DataFrame
    plot: Plot | None = None


@dataclass(frozen=True)
class Report:
    title: str
    sections: tuple[Section, ...]


def require_pandas() -> None:
    """A clear error instead of an ImportError when the `report` extra is missing."""
    try:
        import matplotlib  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as exc:
        raise ReportError("reports need pandas and matplotlib: pip install 'aiinfra[report]'"
                          ) from exc


# ---------------------------------------------------------------- nodes

def nodes_report(conn: sqlite3.Connection, since_epoch: float, *, flap_min: int = 2,
                 drop: float = 0.2) -> Report:
    """Pass/fail history per node, flapping nodes, the checks failing most, and nodes
    more than ``drop`` below their own baseline or the fleet median on measured values."""
    import pandas as pd
    first = conn.execute("SELECT MIN(run) FROM runs WHERE started >= ?", (since_epoch,))
    first_run = first.fetchone()[0]
    if first_run is None:
        raise ReportError("the history holds no sweep in that window")
    verdicts = load_verdicts(conn, since_epoch)
    per_node = node_history(verdicts)
    flapping = per_node[per_node["flips"] >= flap_min]
    checks = pd.read_sql_query(
        "SELECT check_name AS \"check\", SUM(status = 2) AS crit, SUM(status = 1) AS warn, "
        "SUM(status = 3) AS unknown, COUNT(*) AS results, "
        "COUNT(DISTINCT CASE WHEN status = 2 THEN node END) AS nodes_crit "
        "FROM results WHERE run >= ? GROUP BY check_name "
        "HAVING crit + warn + unknown > 0 ORDER BY crit DESC, warn DESC, unknown DESC",
        conn, params=(first_run,))
    values = pd.read_sql_query(
        "SELECT node, check_name AS \"check\", run, value FROM results "
        "WHERE run >= ? AND value IS NOT NULL", conn, params=(first_run,))
    slow = below_baseline(values, drop)
    return Report("Node health", (
        Section("Pass/fail history per node", per_node, Plot("Sweeps per node", _stacked(
            per_node, "node", ["passed", "crit", "unknown"]))),
        Section(f"Flapping nodes (>= {flap_min} pass/fail flips)", flapping),
        Section("Checks failing most", checks, Plot("CRIT results per check", _bars(
            checks, "check", "crit"))),
        Section(f"Nodes more than {drop:.0%} below their own baseline or the fleet median",
                slow)))


def node_history(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per node: sweeps, passed (OK/WARN), crit, unknown, pass/fail flips, drains, last."""
    import pandas as pd
    if verdicts.empty:
        return pd.DataFrame(columns=["node", "sweeps", "passed", "crit", "unknown", "flips",
                                     "drains", "resumes", "last"])
    v = verdicts.sort_values(["node", "run"])
    known = v[v["status"] != 3].copy()
    known["fail"] = known["status"] == 2
    known["flip"] = known.groupby("node")["fail"].diff().fillna(False).astype(bool)
    grouped = v.groupby("node")
    out = pd.DataFrame({
        "sweeps": grouped.size(),
        "passed": grouped["status"].agg(lambda s: int(s.isin([0, 1]).sum())),
        "crit": grouped["status"].agg(lambda s: int((s == 2).sum())),
        "unknown": grouped["status"].agg(lambda s: int((s == 3).sum())),
        "flips": known.groupby("node")["flip"].sum().astype(int),
        "drains": grouped["action"].agg(lambda s: int((s == "drain").sum())),
        "resumes": grouped["action"].agg(lambda s: int((s == "resume").sum())),
        "last": grouped["status"].last().map({0: "OK", 1: "WARN", 2: "CRIT", 3: "UNKNOWN"}),
    })
    out["flips"] = out["flips"].fillna(0).astype(int)
    return out.reset_index().sort_values(["crit", "flips", "node"], ascending=[False, False, True],
                                         ignore_index=True)


def below_baseline(values: pd.DataFrame, drop: float) -> pd.DataFrame:
    """Each node's latest measured value against the median of its own earlier values and
    against the fleet median of the latest values; rows more than ``drop`` below either."""
    import pandas as pd
    columns = ["node", "check", "latest", "own_baseline", "fleet_median", "vs_own", "vs_fleet"]
    if values.empty:
        return pd.DataFrame(columns=columns)
    v = values.sort_values("run")
    latest = v.groupby(["node", "check"]).tail(1)
    earlier = v.drop(latest.index)
    own = earlier.groupby(["node", "check"])["value"].median().rename("own_baseline")
    out = latest.set_index(["node", "check"])["value"].rename("latest").to_frame().join(own)
    out["fleet_median"] = out.groupby(level="check")["latest"].transform("median")
    out["vs_own"] = (out["latest"] / out["own_baseline"] - 1).round(3)
    out["vs_fleet"] = (out["latest"] / out["fleet_median"] - 1).round(3)
    flagged = out[(out["vs_own"] < -drop) | (out["vs_fleet"] < -drop)]
    return flagged.reset_index()[columns].sort_values("node", ignore_index=True)


# ---------------------------------------------------------------- sacct

def parse_sacct(text: str) -> pd.DataFrame:
    """``sacct -P --noheader --format=SACCT_FIELDS`` output -> one row per job record
    (with ``--duplicates`` a requeued job has one record per attempt)."""
    import pandas as pd
    rows = [line.split("|", len(SACCT_FIELDS) - 1) for line in text.splitlines() if line.strip()]
    bad = [r for r in rows if len(r) != len(SACCT_FIELDS)]
    if bad:
        raise ReportError(f"unexpected sacct line with {len(bad[0])} fields: {'|'.join(bad[0])}")
    frame = pd.DataFrame(rows, columns=list(SACCT_FIELDS))
    frame["State"] = frame["State"].str.split().str[0].fillna("")
    for column in ("NNodes", "ElapsedRaw", "AllocCPUS"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(0).astype(int)
    frame["GPUs"] = frame["AllocTRES"].map(gpus_of).astype(int)
    return frame


def gpus_of(tres: str) -> int:
    """GPUs in an AllocTRES string (``cpu=8,gres/gpu=8,node=1``; typed ``gres/gpu:h100=8``
    entries too, counted once when the untyped total is there)."""
    plain = re.search(r"gres/gpu=(\d+)", tres)
    if plain:
        return int(plain.group(1))
    return sum(int(n) for n in _GPU_TRES.findall(tres))


def expand_nodes(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per job record x node."""
    import hostlist  # type: ignore[import-untyped]

    cache: dict[str, list[str]] = {}

    def expand(text: str) -> list[str]:
        if text not in cache:
            cache[text] = [] if text in ("", "None assigned") else hostlist.expand_hostlist(text)
        return cache[text]

    out = frame.assign(node=frame["NodeList"].map(expand)).explode("node")
    return out[out["node"].notna()]


def jobs_report(sacct: pd.DataFrame, verdicts: pd.DataFrame | None,
                link_window_s: float = 86400.0) -> Report:
    """States, restarts, failures per node, and failed jobs that ran on a node the sweep
    found CRIT within ``link_window_s`` of the job's end."""
    import pandas as pd
    sacct = sacct.assign(failed=sacct["State"].isin(FAILED_STATES))
    states = (sacct.groupby("State").size().rename("records").reset_index()
              .sort_values("records", ascending=False, ignore_index=True))
    attempts = sacct.groupby(["JobIDRaw", "JobName", "User"]).agg(
        attempts=("State", "size"), final=("State", "last"),
        elapsed_s=("ElapsedRaw", "sum")).reset_index()
    attempts["restarts"] = attempts["attempts"] - 1
    restarted = attempts[attempts["restarts"] > 0].drop(columns="attempts")
    per_node = expand_nodes(sacct).groupby("node").agg(
        records=("JobIDRaw", "size"), failed=("failed", "sum")).reset_index()
    per_node["failure_rate"] = (per_node["failed"] / per_node["records"]).round(3)
    linked = link_health(sacct, per_node, verdicts, link_window_s)
    return Report("Jobs", (
        Section("Job states", states, Plot("Job records by state", _bars(states, "State",
                                                                         "records"))),
        Section("Restarted jobs", restarted),
        Section("Failures per node (with the sweep's verdicts)", linked,
                Plot("Failed job records per node", _bars(linked, "node", "failed"))),
        Section("Failed jobs on nodes the sweep found CRIT", failed_on_crit(
            sacct, verdicts, link_window_s))))


def link_health(sacct: pd.DataFrame, per_node: pd.DataFrame, verdicts: pd.DataFrame | None,
                window_s: float) -> pd.DataFrame:
    if verdicts is None or verdicts.empty:
        return per_node.assign(sweep_crit=0, sweep_runs=0)
    health = verdicts.groupby("node").agg(sweep_runs=("status", "size"),
                                          sweep_crit=("status", lambda s: int((s == 2).sum())))
    out = per_node.set_index("node").join(health).fillna({"sweep_runs": 0, "sweep_crit": 0})
    out[["sweep_runs", "sweep_crit"]] = out[["sweep_runs", "sweep_crit"]].astype(int)
    return out.reset_index().sort_values(["failed", "node"], ascending=[False, True],
                                         ignore_index=True)


def failed_on_crit(sacct: pd.DataFrame, verdicts: pd.DataFrame | None,
                   window_s: float) -> pd.DataFrame:
    import pandas as pd

    columns = ["JobIDRaw", "JobName", "State", "node", "End", "sweep_at"]
    if verdicts is None or verdicts.empty:
        return pd.DataFrame(columns=columns)
    failed = expand_nodes(sacct[sacct["failed"]])
    failed = failed.assign(end_s=failed["End"].map(local_epoch))
    crit = verdicts[verdicts["status"] == 2][["node", "started"]]
    joined = failed.merge(crit, on="node")
    near = joined[(joined["end_s"] - joined["started"]).abs() <= window_s]
    near = near.assign(sweep_at=near["started"].map(local_time))
    return near[columns].drop_duplicates(["JobIDRaw", "node"]).reset_index(drop=True)


def local_epoch(text: str) -> float:
    """sacct's local ``YYYY-MM-DDTHH:MM:SS`` as seconds since the epoch (NaN for Unknown)."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return float("nan")


def local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def load_verdicts(conn: sqlite3.Connection, since_epoch: float) -> pd.DataFrame:
    """One row per node x sweep in the window: node, run, started, status, action."""
    import pandas as pd
    return pd.read_sql_query(
        "SELECT n.node, n.run, r.started, n.status, n.action FROM nodes n "
        "JOIN runs r ON r.run = n.run WHERE r.started >= ?", conn, params=(since_epoch,))


# ---------------------------------------------------------------- goodput

def goodput_report(sacct: pd.DataFrame, price_per_hour: float) -> Report:
    """GPU-hours (CPU-hours on a cluster without GPUs): good, running, cancelled, and lost to
    failures, requeues and preemption; in money at ``price_per_hour`` per unit-hour."""
    import pandas as pd
    unit = "GPU" if (sacct["GPUs"] > 0).any() else "CPU"
    per = sacct["GPUs"] if unit == "GPU" else sacct["AllocCPUS"]
    hours = per * sacct["ElapsedRaw"] / 3600
    category = sacct["State"].map(lambda s: "lost: failure" if s in FAILED_STATES
                                  else CATEGORIES.get(s, "other"))
    frame = pd.DataFrame({"category": category, "hours": hours})
    table = frame.groupby("category")["hours"].sum().reset_index()
    total = float(table["hours"].sum())
    table["share"] = (table["hours"] / total).round(4) if total else 0.0
    table["cost"] = (table["hours"] * price_per_hour).round(2)
    table["hours"] = table["hours"].round(3)
    lost = float(table.loc[table["category"].str.startswith("lost"), "hours"].sum())
    good = float(table.loc[table["category"] == "good", "hours"].sum())
    totals = pd.DataFrame([{
        "unit": f"{unit}-hours", "used": round(total, 3), "good": round(good, 3),
        "lost": round(lost, 3), "goodput": round(good / total, 4) if total else None,
        "price_per_hour": price_per_hour, "cost_used": round(total * price_per_hour, 2),
        "cost_lost": round(lost * price_per_hour, 2)}])
    return Report(f"Goodput ({unit}-hours)", (
        Section("Totals", totals),
        Section(f"{unit}-hours by outcome", table, Plot(f"{unit}-hours by outcome", _bars(
            table, "category", "hours")))))


# ---------------------------------------------------------------- plots and formats

def _bars(frame: pd.DataFrame, label: str, value: str, top: int = 30) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        shown = frame.head(top)
        ax.barh([str(x) for x in shown[label]], shown[value].astype(float), color="C0")
        ax.invert_yaxis()
        ax.set_xlabel(value)
    return draw


def _stacked(frame: pd.DataFrame, label: str, parts: Sequence[str],
             top: int = 30) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        shown = frame.head(top)
        left = [0.0] * len(shown)
        names = [str(x) for x in shown[label]]
        for i, part in enumerate(parts):
            values = [float(x) for x in shown[part]]
            ax.barh(names, values, left=left, label=part, color=f"C{i}")
            left = [a + b for a, b in zip(left, values)]
        ax.invert_yaxis()
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return draw


def png(plot: Plot, rows: int) -> bytes:
    """The plot as PNG bytes (matplotlib's Agg backend: no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, max(2.5, 0.3 * min(rows, 30) + 1.2)))
    ax = fig.add_subplot()
    plot.draw(ax)
    ax.set_title(plot.title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def render(report: Report, fmt: Format) -> str:
    return {"table": as_table, "csv": as_csv, "json": as_json, "html": as_html}[fmt](report)


def as_table(report: Report) -> str:
    parts = [report.title, "=" * len(report.title)]
    for s in report.sections:
        body = "(none)" if s.frame.empty else s.frame.to_string(index=False)
        parts += ["", s.title, "-" * len(s.title), body]
    return "\n".join(parts) + "\n"


def as_csv(report: Report) -> str:
    """Each section as CSV under a ``# title`` line, sections separated by a blank line."""
    return "\n".join(f"# {s.title}\n{s.frame.to_csv(index=False)}" for s in report.sections)


def as_json(report: Report) -> str:
    sections = {s.title: json.loads(s.frame.to_json(orient="records", date_format="iso"))
                for s in report.sections}
    return json.dumps({"report": report.title, "sections": sections}, indent=2) + "\n"


def as_html(report: Report) -> str:
    """One self-contained page: each section's table and its plot as an embedded PNG."""
    body = [f"<h1>{html.escape(report.title)}</h1>"]
    for s in report.sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.plot is not None and not s.frame.empty:
            data = base64.b64encode(png(s.plot, len(s.frame))).decode()
            body.append(f'<img alt="{html.escape(s.plot.title)}" '
                        f'src="data:image/png;base64,{data}">')
        body.append("<p>(none)</p>" if s.frame.empty else s.frame.to_html(index=False,
                                                                           border=0))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
             "img{display:block;margin:1em 0}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(report.title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
