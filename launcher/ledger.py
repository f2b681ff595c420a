"""The restart ledger: one JSON line per attempt, beside the job's logs.

``LOG_DIR/SLUG-JOBID.ledger.jsonl``. Each line is written by one ``write(2)`` on a file
opened ``O_APPEND``, then fsynced, so a line is whole or torn at its end, never mixed with
another; a torn last line (the writer died mid-write) is skipped when reading. An attempt
that died without its line (its batch host failed) is filled in from accounting by
:func:`reconcile`.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import AiinfraError
from .files import fsync_dir
from .requeue import OUTCOMES, Attempt, Decision, Evidence, classify
from .slurm import Run

VERSION = 1


class LedgerError(AiinfraError):
    """A ledger line that is not a ledger entry."""


@dataclass(frozen=True)
class Entry:
    """One attempt: where it ran, how it ended, the checkpoint steps, what came next."""

    job_id: str
    attempt: int
    nodes: tuple[str, ...]
    outcome: str
    exit_code: int
    signal: int
    bad_nodes: tuple[str, ...]
    detail: str
    step_before: int | None
    step_after: int | None
    start: str | None
    end: str | None
    action: str
    state: str
    reason: str
    exclude: tuple[str, ...] = ()
    source: str = "supervisor"  # or "sacct": reconciled, the attempt wrote no line


@dataclass(frozen=True)
class Ledger:
    entries: tuple[Entry, ...]
    skipped: int  # lines that could not be read (a torn last line after a crash)


def ledger_path(log_dir: Path | str, slug: str, job_id: str) -> Path:
    return Path(log_dir) / f"{slug}-{job_id}.ledger.jsonl"


def now_iso() -> str:
    """The local time with its offset, to the second: how the ledger writes times."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def make_entry(job_id: str, attempt_no: int, nodes: Sequence[str], attempt: Attempt,
               decision: Decision, start: str | None, end: str | None) -> Entry:
    out = attempt.outcome
    return Entry(job_id, attempt_no, tuple(nodes), out.kind, out.exit_code, out.signal,
                 out.bad_nodes, out.detail, attempt.step_before, attempt.step_after, start,
                 end, decision.action, decision.state, decision.reason, decision.exclude)


# --- the file ------------------------------------------------------------------------------

def encode(entry: Entry) -> bytes:
    return (json.dumps({"v": VERSION, **asdict(entry)}, sort_keys=True) + "\n").encode()


def decode(line: str) -> Entry:
    """One line back into an Entry; LedgerError when it is not one."""
    try:
        data = json.loads(line)
        return _entry(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise LedgerError(f"not a ledger line ({exc}): {line[:80]!r}") from exc


def _entry(data: object) -> Entry:
    if not isinstance(data, dict):
        raise ValueError("not an object")
    if data.get("v") != VERSION or data.get("outcome") not in OUTCOMES:
        raise ValueError(f"version {data.get('v')!r}, outcome {data.get('outcome')!r}")
    if not all(isinstance(data.get(k), int) for k in ("attempt", "exit_code", "signal")):
        raise ValueError("attempt, exit_code and signal must be integers")
    fields: dict[str, Any] = {k: v for k, v in data.items() if k != "v"}
    for name in ("nodes", "bad_nodes", "exclude"):
        fields[name] = tuple(str(n) for n in fields.get(name, ()))
    return Entry(**fields)


def append(path: Path, entry: Entry) -> None:
    """Add one line with a single ``write`` on an ``O_APPEND`` file, then fsync it.

    A file whose last line was torn gets a newline first, so the new line stays whole.
    """
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = (b"" if created or _ends_with_newline(path) else b"\n") + encode(entry)
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return True
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def read(path: Path) -> Ledger:
    """Every readable entry in file order; a missing file is an empty ledger."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return Ledger((), 0)
    return parse(text)


def parse(text: str) -> Ledger:
    entries: list[Entry] = []
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entries.append(decode(line))
        except LedgerError:
            skipped += 1
    return Ledger(tuple(entries), skipped)


# --- reconcile with accounting -------------------------------------------------------------

def reconcile(entries: Sequence[Entry], accounting: Sequence[Run]) -> tuple[Entry, ...]:
    """``entries`` plus one per ended run that has none, ordered by attempt.

    Run ``i`` of ``sacct --duplicates`` (oldest first) is attempt ``i``
    (``SLURM_RESTART_COUNT``). A filled-in attempt takes its step before from the
    attempt before it and its step after from the attempt after it, when they have lines.
    """
    by_attempt = {e.attempt: e for e in entries}
    last = len(accounting) - 1
    for number, run in enumerate(accounting):
        if run.ended and number not in by_attempt:
            by_attempt[number] = _from_accounting(number, run, number < last)
    return _fill_steps(tuple(by_attempt[n] for n in sorted(by_attempt)))


def _from_accounting(number: int, run: Run, followed: bool) -> Entry:
    state = run.alloc.state
    outcome = classify(Evidence(step=run.launched_step(), job_state=state,
                                requeued=state == "REQUEUED", time_limit=state == "TIMEOUT"))
    if followed:
        action, final, why = "requeue", "REQUEUED", "Slurm started another run"
    else:
        action, final, why = "final", state, f"Slurm's final state {state}"
    reason = f"reconciled from sacct: the attempt wrote no ledger line; {why}"
    return Entry(run.alloc.job_id, number, _hostnames(run.alloc.nodes), outcome.kind,
                 outcome.exit_code, outcome.signal, outcome.bad_nodes, outcome.detail, None,
                 None, run.alloc.start, run.alloc.end, action, final, reason, (), "sacct")


def _fill_steps(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
    by_attempt = {e.attempt: e for e in entries}
    filled = []
    for entry in entries:
        if entry.source == "sacct":
            before, after = by_attempt.get(entry.attempt - 1), by_attempt.get(entry.attempt + 1)
            entry = replace(entry, step_before=before.step_after if before else None,
                            step_after=after.step_before if after else None)
        filled.append(entry)
    return tuple(filled)


def _hostnames(nodelist: str) -> tuple[str, ...]:
    import hostlist  # type: ignore[import-untyped]  # python-hostlist: Slurm node lists

    if nodelist in ("", "None assigned"):
        return ()
    return tuple(hostlist.expand_hostlist(nodelist))
