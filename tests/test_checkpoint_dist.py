"""Checkpoint helpers across ranks: torchrun (gloo) and mpirun (mpi4py), two processes each.

tests/ckpt_ranks.py runs the scenarios and writes one file per rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def ranks(root: Path) -> list[dict[str, str]]:
    out = []
    for rank in (0, 1):
        lines = (root / f"rank{rank}.out").read_text().splitlines()
        out.append(dict(line.split("=", 1) for line in lines))
    return out


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                               **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ranks_agree_under_torchrun(tmp_path: Path) -> None:
    run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "--no-python",
         sys.executable, str(HERE / "ckpt_ranks.py"), "torch", str(tmp_path)])
    zero, one = ranks(tmp_path)
    # Replicated state: rank 0's lands, once; both ranks see it when save returns.
    assert zero["latest_after_save"] == one["latest_after_save"] == "5"
    assert zero["loaded_writer"] == one["loaded_writer"] == "0"
    assert sorted(os.listdir(tmp_path / "shared")) == ["step-00000005.complete",
                                                       "step-00000005.pt"]
    # Rank 1's own directory has a newer step, yet it resumes where rank 0 chose.
    assert (zero["own_latest"], one["own_latest"]) == ("5", "7")
    assert zero["resumed"] == one["resumed"] == "5"
    # A DTensor sharded over both ranks round-trips through a DCP directory.
    assert zero["sharded_equal"] == one["sharded_equal"] == "True"
    assert zero["local_rows"] == one["local_rows"] == "2"
    assert zero["dcp_latest"] == one["dcp_latest"] == "3"
    dcp = tmp_path / "dcp" / "step-00000003.dcp"
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= set(os.listdir(dcp))
    # Only rank 1 got SIGUSR2; both stop at the same iteration.
    assert zero["stopped_at"] == one["stopped_at"] == "3"
    assert (zero["own_signal"], one["own_signal"]) == ("None", "12")


def test_ranks_agree_under_mpirun_without_torch(tmp_path: Path) -> None:
    run(["mpirun", "-n", "2", "--oversubscribe", sys.executable, str(HERE / "ckpt_ranks.py"),
         "mpi", str(tmp_path)],
        env={"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    zero, one = ranks(tmp_path)
    assert zero["loaded_writer"] == one["loaded_writer"] == "0"
    assert zero["format"] == "['.complete', '.pkl']"
    assert zero["stopped_at"] == one["stopped_at"] == "3"
    assert zero["torch_imported"] == one["torch_imported"] == "False"
