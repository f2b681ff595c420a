"""Reports over the sweep history and sacct records, in every format."""

from __future__ import annotations

import html
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

from aiinfra.health.history import NodeRow, ResultRow, RunRow, connect, record  # noqa: E402
from aiinfra.health.report import (FORMATS, ReportError, goodput_report, gpus_of,  # noqa: E402
                                   jobs_report, load_verdicts, nodes_report, parse_sacct,
                                   render, since_seconds)
from aiinfra.health.result import Status  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sacct"
OK, CRIT, UNKNOWN = Status.OK, Status.CRIT, Status.UNKNOWN

# node -> its verdict in each of 6 sweeps (n2 flaps, n3 fails from the 4th sweep on)
VERDICTS = {"n1": [OK] * 6, "n2": [OK, CRIT, OK, CRIT, OK, OK], "n3": [OK, OK, OK, CRIT, CRIT, CRIT],
            "n4": [OK, UNKNOWN, OK, OK, OK, OK]}
# matmul TFLOPS per sweep: n4 drops 30% below its own history at the last sweep
TFLOPS = {"n1": [700] * 6, "n2": [690] * 6, "n3": [705] * 6, "n4": [700, 700, 700, 700, 700, 490]}
T0 = time.time() - 6 * 86400


@pytest.fixture
def history(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with connect(tmp_path / "h.sqlite") as conn:
        for i in range(6):
            nodes, results = [], []
            for node, statuses in VERDICTS.items():
                status = statuses[i]
                action = "drain" if status == CRIT and statuses[i - 1] != CRIT else "none"
                nodes.append(NodeRow(node, status, action, ""))
                results.append(ResultRow(node, "host.disk", status, None, "host.disk: x"))
                results.append(ResultRow(node, "gpu.matmul", OK, TFLOPS[node][i], "ok"))
            record(conn, RunRow(f"r{i}", T0 + i * 86400, T0 + i * 86400 + 60, "p", "quick",
                                OK, False), nodes, results)
        yield conn


def test_nodes_report_finds_history_flapping_checks_and_slow_nodes(
        history: sqlite3.Connection) -> None:
    report = nodes_report(history, 0)
    per_node, flapping, checks, slow = (s.frame for s in report.sections)
    rows = per_node.set_index("node")
    assert rows.loc["n3", ["sweeps", "passed", "crit", "unknown", "flips", "drains"]].tolist() == [
        6, 3, 3, 0, 1, 1]
    assert rows.loc["n2", "flips"] == 4 and rows.loc["n2", "drains"] == 2
    assert rows.loc["n4", "unknown"] == 1 and rows.loc["n4", "flips"] == 0  # UNKNOWN is no flip
    assert rows.loc["n3", "last"] == "CRIT"
    assert flapping["node"].tolist() == ["n2"]
    assert checks.to_dict("records") == [{"check": "host.disk", "crit": 5, "warn": 0,
                                          "unknown": 1, "results": 24, "nodes_crit": 2}]
    assert slow["node"].tolist() == ["n4"]
    assert slow.iloc[0]["own_baseline"] == 700 and round(slow.iloc[0]["vs_own"], 2) == -0.30


def test_the_window_limits_the_nodes_report(history: sqlite3.Connection) -> None:
    report = nodes_report(history, T0 + 3.5 * 86400)  # the last two sweeps
    rows = report.sections[0].frame.set_index("node")
    assert rows["sweeps"].tolist() == [2, 2, 2, 2]
    with pytest.raises(ReportError, match="no sweep in that window"):
        nodes_report(history, time.time() + 10)


def test_fleet_median_flags_a_node_that_was_always_slow(tmp_path: Path) -> None:
    with connect(tmp_path / "h.sqlite") as conn:
        for i in range(2):
            rows = [ResultRow(f"n{k}", "gpu.membw", OK, 3000.0 if k else 2000.0, "ok")
                    for k in range(4)]
            record(conn, RunRow(f"r{i}", T0 + i, T0 + i, "p", "quick", OK, False),
                   [NodeRow(f"n{k}", OK, "none", "") for k in range(4)], rows)
        slow = nodes_report(conn, 0).sections[3].frame
    assert slow["node"].tolist() == ["n0"]
    assert round(slow.iloc[0]["vs_own"], 2) == 0 and round(slow.iloc[0]["vs_fleet"], 2) == -0.33


def test_sacct_recorded_on_the_dev_cluster_parses() -> None:
    frame = parse_sacct((FIXTURES / "devcluster.txt").read_text())
    assert len(frame) == 15
    assert set(frame["State"]) == {"CANCELLED", "COMPLETED", "FAILED", "REQUEUED", "TIMEOUT"}
    assert (frame["GPUs"] == 0).all() and frame["AllocCPUS"].min() >= 1
    assert frame["JobName"].str.len().max() > 200  # a long name arrives whole


GPU_SACCT = """\
10|alice|gpu|COMPLETED|0:0|gpu[001-002]|2|3600|2026-01-01T00:00:00|2026-01-01T01:00:00|billing=16,cpu=16,gres/gpu=16,node=2|16|train
11|bob|gpu|REQUEUED|0:0|gpu003|1|1800|2026-01-01T00:00:00|2026-01-01T00:30:00|cpu=8,gres/gpu:h100=8,gres/gpu=8,node=1|8|ft
11|bob|gpu|NODE_FAIL|1:0|gpu004|1|900|2026-01-01T00:31:00|2026-01-01T00:46:00|cpu=8,gres/gpu=8,node=1|8|ft
12|carol|gpu|PREEMPTED|0:0|gpu001|1|360|2026-01-01T02:00:00|2026-01-01T02:06:00|cpu=8,gres/gpu=4,node=1|8|a|b
"""


def test_gpu_hours_and_money() -> None:
    frame = parse_sacct(GPU_SACCT)
    assert frame["JobName"].tolist() == ["train", "ft", "ft", "a|b"]
    report = goodput_report(frame, 2.5)
    totals = report.sections[0].frame.iloc[0].to_dict()
    assert totals["unit"] == "GPU-hours"
    assert totals["used"] == 16 + 4 + 2 + 0.4
    assert totals["good"] == 16 and totals["lost"] == 6.4
    assert totals["cost_lost"] == 16.0 and totals["goodput"] == round(16 / 22.4, 4)
    by = report.sections[1].frame.set_index("category")["hours"].to_dict()
    assert by == {"good": 16.0, "lost: failure": 2.0, "lost: preemption": 0.4,
                  "lost: requeue": 4.0}


def test_cpu_hours_where_there_are_no_gpus() -> None:
    frame = parse_sacct((FIXTURES / "devcluster.txt").read_text())
    totals = goodput_report(frame, 0.1).sections[0].frame.iloc[0]
    expected = (frame["AllocCPUS"] * frame["ElapsedRaw"]).sum() / 3600
    assert totals["unit"] == "CPU-hours" and totals["used"] == round(expected, 3)


@pytest.mark.parametrize("tres, gpus", [
    ("billing=1,cpu=1,node=1", 0), ("cpu=8,gres/gpu=8,node=1", 8),
    ("cpu=8,gres/gpu:h100=8,gres/gpu=8,node=1", 8), ("cpu=8,gres/gpu:a100=2,gres/gpu:v100=1", 3),
])
def test_gpus_of(tres: str, gpus: int) -> None:
    assert gpus_of(tres) == gpus


def test_jobs_report_links_failures_to_node_health(tmp_path: Path) -> None:
    end = time.mktime(time.strptime("2026-01-01T00:46:00", "%Y-%m-%dT%H:%M:%S"))
    with connect(tmp_path / "h.sqlite") as conn:
        record(conn, RunRow("r1", end + 3600, end + 3660, "p", "quick", CRIT, False),
               [NodeRow("gpu004", CRIT, "drain", "aiinfra: x"), NodeRow("gpu001", OK, "none", "")],
               [])
        verdicts = load_verdicts(conn, 0)
    report = jobs_report(parse_sacct(GPU_SACCT), verdicts)
    states, restarted, per_node, linked = (s.frame for s in report.sections)
    assert states.set_index("State")["records"].to_dict() == {
        "COMPLETED": 1, "REQUEUED": 1, "NODE_FAIL": 1, "PREEMPTED": 1}
    assert restarted[["JobIDRaw", "restarts", "final"]].values.tolist() == [["11", 1, "NODE_FAIL"]]
    row = per_node.set_index("node").loc["gpu004"]
    assert (row["failed"], row["sweep_crit"], row["sweep_runs"]) == (1, 1, 1)
    assert linked[["JobIDRaw", "node"]].values.tolist() == [["11", "gpu004"]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_every_report(history: sqlite3.Connection, fmt: str) -> None:
    verdicts = load_verdicts(history, 0)
    sacct = parse_sacct((FIXTURES / "devcluster.txt").read_text())
    for report in (nodes_report(history, 0), jobs_report(sacct, verdicts),
                   goodput_report(sacct, 1.0)):
        text = render(report, fmt)  # type: ignore[arg-type]
        for section in report.sections:
            assert (html.escape(section.title) if fmt == "html" else section.title) in text
        if fmt == "json":
            assert json.loads(text)["report"] == report.title
        if fmt == "html":
            assert text.count("data:image/png;base64,") >= 1


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400),
                                           ("2w", 14 * 86400), ("1.5d", 1.5 * 86400)])
def test_since(text: str, seconds: float) -> None:
    assert since_seconds(text) == seconds


def test_a_bad_since_is_refused() -> None:
    with pytest.raises(ReportError, match="expected a number and a unit"):
        since_seconds("30 days")


C0_BLUE = (31, 119, 180)  # matplotlib's first colour: the bars


def test_the_html_report_shows_its_plots_in_a_browser(history: sqlite3.Connection,
                                                      tmp_path: Path) -> None:
    """Headless Chromium renders the page; its screenshot holds the plots' bars."""
    import os
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing (scripts/setup.sh installs it)")
        pytest.skip("chromium is not installed")
    page = tmp_path / "nodes.html"
    page.write_text(render(nodes_report(history, 0), "html"))
    shot = tmp_path / "nodes.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,1400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    keep = os.environ.get("AIINFRA_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    from matplotlib.image import imread

    pixels = (imread(shot)[:, :, :3] * 255).round().astype(int)
    blue = (abs(pixels - C0_BLUE).sum(axis=2) <= 12)
    rows_with_bars = blue.any(axis=1).nonzero()[0]
    assert blue.sum() > 2000, "no plot bars in the screenshot"
    # two plots (nodes, checks): the bars sit in two separate bands of the page
    assert (rows_with_bars[1:] - rows_with_bars[:-1]).max() > 100
