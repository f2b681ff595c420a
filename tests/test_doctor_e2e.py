"""`aiinfra doctor` against the real dev cluster: every launcher's stop reaches every rank,
and every probe job requeues itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurmjobs import aiinfra

pytestmark = pytest.mark.slurm


def test_doctor_finds_the_dev_clusters_signal_and_requeue_path_sound(cluster: None,
                                                                    tmp_path: Path) -> None:
    proc = aiinfra("doctor", "--profile", "local", "--workdir", str(tmp_path / "doctor"),
                   "--checkpoint-mb", "4", "--json", check=False)
    report = json.loads(proc.stdout)
    status = {f["check"]: f["status"] for f in report["findings"]}
    for launcher in ("torchrun", "srun", "mpirun"):
        assert status[f"{launcher}.stop"] == "OK", report
        assert status[f"{launcher}.requeue"] == "OK", report
    assert [p["ready"] for p in report["probes"]] == [2, 2, 2]
    assert all(p["save_s"] is not None and p["state"] == "COMPLETED" for p in report["probes"])
    assert proc.returncode == max(("OK", "WARN", "CRIT").index(s) for s in status.values())
