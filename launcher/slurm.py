"""The only module that runs Slurm commands: argv lists, parsable output, typed errors."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import JobNotFound, SlurmError

DEFAULT_TIMEOUT_S = 60.0


def run(argv: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Run a Slurm command and return its stdout; any failure raises SlurmError."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise SlurmError(argv, 127, f"{argv[0]} not found: is Slurm installed and on PATH?") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(argv, None, f"no answer within {timeout_s:g} s") from exc
    if proc.returncode != 0:
        raise SlurmError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def sbatch(script: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Submit ``script`` and return the job id (``--parsable``: ``id`` or ``id;cluster``)."""
    argv = ["sbatch", "--parsable", str(script)]
    out = run(argv, timeout_s).strip()
    job_id = out.split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(argv, 0, f"unexpected --parsable output {out!r}")
    return job_id


def cancel(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """scancel a job that has not ended. scancel itself says nothing and exits 0 for an
    unknown id (Slurm 22.05), so the job is looked up first."""
    states = _queue_states(job_id, timeout_s)
    if not any(s not in _ENDED for s in states):
        ended = states[0] if states else next(iter(sacct(job_id, timeout_s)), {}).get("State")
        raise JobNotFound(job_id, ended)
    run(["scancel", job_id], timeout_s)


def _queue_states(job_id: str, timeout_s: float) -> list[str]:
    """The job's states as slurmctld lists them (with --jobs, ended ones too); [] when it
    has forgotten the job or never knew it."""
    try:
        return run(["squeue", "--noheader", "--jobs", job_id, "--format=%T"], timeout_s).split()
    except SlurmError as exc:
        if "Invalid job id" in exc.stderr:
            return []
        raise


_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
          "PREEMPTED", "BOOT_FAIL", "DEADLINE")


@dataclass(frozen=True)
class JobState:
    job_id: str
    name: str
    state: str
    exit_code: str
    nodes: str
    elapsed: str
    restarts: int | None


_SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "NodeList", "Elapsed")
_SQUEUE_FORMAT = "%i|%j|%T|%N|%M|%R"


def job_state(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> JobState:
    """The job's state: squeue while it is known to slurmctld, else sacct."""
    try:
        live = run(["squeue", "--noheader", "--jobs", job_id, f"--format={_SQUEUE_FORMAT}"],
                   timeout_s)
    except SlurmError:
        live = ""  # slurmctld has forgotten a finished job ("Invalid job id"); sacct has not
    if live.strip():
        jid, name, state, nodes, elapsed, _reason = live.strip().splitlines()[0].split("|", 5)
        return JobState(jid, name, state, "", nodes, elapsed, _restarts(job_id, timeout_s))
    rows = sacct(job_id, timeout_s)
    if not rows:
        raise SlurmError(["sacct", "-j", job_id], 0, f"job {job_id} is unknown to squeue and sacct")
    row = rows[0]
    return JobState(row["JobID"], row["JobName"], row["State"], row["ExitCode"],
                    row["NodeList"], row["Elapsed"], None)


def sacct(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict[str, str]]:
    """The job's allocation row (steps left out) as ``field -> value``."""
    out = run(["sacct", "--parsable2", "--noheader", "--allocations", "--jobs", job_id,
               f"--format={','.join(_SACCT_FIELDS)}"], timeout_s)
    return [dict(zip(_SACCT_FIELDS, line.split("|"), strict=True))
            for line in out.splitlines() if line.strip()]


def _restarts(job_id: str, timeout_s: float) -> int | None:
    out = run(["scontrol", "--oneliner", "show", "job", job_id], timeout_s)
    for word in out.split():
        if word.startswith("Restarts="):
            return int(word.split("=", 1)[1])
    return None


# --- inside the allocation: the supervisor's view of its own job -------------------------

def show_job(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, str]:
    """``scontrol --oneliner show job`` as ``Key -> value`` (values without spaces)."""
    out = run(["scontrol", "--oneliner", "show", "job", job_id], timeout_s)
    pairs = (word.split("=", 1) for word in out.split() if "=" in word)
    return {key: value for key, value in pairs}


def hostnames(nodelist: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str, ...]:
    """A Slurm node list expanded by Slurm itself (``scontrol show hostnames``)."""
    if not nodelist:
        return ()
    return tuple(run(["scontrol", "show", "hostnames", nodelist], timeout_s).split())


def partition_nodes(partition: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str, ...]:
    out = run(["sinfo", "--noheader", "--Node", f"--partition={partition}", "--format=%N"],
              timeout_s)
    return tuple(sorted(set(out.split())))


def unresponsive(nodes: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str, ...]:
    """Those of ``nodes`` that Slurm sees down or not responding (state ends with ``*``)."""
    out = run(["sinfo", "--noheader", "--Node", f"--nodes={','.join(nodes)}",
               "--format=%N|%t"], timeout_s)
    rows = (line.split("|", 1) for line in out.splitlines() if "|" in line)
    return tuple(sorted({name for name, state in rows
                         if state.endswith("*") or state.startswith(("down", "fail"))}))


def requeue(job_id: str, exclude: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Requeue the job, then set its ExcNodeList. Slurm refuses that update while the job
    runs and takes it right after the requeue, while the job is still COMPLETING (measured
    on 22.05); if it never lands the job returns on the same nodes and the gate sees them."""
    run(["scontrol", "requeue", job_id], timeout_s)
    if not exclude:
        return
    argv = ["scontrol", "update", f"JobId={job_id}", f"ExcNodeList={','.join(exclude)}"]
    for _ in range(4):
        try:
            run(argv, timeout_s)
            return
        except SlurmError:
            time.sleep(0.5)
