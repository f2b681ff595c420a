"""`aiinfra doctor`: the findings as plain functions of what the probes measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiinfra.launcher import doctor, probe
from aiinfra.launcher.doctor import Finding, Probe, Site
from aiinfra.launcher.ledger import Entry

SITE = Site(kill_wait_s=5, over_time_limit_min=0, max_time="UNLIMITED", grace_time_s=20,
            preempt_mode="REQUEUE")
GOOD = Probe("srun", 2, 2, (0.5, 0.9), 0.2, True, "COMPLETED")

# What the probe ranks printed in a dev-cluster run (torchrun, 16 MiB).
STEP_LOG = """doctor rank=1 ready t=1795488100.250
doctor rank=0 ready t=1795488100.310
doctor rank=1 stop t=1795488102.102 signal=None
doctor rank=0 stop t=1795488102.207 signal=None
doctor rank=0 saved_mb=16 save_s=0.081
"""


def entry(attempt: int, action: str) -> Entry:
    return Entry("9", attempt, ("node1", "node2"), "time_limit", 0, 0, (), "", None, 1, None,
                 None, action, "REQUEUED", "")


def test_a_probe_is_read_from_its_step_log_and_ledger() -> None:
    got = doctor.read_probe("torchrun", 2, STEP_LOG, [entry(0, "requeue"), entry(1, "final")],
                            1795488101.25, "COMPLETED")
    assert (got.ready, got.save_s, got.requeued) == (2, 0.081, True)
    assert got.stop_s == pytest.approx((0.852, 0.957))


def test_no_second_attempt_means_the_requeue_failed() -> None:
    got = doctor.read_probe("srun", 2, STEP_LOG, [entry(0, "final")], 0.0, "FAILED")
    assert not got.requeued
    (_, requeue) = doctor.probe_findings(got)
    assert requeue == Finding("srun.requeue", "CRIT", "no second attempt (job ended FAILED)")


def test_a_rank_that_never_saw_the_stop_is_critical() -> None:
    half = Probe("torchrun", 2, 2, (0.4,), 0.1, True, "COMPLETED")
    stop, _ = doctor.probe_findings(half)
    assert (stop.status, stop.detail) == ("CRIT", "1 of 2 ranks saw the stop, the last 0.40 s "
                                                   "after USR2")


def test_a_healthy_site_is_ok_everywhere() -> None:
    findings = doctor.evaluate([GOOD], SITE, lead_s=120, time_limit_s=3600)
    assert {f.status for f in findings} == {"OK"} and doctor.worst(findings) == 0
    assert [f.check for f in findings] == ["srun.stop", "srun.requeue", "lead.early",
                                           "lead.save", "preempt.grace", "limit.kill"]


@pytest.mark.parametrize(("lead", "limit", "save", "check", "status"), [
    (120, 150, 0.2, "lead.early", "WARN"),    # early delivery can land before the job runs
    (4, 3600, 1.5, "lead.save", "WARN"),      # stop + save (2.4 s) beyond half the lead
    (4, 3600, 5.0, "lead.save", "CRIT"),      # beyond the whole lead
    (120, 3600, 30.0, "preempt.grace", "CRIT"),  # GraceTime + KillWait = 25 s
])
def test_leads_and_saves_that_do_not_fit(lead: int, limit: int, save: float, check: str,
                                         status: str) -> None:
    slow = Probe("srun", 2, 2, (0.5, 0.9), save, True, "COMPLETED")
    found = {f.check: f for f in doctor.evaluate([slow], SITE, lead, limit)}
    assert found[check].status == status
    assert doctor.worst(list(found.values())) == doctor.STATUS.index(status)


def test_the_probe_finds_its_rank_under_every_launcher() -> None:
    assert probe.rank({"RANK": "3", "SLURM_PROCID": "0"}) == 3            # torchrun
    assert probe.rank({"OMPI_COMM_WORLD_RANK": "1", "SLURM_PROCID": "0"}) == 1  # mpirun
    assert probe.rank({"SLURM_PROCID": "2"}) == 2                         # srun
    assert probe.rank({}) == 0


def test_the_probe_job_is_a_valid_job_file(tmp_path: Path) -> None:
    from aiinfra.launcher.spec import load_job

    path = tmp_path / "doctor.toml"
    path.write_text(doctor.job_text("mpirun", tmp_path, 16, 120))
    loaded = load_job(path, [])
    assert loaded.job.launcher == "mpirun" and loaded.job.checkpoint.signal_lead_s == 120
