"""``aiinfra logs``: a job's files, found through Slurm, printed or followed.

The batch log (the supervisor's lines) is the script's ``--output`` file; each attempt's
program output is ``NAME-JOBID.attemptN.log`` beside it (N = SLURM_RESTART_COUNT).
Following reads what each file gained since the last look, moves on to a new attempt's
file when one appears, and stops once Slurm says the job has ended and the files are read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import slurm
from .errors import JobNotFound, SlurmError

RUNNING = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                     "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING", "SIGNALING",
                     "STAGE_OUT"})


@dataclass(frozen=True)
class JobFiles:
    job_id: str
    batch: Path

    def attempt(self, number: int) -> Path:
        return self.batch.with_name(f"{self.batch.stem}.attempt{number}.log")

    def attempts(self) -> list[Path]:
        """The attempts' logs that exist, in attempt order."""
        found = self.batch.parent.glob(f"{self.batch.stem}.attempt*.log")
        return sorted(found, key=attempt_number)


def attempt_number(path: Path) -> int:
    match = re.search(r"\.attempt(\d+)\.log$", path.name)
    return int(match[1]) if match else -1


def files_of(job_id: str) -> JobFiles:
    log = slurm.job_log(job_id)
    if log is None:
        raise JobNotFound(job_id)
    return JobFiles(job_id, log)


def chosen(files: JobFiles, attempt: int | None, batch: bool) -> list[Path]:
    if batch:
        return [files.batch]
    return [files.attempt(attempt)] if attempt is not None else files.attempts()


def ended(job_id: str) -> bool:
    try:
        return slurm.job_state(job_id).state.split(" ")[0] not in RUNNING
    except SlurmError:
        return True


@dataclass
class Tail:
    """What has been read of one file so far."""

    path: Path
    offset: int = 0
    partial: str = ""

    def read_lines(self) -> list[str]:
        """Whole lines added since the last call (a last line without its newline waits)."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", errors="replace")
        *lines, self.partial = text.split("\n")
        return lines

    def rest(self) -> list[str]:
        lines = self.read_lines()
        last, self.partial = self.partial, ""
        return lines + ([last] if last else [])


def follow(files: JobFiles, batch: bool, is_over: Callable[[], bool],
           interval_s: float = 1.0) -> Iterator[str]:
    """Lines as they are written: the batch log, or each attempt's log in turn."""
    tail = Tail(files.batch if batch else files.attempt(0))
    while True:
        over = is_over()  # asked before reading, so nothing written before the end is lost
        yield from tail.read_lines()
        newer = [] if batch else [p for p in files.attempts()
                                  if attempt_number(p) > attempt_number(tail.path)]
        if newer:
            yield from tail.rest()
            tail = Tail(newer[0])
        elif over:
            yield from tail.rest()
            return
        else:
            time.sleep(interval_s)
