"""The nightly sweep against the real dev cluster (shared: every node touched is restored).

Kept short: the draining tests limit the sweep to node3 and node4, and a finalizer resumes
node3/node4 and removes any reservation one of these sweeps made, whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurmjobs import job_env

# Sweeps drain nodes and wait for every busy node: alone, never beside other tests.
pytestmark = [pytest.mark.slurm, pytest.mark.exclusive]

AIINFRA = [sys.executable, "-m", "aiinfra"]
FAIL_NODE3 = """
inherits = "local"
[[health.override]]
nodes = "node3"
[health.override.thresholds."host.disk"]
min_free_gib = 1000000000
"""
FAIL_ALL = """
inherits = "local"
[health.thresholds."host.disk"]
path = "/tmp"
min_free_gib = 1000000000
"""
SETTINGS = """
[sweep]
drain_after = 1
resume_after = 2
busy = "wait"          # the shared cluster may be running someone's job: wait for it
deadline_s = 240
"""


def sweep(state: Path, profile: str, *args: str, timeout: float = 300,
          ) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run([*AIINFRA, "sweep", "--profile", profile, "--state-dir", str(state),
                           "--settings", str(state / "sweep.toml"), "--json", *args],
                          capture_output=True, text=True, timeout=timeout, env=job_env())
    data = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, data, proc.stderr


def node(name: str) -> tuple[str, str, str]:
    """State, reason and the reason's timestamp, as sinfo shows them."""
    out = subprocess.run(["sinfo", "--noheader", "--Node", f"--nodes={name}",
                          "--format=%T|%H|%E"], capture_output=True, text=True,
                         check=True).stdout.splitlines()[0]
    state, stamp, reason = out.split("|", 2)
    return state, reason, stamp


def our_reservations(state: Path) -> list[str]:
    out = subprocess.run(["scontrol", "--oneliner", "show", "reservation"], capture_output=True,
                         text=True, check=True).stdout
    runs = {p.name for p in (state / "runs").glob("*")} if (state / "runs").exists() else set()
    names = [w.split("=", 1)[1] for line in out.splitlines() for w in line.split()[:1]
             if w.startswith("ReservationName=")]
    return [n for n in names if n.removeprefix("aiinfra-sweep-") in runs]


def drained_by(state: Path) -> set[str]:
    """Nodes these tests' sweeps drained (from their own history)."""
    import sqlite3

    if not (state / "history.sqlite").exists():
        return set()
    with sqlite3.connect(state / "history.sqlite") as conn:
        rows = conn.execute("SELECT node FROM nodes WHERE action IN ('drain', 'redrain')")
        return {r[0] for r in rows}


@pytest.fixture
def state(tmp_path: Path, cluster: None) -> Iterator[Path]:
    """A state dir for these sweeps; afterwards node3/node4 are resumed if drained and our
    reservations removed, pass or fail."""
    (tmp_path / "sweep.toml").write_text(SETTINGS)
    (tmp_path / "fail3.toml").write_text(FAIL_NODE3)
    (tmp_path / "failall.toml").write_text(FAIL_ALL)
    try:
        yield tmp_path
    finally:
        for name in our_reservations(tmp_path):
            subprocess.run(["scontrol", "delete", f"ReservationName={name}"], check=False)
        for name in ("node3", "node4", *drained_by(tmp_path)):
            if "drain" in node(name)[0]:
                subprocess.run(["scontrol", "update", f"NodeName={name}", "State=RESUME"],
                               check=False)


def test_drain_a_failing_node_resume_it_when_healed_and_never_touch_a_foreign_drain(
        state: Path) -> None:
    subprocess.run(["scontrol", "update", "NodeName=node4", "State=DRAIN",
                    "Reason=maintenance"], check=True)
    before = node("node4")
    scope = ("--nodes", "node[3-4]")

    code, data, err = sweep(state, str(state / "fail3.toml"), *scope)
    assert code == 2, err
    assert data["drained"] == ["node3"] and data["skipped"] == ["node4"], data
    state3, reason3, _ = node("node3")
    assert state3.startswith("drain"), (state3, reason3)
    assert reason3.startswith("aiinfra: host.disk: /tmp free ") and "< min 1e+09 GiB" in reason3
    assert node("node4") == before

    code, data, err = sweep(state, "local", *scope)  # healed: passes 1 of resume_after 2
    assert code == 0, err
    assert data["unchanged"] == ["node3"] and data["resumed"] == [], data
    assert node("node3")[0].startswith("drain") and node("node3")[1] == reason3
    assert "reserve node3 as aiinfra-sweep-" in err and "removed" in err
    assert node("node4") == before and our_reservations(state) == []

    code, data, err = sweep(state, "local", *scope)  # passes 2 of 2: resumed
    assert code == 0, err
    assert data["resumed"] == ["node3"], data
    assert node("node3")[0] in ("idle", "mixed", "allocated"), node("node3")
    assert node("node4") == before and our_reservations(state) == []

    history = state / "history.sqlite"
    nodes = json.loads(subprocess.run(
        [*AIINFRA, "report", "nodes", "--history", str(history), "--format", "json"],
        capture_output=True, text=True, check=True).stdout)
    rows = {r["node"]: r for r in nodes["sections"]["Pass/fail history per node"]}
    assert (rows["node3"]["sweeps"], rows["node3"]["crit"], rows["node3"]["drains"],
            rows["node3"]["resumes"]) == (3, 1, 1, 1)
    assert "node4" not in rows  # never checked


def test_reports_render_in_every_format_from_a_real_sweep_and_sacct(state: Path) -> None:
    code, data, err = sweep(state, "local", "--nodes", "node[1-2]", "--textfile",
                            str(state / "aiinfra.prom"))
    assert code == 0 and data["unchanged"] == ["node1", "node2"], err
    prom = (state / "aiinfra.prom").read_text()
    assert 'aiinfra_health_check_status{node="node1",check="host.disk"} 0' in prom
    history = str(state / "history.sqlite")
    commands = [["nodes", "--history", history], ["jobs", "--history", history, "--since", "1d"],
                ["goodput", "--since", "1d", "--price-per-gpu-hour", "2.5"]]
    for command in commands:
        for fmt in ("table", "csv", "json", "html"):
            out = state / f"{command[0]}.{fmt}"
            subprocess.run([*AIINFRA, "report", *command, "--format", fmt, "--output", str(out)],
                           check=True, capture_output=True, timeout=120)
            text = out.read_text()
            assert text.strip(), (command, fmt)
            if fmt == "json":
                assert json.loads(text)["sections"]
            if fmt == "html":
                assert "data:image/png;base64," in text
    jobs = json.loads((state / "jobs.json").read_text())["sections"]
    assert any(r["JobIDRaw"] for r in jobs["Restarted jobs"]) or jobs["Job states"]
    goodput = json.loads((state / "goodput.json").read_text())["sections"]["Totals"][0]
    assert goodput["unit"] == "CPU-hours" and goodput["used"] > 0


def test_a_profile_failing_every_node_drains_nothing_and_names_the_cap(state: Path) -> None:
    code, data, err = sweep(state, str(state / "failall.toml"), "--nodes", "node[1-4]")
    assert code == 2, err
    assert data["capped"] is True and data["drained"] == [], data
    assert "blast-radius cap" in str(data["cap"]) and "max_drain_fraction 0.1" in str(data["cap"])
    for name in ("node1", "node2", "node3", "node4"):
        assert not node(name)[1].startswith("aiinfra:")
    text = subprocess.run([*AIINFRA, "sweep", "--profile", str(state / "failall.toml"),
                           "--state-dir", str(state), "--settings", str(state / "sweep.toml"),
                           "--nodes", "node[1-2]", "--dry-run"], capture_output=True, text=True,
                          env=job_env(), timeout=300)
    assert text.returncode == 2 and "blast-radius cap: 2 of 2 swept nodes" in text.stdout


def test_one_sweep_at_a_time_and_a_killed_job_leaves_its_nodes_unknown(state: Path) -> None:
    # Hold node2 so that the sweep's job for it waits (busy = "wait") and can be killed.
    blocker = subprocess.run(["sbatch", "--parsable", "--nodelist=node2", "--exclusive",
                              "--output=/dev/null", "--job-name=sweep-test-blocker",
                              "--wrap", "sleep 120"], capture_output=True, text=True,
                             check=True).stdout.strip()
    wait_running(blocker)
    first = subprocess.Popen([*AIINFRA, "sweep", "--profile", str(state / "failall.toml"),
                              "--state-dir", str(state), "--settings", str(state / "sweep.toml"),
                              "--nodes", "node2", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=job_env())
    try:
        job = wait_for_sweep_job(state)
        start = time.monotonic()
        code, _, err = sweep(state, "local", "--nodes", "node1")
        assert code == 3 and "another sweep is running (pid" in err, err
        assert time.monotonic() - start < 10
        subprocess.run(["scancel", job], check=True)  # the per-node job dies before reporting
        out, err = first.communicate(timeout=120)
    finally:
        subprocess.run(["scancel", blocker], check=False)
        if first.poll() is None:
            first.terminate()
            first.wait(timeout=60)
    data = json.loads(out)
    assert first.returncode == 3, err  # UNKNOWN: the only node never reported
    assert data["unknown"] == ["node2"] and data["drained"] == [], data
    assert not node("node2")[1].startswith("aiinfra:")


def wait_running(job: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "--noheader", f"--jobs={job}", "--format=%T"],
                             capture_output=True, text=True).stdout.strip()
        if out == "RUNNING":
            return
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=False)
    raise AssertionError(f"blocker {job} did not start")


def wait_for_sweep_job(state: Path, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in (state / "runs").glob("*") if (state / "runs").exists() else []:
            out = subprocess.run(["squeue", "--noheader", f"--name=aiinfra-sweep-{run.name}",
                                  "--format=%i"], capture_output=True, text=True).stdout.split()
            if out:
                return out[0]
        time.sleep(0.5)
    raise AssertionError("the first sweep submitted no job")


def test_the_cron_wrapper_prints_only_on_change(state: Path) -> None:
    """Dry runs (nothing drained for real): a clean node prints nothing; a would-be drain
    prints the node, its reason and the log."""
    import os

    repo = Path(__file__).resolve().parents[1]
    env = {**job_env(), "AIINFRA": f"{sys.executable} -m aiinfra",
           "AIINFRA_SWEEP_LOG_DIR": str(state / "log")}
    args = ["--state-dir", str(state), "--settings", str(state / "sweep.toml"), "--dry-run"]

    def cron(profile: str, nodes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(repo / "scripts" / "health-sweep.cron"), "--profile", profile,
                               "--nodes", nodes, *args], capture_output=True, text=True,
                              env=env, timeout=300)

    quiet = cron("local", "node1")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    loud = cron(str(state / "fail3.toml"), "node3")
    assert loud.returncode == 2
    assert "(dry run: nothing was changed)" in loud.stdout and "drained node3" in loud.stdout
    assert "node3: drain aiinfra: host.disk: /tmp free" in loud.stdout
    log = (state / "log" / "health-sweep.log").read_text()
    assert log.count("=== exit ") == 2 and os.access(repo / "scripts" / "health-sweep.cron",
                                                      os.X_OK)
    assert not node("node3")[1].startswith("aiinfra:")
