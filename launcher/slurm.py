"""The only module that runs Slurm commands: argv lists, parsable output, typed errors."""

from __future__ import annotations

import re
import shlex
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


def sbatch(script: Path, timeout_s: float = DEFAULT_TIMEOUT_S,
           options: Sequence[str] = ()) -> str:
    """Submit ``script`` and return the job id (``--parsable``: ``id`` or ``id;cluster``)."""
    argv = ["sbatch", "--parsable", *options, str(script)]
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
        jid, name, state, nodes, elapsed, _reason = split_fields(live.strip().splitlines()[0], 6)
        return JobState(jid, name, state, "", nodes, elapsed, job_info(job_id, timeout_s).restarts)
    rows = sacct(job_id, timeout_s)
    if not rows:
        raise SlurmError(["sacct", "-j", job_id], 0, f"job {job_id} is unknown to squeue and sacct")
    row = rows[0]
    return JobState(row["JobID"], row["JobName"], row["State"], row["ExitCode"],
                    row["NodeList"], row["Elapsed"], None)


def split_fields(line: str, count: int, name_at: int = 1) -> list[str]:
    """The ``count`` fields of a ``|``-separated line whose field ``name_at`` (a job name,
    which a user may write with ``|`` in it) takes the delimiters beyond the expected."""
    parts = line.split("|")
    end = name_at + len(parts) - count + 1
    return [*parts[:name_at], "|".join(parts[name_at:end]), *parts[end:]]


def sacct(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict[str, str]]:
    """The job's allocation row (steps left out) as ``field -> value``."""
    out = run(["sacct", "--parsable2", "--noheader", "--allocations", "--jobs", job_id,
               f"--format={','.join(_SACCT_FIELDS)}"], timeout_s)
    return [dict(zip(_SACCT_FIELDS, split_fields(line, len(_SACCT_FIELDS)), strict=True))
            for line in out.splitlines() if line.strip()]


# --- inside the allocation: the supervisor's view of its own job -------------------------

def hostnames(nodelist: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str, ...]:
    """A Slurm node list expanded by Slurm itself (``scontrol show hostnames``)."""
    if not nodelist:
        return ()
    return tuple(run(["scontrol", "show", "hostnames", nodelist], timeout_s).split())


def partition_nodes(partition: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str, ...]:
    out = run(["sinfo", "--noheader", "--Node", f"--partition={partition}", "--format=%N"],
              timeout_s)
    return tuple(sorted(set(out.split())))


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

# --- accounting history of a job id, requeues included (sacct --duplicates) -------------

_HISTORY_FIELDS = ("JobID", "JobName", "State", "ExitCode", "NodeList", "Start", "End")


@dataclass(frozen=True)
class AcctRow:
    """One ``sacct`` line: the allocation (``step == ""``) or one of its steps.

    ``job_id`` is the job's id without the step (``4`` for ``4.batch``).

    ``state`` is the first word (``CANCELLED by 0`` -> ``CANCELLED``); ``exit_code`` and
    ``signal`` split Slurm's ``CODE:SIGNAL``; times are ISO text, None when Slurm has none.
    """

    job_id: str
    step: str
    name: str
    state: str
    exit_code: int
    signal: int
    nodes: str
    start: str | None
    end: str | None


@dataclass(frozen=True)
class Run:
    """One run of a job id: the first, then one per requeue, oldest first."""

    alloc: AcctRow
    steps: tuple[AcctRow, ...]

    @property
    def started(self) -> bool:
        return self.alloc.start is not None

    @property
    def ended(self) -> bool:
        return self.started and self.alloc.end is not None

    def launched_step(self, first: int | None = None) -> AcctRow | None:
        """The job's own command: the numbered step started last or, when the caller knows
        how many steps ran before it (a preflight gate's), the first step from ``first`` on.
        That one is None until slurmdbd has recorded it, never the gate's step."""
        numbered = [s for s in self.steps if s.step.isdigit()]
        if first is None:
            return max(numbered, key=lambda s: int(s.step), default=None)
        return min((s for s in numbered if int(s.step) >= first),
                   key=lambda s: int(s.step), default=None)


def job_history(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Run, ...]:
    """Every run of ``job_id`` with its steps: ``sacct --duplicates`` keeps requeued runs."""
    out = run(["sacct", "--parsable2", "--noheader", "--duplicates", "--jobs", job_id,
               f"--format={','.join(_HISTORY_FIELDS)}"], timeout_s)
    return parse_history(out)


def parse_history(text: str) -> tuple[Run, ...]:
    """Group ``--parsable2`` lines into runs: sacct prints each run's steps after it."""
    runs: list[Run] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        row = _acct_row(line)
        if not row.step:
            runs.append(Run(row, ()))
        elif runs:
            runs[-1] = Run(runs[-1].alloc, (*runs[-1].steps, row))
    return tuple(runs)


def _acct_row(line: str) -> AcctRow:
    job_id, name, state, exit_code, nodes, start, end = split_fields(line, 7)
    code, _, signal = exit_code.partition(":")
    base, _, step = job_id.partition(".")
    return AcctRow(base, step, name, state.split(" ", 1)[0], _int(code),
                   _int(signal), nodes, _when(start), _when(end))


def _int(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def _when(text: str) -> str | None:
    return None if text in ("", "Unknown", "None") else text


# --- where a job's files are -----------------------------------------------------------------

def job_log(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Path | None:
    """The job's batch log: scontrol's StdOut while slurmctld knows the job, then the
    ``--output`` line of the script sacct's SubmitLine names (relative to WorkDir)."""
    try:
        known = run(["scontrol", "--oneliner", "show", "job", job_id], timeout_s)
    except SlurmError:
        known = ""
    fields = dict(w.split("=", 1) for w in known.split() if "=" in w)
    if fields.get("StdOut"):
        return Path(fields["StdOut"])
    out = run(["sacct", "--parsable2", "--noheader", "-X", "--jobs", job_id,
               "--format=WorkDir,SubmitLine"], timeout_s)
    return log_from_submit_line(out.splitlines()[0] if out.strip() else "", job_id)


def log_from_submit_line(line: str, job_id: str) -> Path | None:
    """``WORKDIR|sbatch ... SCRIPT`` -> the script's ``#SBATCH --output=`` with ``%j``."""
    workdir, _, submit = line.partition("|")
    words = submit.split()
    if not words or not words[-1].endswith(".sbatch"):
        return None
    script = Path(workdir) / words[-1]
    try:
        text = script.read_text()
    except OSError:
        return None
    match = re.search(r"^#SBATCH --output=(.+)$", text, re.M)
    return None if match is None else Path(shlex.split(match[1])[0].replace("%j", job_id))


# --- live facts about a job and its nodes (scontrol, sinfo) -------------------------------

@dataclass(frozen=True)
class JobInfo:
    """What ``scontrol show job`` says now; ``preempt_time`` is None unless preempted."""

    job_id: str
    state: str
    restarts: int
    preempt_time: str | None
    nodes: str
    excluded: str
    partition: str
    end_time: str | None  # when the time limit falls (start + limit), local ISO time


def job_info(job_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> JobInfo:
    return parse_job_info(run(["scontrol", "--oneliner", "show", "job", job_id], timeout_s))


def parse_job_info(text: str) -> JobInfo:
    """The fields of ``scontrol --oneliner show job`` that requeue decisions need."""
    fields = dict(w.split("=", 1) for w in text.split() if "=" in w)
    return JobInfo(fields.get("JobId", ""), fields.get("JobState", ""),
                   _int(fields.get("Restarts", "0")), _when(fields.get("PreemptTime", "None")),
                   _nodes(fields.get("NodeList", "")), _nodes(fields.get("ExcNodeList", "")),
                   fields.get("Partition", ""), _when(fields.get("EndTime", "Unknown")))


def _nodes(text: str) -> str:
    return "" if text in ("(null)", "None assigned") else text


def unresponsive_nodes(nodelist: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str, ...]:
    """Nodes of ``nodelist`` that slurmctld sees down, failing or not responding."""
    out = run(["sinfo", "--noheader", "--Node", "--nodes", nodelist, "--format=%N|%T"],
              timeout_s)
    return parse_unresponsive(out)


_DEAD_STATES = ("down", "fail")


def parse_unresponsive(text: str) -> tuple[str, ...]:
    """``%N|%T`` lines: a ``*`` suffix means not responding; DOWN and FAIL are dead too."""
    dead: set[str] = set()
    for line in text.splitlines():
        node, _, state = line.strip().partition("|")
        flags = state.lower().rstrip("~#!%$@^-")
        if node and (flags.endswith("*") or flags.rstrip("*") in _DEAD_STATES):
            dead.add(node)
    return tuple(sorted(dead))


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
