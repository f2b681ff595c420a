"""Value checks shared by job files and profiles: each returns a problem or None."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .sbatchopts import sbatch_key_problem

SbatchValue = str | int | bool

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEMORY = re.compile(r"^[1-9][0-9]*[KMGT]?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def positive(value: int) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


def not_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def port(value: int) -> str | None:
    return None if 1024 <= value <= 65535 else f"must be a port in 1024..65535, got {value}"


def memory(value: str) -> str | None:
    return None if _MEMORY.match(value) else f"{value!r} is not a Slurm memory size (e.g. 16G, 512M)"


def job_name(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return "must not contain control characters (newlines, tabs)" if _CONTROL.search(value) else None


def sbatch_text(value: str) -> str | None:
    """A value of an ``#SBATCH`` line: one line, so no control characters."""
    return "must not contain control characters (newlines, tabs)" if _CONTROL.search(value) else None


def partition_names(value: Mapping[str, object]) -> str | None:
    bad = [k for k in value if sbatch_text(k) or not k.strip()]
    return f"invalid partition name(s): {', '.join(map(repr, bad))}" if bad else None


def path(value: str) -> str | None:
    """A directory aiinfra writes into and names in #SBATCH lines and Slurm file patterns."""
    if _CONTROL.search(value):
        return "must not contain control characters (newlines, tabs)"
    if "\\" in value:
        return ("must not contain a backslash: it turns off Slurm's file name patterns "
                "(%j), and the job would fail without a log")
    return None


def nonempty_argv(value: tuple[str, ...]) -> str | None:
    return None if value and value[0] else "must be a non-empty list of strings, e.g. [\"python\", \"train.py\"]"


def env_names(value: Mapping[str, str]) -> str | None:
    bad = [k for k in value if not _ENV_NAME.match(k)]
    return f"invalid environment variable name(s): {', '.join(map(repr, bad))}" if bad else None


def binds(value: tuple[str, ...]) -> str | None:
    """HOST[:CONTAINER[:OPTS]] each; pyxis and apptainer split a bind list at commas."""
    for bind in value:
        if "," in bind:
            return (f"{bind!r} contains a comma, which the container runtime reads as two "
                    "binds; a comma cannot be expressed in one bind")
        if not bind or bind.startswith(":"):
            return f"{bind!r} is not HOST[:CONTAINER[:OPTS]]"
    return None


def sbatch_table(value: Mapping[str, SbatchValue]) -> str | None:
    """Extra ``#SBATCH`` options: real sbatch long options, one-line values."""
    lines = [k for k, v in value.items() if isinstance(v, str) and sbatch_text(v)]
    if lines:
        return f"the value of {lines[0]!r} must not contain control characters (newlines, tabs)"
    owned = sorted(set(value) & set(OWNED_SBATCH_OPTIONS))
    if owned:
        hints = ", ".join(f"{k} (use {OWNED_SBATCH_OPTIONS[k]})" for k in owned)
        return f"aiinfra sets these itself: {hints}"
    problems = (sbatch_key_problem(key) for key in value)
    return next((p for p in problems if p), None)


# sbatch options rendered from typed fields; extra `sbatch` tables may not set them.
OWNED_SBATCH_OPTIONS: Mapping[str, str] = {
    "job-name": "name", "nodes": "nodes", "ntasks-per-node": "tasks_per_node",
    "gpus-per-node": "gpus_per_node", "gres": "gpus_per_node", "cpus-per-task": "cpus_per_task",
    "mem": "mem", "mem-per-cpu": "mem_per_cpu", "time": "time", "partition": "partition",
    "account": "account", "qos": "qos", "constraint": "constraint", "output": "log_dir",
    "error": "log_dir", "open-mode": "(always append)", "chdir": "workdir",
}
