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
    return "must not be empty" if not value.strip() else sbatch_text(value)


def sbatch_text(value: str) -> str | None:
    """A value of an ``#SBATCH`` line: one line, so no control characters."""
    return "must not contain control characters (newlines, tabs)" if _CONTROL.search(value) else None


def partition_name(key: str, _: object) -> str | None:
    return "invalid partition name: it goes into #SBATCH lines" if sbatch_text(key) or not key.strip() else None


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


# Names the rendered script cannot export: bash's read-only variables, and variables the
# script itself reads (an `export` of them would kill the script or mislead it).
RESERVED_ENV: Mapping[str, str] = {
    **dict.fromkeys(("BASHOPTS", "SHELLOPTS", "EUID", "PPID", "UID"), "read-only in bash"),
    **dict.fromkeys(("IFS", "BASH_ENV", "ENV"), "changes how the job script itself runs"),
    "PATH": "the job script needs it to find srun and scontrol; use `modules`",
    **dict.fromkeys(("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT",
                     "SLURM_JOB_PARTITION", "SLURM_JOB_NUM_NODES"), "set by Slurm for the job"),
}


def env_name(key: str, _: object) -> str | None:
    if not _ENV_NAME.match(key):
        return "invalid environment variable name"
    if key in RESERVED_ENV:
        return f"cannot be set here: {RESERVED_ENV[key]}"
    return "cannot be set here: aiinfra sets AIINFRA_* itself" if key.startswith("AIINFRA_") else None


def binds(value: tuple[str, ...]) -> str | None:
    """HOST[:CONTAINER[:OPTS]] each; pyxis and apptainer split a bind list at commas."""
    for bind in value:
        if "," in bind:
            return (f"{bind!r} contains a comma, which the container runtime reads as two "
                    "binds; a comma cannot be expressed in one bind")
        if not bind or bind.startswith(":"):
            return f"{bind!r} is not HOST[:CONTAINER[:OPTS]]"
    return None


def sbatch_entry(key: str, value: SbatchValue) -> str | None:
    """One extra ``#SBATCH`` option: a real sbatch long option, a one-line value."""
    if key in OWNED_SBATCH_OPTIONS:
        return f"aiinfra sets this option itself (use {OWNED_SBATCH_OPTIONS[key]})"
    if isinstance(value, str) and sbatch_text(value):
        return "the value must not contain control characters (newlines, tabs)"
    return sbatch_key_problem(key)


# sbatch options rendered from typed fields; extra `sbatch` tables may not set them.
OWNED_SBATCH_OPTIONS: Mapping[str, str] = {
    "job-name": "name", "nodes": "nodes", "ntasks-per-node": "tasks_per_node",
    "gpus-per-node": "gpus_per_node", "gres": "gpus_per_node", "cpus-per-task": "cpus_per_task",
    "mem": "mem", "mem-per-cpu": "mem_per_cpu", "time": "time", "partition": "partition",
    "account": "account", "qos": "qos", "constraint": "constraint", "output": "log_dir",
    "error": "log_dir", "open-mode": "(always append)", "chdir": "workdir",
    "signal": "checkpoint.signal_lead_s", "requeue": "(always on: the supervisor requeues)",
    "no-requeue": "(the supervisor decides: see checkpoint.max_restarts)",
}
