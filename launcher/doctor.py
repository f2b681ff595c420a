"""``aiinfra doctor``: what a user checks once on a new cluster before trusting requeue.

One tiny 2-node probe job per launcher (``probe.py`` on every rank) is submitted through the
normal submit path. Once every rank is ready, the batch shell gets USR2 the way
``--signal=B:USR2@lead`` delivers it (``scancel --batch --signal=USR2``); the supervisor
passes the stop on, every rank reports when it saw it, rank 0 times a checkpoint save, the
supervisor requeues the job itself, and the next attempt proves the requeue. The findings
are plain functions of what was measured and of the site's settings (:func:`evaluate`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import ledger, slurm
from .errors import SlurmError
from .render import Rendered
from .submit import prepare, submit

LAUNCHERS = ("torchrun", "srun", "mpirun")
EARLY_S = 60          # Slurm may deliver --signal up to 60 s before the time given
STATUS = ("OK", "WARN", "CRIT")


@dataclass(frozen=True)
class Probe:
    """What one launcher's probe job showed."""

    launcher: str
    ranks: int
    ready: int                      # ranks that printed ready
    stop_s: tuple[float, ...]       # per rank that saw the stop: seconds after USR2
    save_s: float | None            # rank 0's checkpoint save
    requeued: bool                  # the supervisor requeued and the next attempt ran
    state: str                      # the job's final state


@dataclass(frozen=True)
class Site:
    """The site's settings that bound a checkpoint at the limit or at preemption."""

    kill_wait_s: int
    over_time_limit_min: int
    max_time: str
    grace_time_s: int
    preempt_mode: str


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # OK, WARN or CRIT
    detail: str


# --- the findings: pure -------------------------------------------------------------------

def evaluate(probes: Sequence[Probe], site: Site, lead_s: int, time_limit_s: int) -> list[Finding]:
    findings = [f for p in probes for f in probe_findings(p)]
    slowest = max((p.save_s for p in probes if p.save_s is not None), default=None)
    stop = max((max(p.stop_s) for p in probes if p.stop_s), default=None)
    return findings + lead_findings(lead_s, time_limit_s, slowest, stop, site)


def probe_findings(p: Probe) -> list[Finding]:
    reached = len(p.stop_s)
    signal = Finding(f"{p.launcher}.stop", "OK" if reached == p.ranks else "CRIT",
                     f"{reached} of {p.ranks} ranks saw the stop"
                     + (f", the last {max(p.stop_s):.2f} s after USR2" if p.stop_s else ""))
    requeue = Finding(f"{p.launcher}.requeue", "OK" if p.requeued else "CRIT",
                      "the job requeued itself and its next attempt ran" if p.requeued
                      else f"no second attempt (job ended {p.state})")
    return [signal, requeue]


def lead_findings(lead_s: int, time_limit_s: int, save_s: float | None, stop_s: float | None,
                  site: Site) -> list[Finding]:
    needed = (save_s or 0.0) + (stop_s or 0.0)
    early = Finding("lead.early", "OK" if lead_s + EARLY_S < time_limit_s else "WARN",
                    f"lead {lead_s} s + up to {EARLY_S} s early delivery vs a "
                    f"{time_limit_s} s limit")
    save = Finding("lead.save", "OK" if needed <= lead_s / 2 else
                   "WARN" if needed <= lead_s else "CRIT",
                   f"stop {stop_s or 0.0:.2f} s + save {save_s or 0.0:.2f} s of a "
                   f"{lead_s} s lead" + ("" if save_s is not None else " (no save measured)"))
    grace = site.grace_time_s + site.kill_wait_s
    preempt = Finding("preempt.grace", "OK" if needed <= grace else "CRIT",
                      f"stop + save {needed:.2f} s vs GraceTime {site.grace_time_s} s + "
                      f"KillWait {site.kill_wait_s} s (PreemptMode {site.preempt_mode})")
    limit = Finding("limit.kill", "OK", f"after the limit: OverTimeLimit "
                    f"{site.over_time_limit_min} min, then KillWait {site.kill_wait_s} s; "
                    f"partition MaxTime {site.max_time}")
    return [early, save, preempt, limit]


def worst(findings: Sequence[Finding]) -> int:
    """The Nagios exit code: 0 OK, 1 WARN, 2 CRIT."""
    return max((STATUS.index(f.status) for f in findings), default=0)


def table(findings: Sequence[Finding]) -> str:
    width = max((len(f.check) for f in findings), default=5)
    return "\n".join(f"{f.status:<4}  {f.check:<{width}}  {f.detail}" for f in findings)


# --- reading a probe's files: pure ------------------------------------------------------------

_STOP = re.compile(r"doctor rank=(\d+) stop t=([0-9.]+)")
_SAVE = re.compile(r"doctor rank=0 saved_mb=\d+ save_s=([0-9.]+)")
_READY = re.compile(r"doctor rank=(\d+) ready")


def ready_ranks(text: str) -> int:
    return len(set(_READY.findall(text)))


def read_probe(launcher: str, ranks: int, step_log: str, entries: Sequence[ledger.Entry],
               sent_at: float, state: str) -> Probe:
    stops = {int(r): float(t) - sent_at for r, t in _STOP.findall(step_log)}
    save = _SAVE.search(step_log)
    requeued = len(entries) >= 2 and entries[0].action == "requeue"
    return Probe(launcher, ranks, ready_ranks(step_log), tuple(sorted(stops.values())),
                 float(save[1]) if save else None, requeued, state)


# --- the wiring: submit, signal, wait -----------------------------------------------------------

def job_text(launcher: str, workdir: Path, checkpoint_mb: int, lead_s: int) -> str:
    command = [sys.executable, "-m", "aiinfra.launcher.probe", "--checkpoint-mb",
               str(checkpoint_mb)]
    return (f'name = "doctor-{launcher}"\nlauncher = "{launcher}"\n'
            f"command = {json.dumps(command)}\nnodes = 2\ntasks_per_node = 1\n"
            f'time = "10"\nlog_dir = {json.dumps(str(workdir / "logs"))}\n'
            f"[checkpoint]\ndir = {json.dumps(str(workdir / ('ck-' + launcher)))}\n"
            f"max_restarts = 1\nsignal_lead_s = {lead_s}\n")


def start(launcher: str, profile: str, workdir: Path, checkpoint_mb: int,
          lead_s: int) -> tuple[str, Rendered]:
    job_file = workdir / f"doctor-{launcher}.toml"
    job_file.write_text(job_text(launcher, workdir, checkpoint_mb, lead_s))
    rendered = prepare(job_file, profile, [], workdir)
    return submit(rendered), rendered


def step_log(rendered: Rendered, job_id: str, attempt: int = 0) -> Path:
    log = rendered.log_for(job_id)
    return log.with_name(f"{log.stem}.attempt{attempt}.log")


def wait_ready(rendered: Rendered, job_id: str, ranks: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    path = step_log(rendered, job_id)
    while time.monotonic() < deadline:
        if path.is_file() and ready_ranks(path.read_text()) == ranks:
            return True
        time.sleep(0.5)
    return False


def wait_ended(job_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = slurm.job_state(job_id).state.split(" ")[0]
        if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                         "SUSPENDED", "RESIZING"):
            return state
        time.sleep(1)
    slurm.cancel(job_id)
    return "TIMEOUT (doctor)"


def site(partition: str) -> Site:
    config = _pairs(slurm.run(["scontrol", "show", "config"]))
    part = dict(w.split("=", 1) for w in slurm.run(
        ["scontrol", "--oneliner", "show", "partition", partition]).split() if "=" in w)
    return Site(_leading_int(config.get("KillWait", "30")),
                _leading_int(config.get("OverTimeLimit", "0")), part.get("MaxTime", "?"),
                _leading_int(part.get("GraceTime", "0")), part.get("PreemptMode", "OFF"))


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text)
    return int(match[0]) if match else 0


@dataclass(frozen=True)
class Run:
    launcher: str
    job_id: str
    rendered: Rendered


def probe_all(profile: str, workdir: Path, launchers: Sequence[str], checkpoint_mb: int,
              lead_s: int, timeout_s: float = 240) -> list[Probe]:
    runs = [Run(name, *start(name, profile, workdir, checkpoint_mb, lead_s))
            for name in launchers]
    sent = {r.job_id: signal_when_ready(r, timeout_s) for r in runs}
    return [finish(r, sent[r.job_id], timeout_s) for r in runs]


def signal_when_ready(run: Run, timeout_s: float) -> float:
    if not wait_ready(run.rendered, run.job_id, 2, timeout_s):
        return time.time()  # the stop is sent anyway; the findings show who was missing
    sent = time.time()
    try:
        slurm.run(["scancel", "--batch", "--signal=USR2", run.job_id])
    except SlurmError:
        pass  # the job already ended; its findings say so
    return sent


def finish(run: Run, sent_at: float, timeout_s: float) -> Probe:
    state = wait_ended(run.job_id, timeout_s)
    path = step_log(run.rendered, run.job_id)
    text = path.read_text() if path.is_file() else ""
    entries = ledger.read(ledger.ledger_path(run.rendered.log_dir, run.rendered.slug,
                                             run.job_id)).entries
    return read_probe(run.launcher, 2, text, entries, sent_at, state)
