"""Typed errors of the library. Only the CLI turns them into messages and exit codes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AiinfraError(Exception):
    """Base class of every error aiinfra raises on purpose."""


class SpecError(AiinfraError):
    """Bad input in a job file, a profile or a command-line override.

    ``source`` names where the value came from (a file path or ``--set``),
    ``field`` the dotted key, ``choices`` the valid alternatives when there is a list.
    """

    def __init__(self, source: str, field: str, message: str, choices: Iterable[str] = ()) -> None:
        self.source = source
        self.field = field
        self.message = message
        self.choices = tuple(choices)
        super().__init__(str(self))

    def __str__(self) -> str:
        field = _CONTROL.sub(lambda m: repr(m.group())[1:-1], self.field)  # one line
        where = f"{self.source}: {field}" if field else self.source
        text = f"{where}: {self.message}"
        if self.choices:
            text += f" (valid: {', '.join(self.choices)})"
        return text


class SlurmError(AiinfraError):
    """A Slurm command failed, timed out or was not found."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(str(self))

    def __str__(self) -> str:
        status = "timed out" if self.returncode is None else f"exited {self.returncode}"
        detail = self.stderr.strip() or "(no output on stderr)"
        return f"{' '.join(self.argv)} {status}: {detail}"


class JobNotFound(AiinfraError):
    """The job id is not a job Slurm knows, or the job has already ended."""

    def __init__(self, job_id: str, ended_state: str | None = None) -> None:
        self.job_id = job_id
        self.ended_state = ended_state
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.ended_state:
            return f"job {self.job_id} has already ended ({self.ended_state}): nothing to cancel"
        return f"job {self.job_id} is unknown to Slurm (neither squeue nor sacct knows it)"
