"""The Python API: ``aiinfra.submit(...)`` returns a :class:`Job` handle.

The same code paths as the CLI (``submit``, ``status``, ``logs``, ``cancel``): the same
checks, the same files, the same typed errors (``SpecError`` for bad input, ``SlurmError``
when Slurm refuses), raised instead of printed. Imports nothing heavy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import attempts, joblogs, slurm
from . import submit as submitting
from .ledger import Entry


@dataclass(frozen=True)
class Job:
    """A submitted job: its id, its script and its batch log."""

    job_id: str
    script: Path
    log: Path

    @property
    def state(self) -> str:
        """Slurm's state now (squeue, then sacct), e.g. ``PENDING`` or ``COMPLETED``."""
        return slurm.job_state(self.job_id).state.split(" ")[0]

    def done(self) -> bool:
        return joblogs.ended(self.job_id)

    def wait(self, timeout: float | None = None, poll_s: float = 2.0) -> str:
        """Block until the job has ended (requeues included); its final state.
        Raises TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} still {self.state} after {timeout} s")
            time.sleep(poll_s)
        return _settled_state(self.job_id)

    def logs(self, attempt: int | None = None) -> str:
        """The program's output: every attempt's log in turn, or one attempt's."""
        files = joblogs.JobFiles(self.job_id, self.log)
        paths = joblogs.chosen(files, attempt, batch=False)
        return "".join(p.read_text(errors="replace") for p in paths if p.is_file())

    def attempts(self) -> tuple[Entry, ...]:
        """One ledger entry per attempt so far (``aiinfra status``'s lines)."""
        return attempts.job_attempts(self.job_id)

    def cancel(self) -> None:
        slurm.cancel(self.job_id)


def submit(job_file: str | Path, profile: str, *, set: Mapping[str, Any] | None = None,
           nodes: int | None = None, time_limit: str | None = None,
           after: Sequence[str] = (), cwd: str | Path | None = None) -> Job:
    """Render ``job_file`` for ``profile`` and submit it, as ``aiinfra submit`` does.

    ``set``: dotted keys and typed values (``{"env.SEED": "3", "nodes": 2}``), applied after
    ``nodes`` and ``time_limit``; ``after``: job ids this one waits for (afterok)."""
    overrides = submitting.overrides(nodes=None if nodes is None else str(nodes),
                                     time_limit=time_limit, sets=(),
                                     after=[("afterok", str(j)) for j in after])
    overrides += [("set", key, value) for key, value in (set or {}).items()]
    rendered = submitting.prepare(Path(job_file), profile, overrides,
                                  Path(cwd) if cwd is not None else Path.cwd())
    submitting.check_dependencies([("afterok", str(j)) for j in after])
    job_id = submitting.submit(rendered)
    return Job(job_id, rendered.script_path, rendered.log_for(job_id))


def _settled_state(job_id: str, tries: int = 10) -> str:
    """The final state once sacct has it (slurmdbd lags the end of a job a little)."""
    state = slurm.job_state(job_id).state.split(" ")[0]
    for _ in range(tries):
        if state not in joblogs.RUNNING:
            return state
        time.sleep(1)
        state = slurm.job_state(job_id).state.split(" ")[0]
    return state
