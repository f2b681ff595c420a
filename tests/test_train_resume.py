"""examples/train_ddp.py resumes through the checkpoint helpers to the same final checksum
(torchrun --standalone, two ranks on this machine; no Slurm)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = 60


def torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "--no-python",
            sys.executable, str(REPO / "examples" / "train_ddp.py"), "--steps", str(STEPS),
            *args]


def env(ckpt: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "AIINFRA_CHECKPOINT_DIR": str(ckpt), **extra}


def run(ckpt: Path, *args: str, **extra: str) -> str:
    proc = subprocess.run(torchrun(*args), cwd=REPO, env=env(ckpt, **extra),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


def checksum(out: str) -> str:
    found = re.findall(r"^final_checksum=([0-9a-f]{64})$", out, re.M)
    assert len(found) == 1, out
    return found[0]


def interrupted(ckpt: Path, how: str) -> str:
    """Start a slow run, stop it once two checkpoints exist, return its output."""
    stop = ckpt.parent / "stop"
    proc = subprocess.Popen(torchrun("--step-seconds", "0.05", "--checkpoint-every", "5"),
                            cwd=REPO, env=env(ckpt, AIINFRA_STOP_FILE=str(stop)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(ckpt.glob("*.complete"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)  # torchrun's agent passes SIGTERM to its workers
    else:
        stop.touch()
    out, err = proc.communicate(timeout=120)
    assert "stopped_at_step=" in out, out + err[-3000:]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    ckpt = tmp_path_factory.mktemp("ref") / "ckpt"
    out = run(ckpt)
    assert not ckpt.exists()  # the default run neither reads nor writes checkpoints
    return checksum(out)


@pytest.mark.parametrize("how", ["sigterm", "stop_file"])
def test_an_interrupted_run_resumes_to_the_same_checksum(reference: str, tmp_path: Path,
                                                         how: str) -> None:
    ckpt = tmp_path / "ckpt"
    first = interrupted(ckpt, how)
    stopped = int(re.search(r"^stopped_at_step=(\d+)", first, re.M).group(1))  # type: ignore[union-attr]
    assert 10 <= stopped < STEPS and "final_checksum" not in first
    assert f"saved_checkpoint_step={stopped}" in first  # the stop step itself was saved
    second = run(ckpt, "--checkpoint-every", "5")
    assert f"resumed_from_step={stopped}\n" in second
    assert checksum(second) == reference


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(reference: str,
                                                                    tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = interrupted(ckpt, "stop_file")
    stopped = int(re.search(r"^stopped_at_step=(\d+)", first, re.M).group(1))  # type: ignore[union-attr]
    newest = ckpt / f"step-{stopped:08d}.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    steps = sorted(int(p.name[5:13]) for p in ckpt.glob("*.complete"))
    second = run(ckpt, "--checkpoint-every", "5")
    assert f"resumed_from_step={steps[-2]}\n" in second
    assert checksum(second) == reference


def test_a_checkpoint_of_another_world_size_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run(ckpt, "--checkpoint-every", "30")
    proc = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node=1",
                           "--no-python", sys.executable, str(REPO / "examples" / "train_ddp.py"),
                           "--steps", str(STEPS), "--checkpoint-every", "30"], cwd=REPO,
                          env=env(ckpt), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "'world_size': 2" in proc.stdout + proc.stderr


# --- the mpirun twin: examples/mpi_train.py (mpi4py, no torch) ---------------------------------

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def mpirun(*args: str) -> list[str]:
    return ["mpirun", "-n", "2", "--oversubscribe", sys.executable,
            str(REPO / "examples" / "mpi_train.py"), "--steps", "150", *args]


def test_mpi_train_resumes_after_sigterm_to_mpirun_with_the_same_checksum(
        tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    whole = subprocess.run(mpirun(), env=env(ckpt, **MPI_ENV), capture_output=True, text=True,
                           timeout=300, check=True).stdout
    assert not ckpt.exists()
    slow = mpirun("--step-seconds", "0.02", "--checkpoint-every", "10")
    proc = subprocess.Popen(slow, env=env(ckpt, **MPI_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(ckpt.glob("*.complete"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # mpirun passes SIGTERM on to the ranks
    first, err = proc.communicate(timeout=120)
    stopped = re.search(r"^stopped_at_step=(\d+) signal=15", first, re.M)
    assert stopped, first + err[-3000:]
    second = subprocess.run(slow, env=env(ckpt, **MPI_ENV), capture_output=True, text=True,
                            timeout=300, check=True).stdout
    assert f"resumed_from_step={stopped.group(1)}\n" in second
    assert checksum(second) == checksum(whole)
