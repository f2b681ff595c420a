"""The only module that runs Slurm commands: argv lists, parsable output, typed errors."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiinfra.launcher.errors import SlurmError

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


def sbatch(script: Path, timeout_s: float = DEFAULT_TIMEOUT_S,
           options: Sequence[str] = ()) -> str:
    """Submit ``script`` and return the job id (``--parsable``: ``id`` or ``id;cluster``)."""
    argv = ["sbatch", "--parsable", *options, str(script)]
    out = run(argv, timeout_s).strip()
    job_id = out.split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(argv, 0, f"unexpected --parsable output {out!r}")
    return job_id


def scancel(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    run(["scancel", job_id], timeout_s)


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


# ---------------------------------------------------------------- node states (the sweep)

def node_states(partition: str | None = None, nodes: str | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> list[tuple[str, str, str]]:
    """``(node, state, reason)`` for each node once, from ``sinfo --Node`` (state as
    ``%T``: idle, mixed, drained, down*...; reason ``""`` when none). The reason is the last
    field, so a reason holding the delimiter arrives whole."""
    argv = ["sinfo", "--noheader", "--Node", "--format=%N|%T|%E"]
    argv += [f"--partition={partition}"] if partition else []
    argv += [f"--nodes={nodes}"] if nodes else []
    seen: dict[str, tuple[str, str, str]] = {}
    for line in run(argv, timeout_s).splitlines():
        if line.strip():
            name, state, reason = line.split("|", 2)
            seen.setdefault(name, (name, state, "" if reason == "none" else reason))
    return list(seen.values())


def drain(node: str, reason: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"], timeout_s)


def resume(node: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], timeout_s)


def create_maint_reservation(name: str, nodes: Sequence[str], minutes: int, user: str,
                             timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """A maintenance reservation no other job can use, even over running jobs."""
    run(["scontrol", "create", "reservation", f"ReservationName={name}",
         f"Nodes={','.join(nodes)}", "StartTime=now", f"Duration={minutes}", f"Users={user}",
         "Flags=maint,ignore_jobs"], timeout_s)


def delete_reservation(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    run(["scontrol", "delete", f"ReservationName={name}"], timeout_s)


def reservations(timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """Names of the reservations slurmctld holds."""
    out = run(["scontrol", "--oneliner", "show", "reservation"], timeout_s)
    return [word.split("=", 1)[1] for line in out.splitlines() for word in line.split()[:1]
            if word.startswith("ReservationName=")]


def jobs_named(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, str]:
    """Job id -> state of the jobs slurmctld still knows under ``name``."""
    out = run(["squeue", "--noheader", f"--name={name}", "--format=%i|%T"], timeout_s)
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


def sacct_records(start: str, fields: Sequence[str],
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Every user's job allocations since ``start``, one record per attempt
    (``--duplicates``: a requeued job shows each run), ``-P`` text without header."""
    return run(["sacct", "--parsable2", "--noheader", "--allusers", "--allocations",
                "--duplicates", f"--starttime={start}", f"--format={','.join(fields)}"],
               timeout_s)
