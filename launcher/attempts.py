"""A job's attempts as ``aiinfra status`` shows them: its ledger, reconciled with sacct.

The lines are plain functions of ledger entries; :func:`job_attempts` is the wiring (find the
log through Slurm, read the ledger beside it, fill in attempts that wrote no line).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import ledger, slurm
from .errors import SlurmError
from .ledger import Entry
from .requeue import Outcome


def ledger_beside(log: Path, job_id: str) -> Path:
    """``DIR/SLUG-JOBID.log`` -> ``DIR/SLUG-JOBID.ledger.jsonl``."""
    slug = log.name.removesuffix(f"-{job_id}.log")
    return ledger.ledger_path(log.parent, slug, job_id)


def job_attempts(job_id: str) -> tuple[Entry, ...]:
    """Every attempt of ``job_id`` with a ledger line or an ended run in sacct."""
    log = slurm.job_log(job_id)
    entries = ledger.read(ledger_beside(log, job_id)).entries if log is not None else ()
    try:
        runs = slurm.job_history(job_id)
    except SlurmError:
        return entries
    return ledger.reconcile(entries, runs)


def attempt_line(entry: Entry) -> str:
    """``attempt 1  node[1-2]  crash (exit code 3)  step 10 -> 20  00:01:02  -> REQUEUED: ...``"""
    outcome = Outcome(entry.outcome, entry.exit_code, entry.signal,  # type: ignore[arg-type]
                      entry.bad_nodes, entry.detail)
    return (f"attempt {entry.attempt}  {','.join(entry.nodes) or '-'}  {outcome.describe()}"
            f"  step {_step(entry.step_before)} -> {_step(entry.step_after)}"
            f"  {duration(entry.start, entry.end)}  -> {entry.state}: {entry.reason}")


def final(entries: Sequence[Entry]) -> Entry | None:
    """The attempt that ended the job, once one has."""
    last = entries[-1] if entries else None
    return last if last is not None and last.action == "final" else None


def status_lines(entries: Sequence[Entry]) -> list[str]:
    lines = [f"  {attempt_line(e)}" for e in entries]
    end = final(entries)
    return lines + ([f"  final: {end.state}: {end.reason}"] if end is not None else [])


def as_json(entries: Sequence[Entry]) -> dict[str, Any]:
    end = final(entries)
    return {"attempts": [asdict(e) for e in entries],
            "final": None if end is None else {"state": end.state, "reason": end.reason}}


def duration(start: str | None, end: str | None) -> str:
    """``HH:MM:SS`` between two ISO times (with or without an offset: both local), or ``-``."""
    if start is None or end is None:
        return "-"
    seconds = int((_naive(end) - _naive(start)).total_seconds())
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _naive(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=None)


def _step(step: int | None) -> str:
    return "none" if step is None else str(step)
