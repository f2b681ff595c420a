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


def sbatch(script: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Submit ``script`` and return the job id (``--parsable``: ``id`` or ``id;cluster``)."""
    argv = ["sbatch", "--parsable", str(script)]
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

    def launched_step(self) -> AcctRow | None:
        """The numbered step started last (the job's own command; a gate step runs before)."""
        numbered = [s for s in self.steps if s.step.isdigit()]
        return max(numbered, key=lambda s: int(s.step), default=None)


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
    job_id, name, state, exit_code, nodes, start, end = line.split("|")
    code, _, signal = exit_code.partition(":")
    base, _, step = job_id.partition(".")
    return AcctRow(base, step, name, state.split(" ", 1)[0], _int(code),
                   _int(signal), nodes, _when(start), _when(end))


def _int(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def _when(text: str) -> str | None:
    return None if text in ("", "Unknown", "None") else text


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


def partition_nodes(partition: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str, ...]:
    """Every node of ``partition``, sorted: the gate's "too few nodes left" guard counts them."""
    out = run(["sinfo", "--noheader", "--Node", "--partition", partition, "--format=%N"],
              timeout_s)
    return tuple(sorted({line.strip() for line in out.splitlines() if line.strip()}))
