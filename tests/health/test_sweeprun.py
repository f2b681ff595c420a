"""The sweep driver's pieces that need no Slurm: the lock, settings, the script, the textfile."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiinfra.health.history import ResultRow
from aiinfra.health.result import Status
from aiinfra.health.sweep import Batch, Decision, NodeState, SweepSettings, Summary
from aiinfra.health.sweeprun import (Request, Sweep, SweepBusy, settings_for, sweep_lock,
                                     textfile)
from aiinfra.launcher.errors import SpecError
from aiinfra.launcher.profile import load_profile

HOLD = """
import sys, time
from pathlib import Path
from aiinfra.health.sweeprun import sweep_lock
with sweep_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_lock(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_second_sweep_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "sweep.lock"
    holder = hold_lock(lock)
    try:
        start = time.monotonic()
        with pytest.raises(SweepBusy, match=rf"another sweep is running \(pid {holder.pid} since"):
            with sweep_lock(lock):
                pass
        assert time.monotonic() - start < 1
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_sweep_is_free(tmp_path: Path) -> None:
    lock = tmp_path / "sweep.lock"
    holder = hold_lock(lock)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with sweep_lock(lock):  # no stale-lock cleanup needed: flock died with its holder
        assert lock.read_text().startswith(f"pid {os.getpid()} ")


def test_settings_come_from_file_then_set_then_flags(tmp_path: Path) -> None:
    profile = load_profile("local")
    file = tmp_path / "sweep.toml"
    file.write_text('[sweep]\ndrain_after = 3\nresume_after = 4\ntier = "standard"\n')
    got = settings_for(profile, file, ["resume_after=5", "busy=wait"],
                       {"tier": "quick", "history": None})
    assert (got.drain_after, got.resume_after, got.busy, got.tier) == (3, 5, "wait", "quick")


@pytest.mark.parametrize("text, message", [
    ("[sweep]\ndrain_afte = 3\n", "sweep.toml: sweep: drain_afte: unknown key"),
    ("[sweeps]\ndrain_after = 3\n", "sweep.toml: sweeps: unknown key (valid: sweep)"),
    ("[sweep]\nmax_nodes_per_job = 0\n", "max_nodes_per_job: must be at least 1"),
])
def test_bad_settings_files(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "sweep.toml"
    file.write_text(text)
    with pytest.raises(SpecError) as err:
        settings_for(load_profile("local"), file, [], {})
    assert message in str(err.value)


def test_a_bad_set_names_the_flag() -> None:
    with pytest.raises(SpecError, match="--set busy: busy: 'never' is not allowed"):
        settings_for(load_profile("local"), None, ["busy=never"], {})


def test_the_job_script_runs_the_checks_one_task_per_node(tmp_path: Path) -> None:
    settings = SweepSettings(state_dir=str(tmp_path), deadline_s=600)
    states = [NodeState("node1", "idle"), NodeState("node3", "drained", "aiinfra: x: 1 > 0")]
    sweep = Sweep(Request(load_profile("local"), settings), tmp_path, "debug", states,
                  lambda line: None)
    script = tmp_path / "job2.sbatch"
    text = sweep.script(2, Batch(("node3",), reservation=True), script)
    assert f"#SBATCH --reservation={sweep.reservation}\n" in text
    assert "#SBATCH --nodelist=node3\n#SBATCH --nodes=1\n" in text
    assert "#SBATCH --time=11\n" in text and "#SBATCH --exclusive\n" in text
    assert (f"srun --ntasks-per-node=1 --kill-on-bad-exit=0 {sys.executable} -m aiinfra "
            "health run --profile ") in text
    assert f"--output-dir {tmp_path}/runs/{sweep.run_id}/reports" in text
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)
    plain = sweep.script(1, Batch(("node1",)), script)
    assert "--reservation" not in plain


def test_the_prometheus_textfile() -> None:
    summary = Summary("r1", (Decision("node3", "drain", "drained", Status.CRIT, "aiinfra: x"),
                             Decision("node1", "none", "unchanged", Status.OK),
                             Decision("node4", "none", "skipped", None, note="not ours")))
    rows = [ResultRow("node3", "host.disk", Status.CRIT, None, "x"),
            ResultRow('no"de', "host.cpu", Status.OK, None, "ok")]
    text = textfile(summary, rows, 1700000000.5)
    lines = text.splitlines()
    assert 'aiinfra_health_check_status{node="node3",check="host.disk"} 2' in lines
    assert 'aiinfra_health_check_status{node="no\\"de",check="host.cpu"} 0' in lines
    assert 'aiinfra_health_node_status{node="node3",action="drain"} 2' in lines
    assert 'aiinfra_health_node_status{node="node1",action="none"} 0' in lines
    assert not any('node="node4"' in line for line in lines)  # not checked: no status
    assert 'aiinfra_health_sweep_nodes{outcome="drained"} 1' in lines
    assert "aiinfra_health_sweep_status 2" in lines
    assert "aiinfra_health_sweep_timestamp_seconds 1700000000.500" in lines
    for line in lines:  # every sample has HELP and TYPE
        if not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            assert f"# TYPE {name} gauge" in text and f"# HELP {name} " in text
