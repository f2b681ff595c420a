"""Job files: the job's types, loading with command-line overrides, cross-field checks.

Precedence is profile < job file < command-line overrides. Every error is a
:class:`SpecError` naming the file (or flag) that set the value and the dotted field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import fields
from .errors import SpecError
from .fields import SbatchValue
from .schema import Origins, build, field, merge, read_toml, type_at
from .slurmtime import check_time

Kind = Literal["train", "mpi", "inference"]
LauncherName = Literal["torchrun", "srun", "mpirun"]
Runtime = Literal["none", "apptainer", "singularity", "pyxis"]
Preset = Literal["command", "vllm", "sglang", "trtllm", "triton"]

DEFAULT_LAUNCHER: Mapping[str, str] = {"train": "torchrun", "mpi": "mpirun", "inference": "srun"}


@dataclass(frozen=True)
class ContainerSpec:
    image: str = field(doc="image path or URI (.sif, docker://..., squashfs for pyxis)")
    binds: tuple[str, ...] = field((), check=fields.binds,
                                  doc="extra HOST[:CONTAINER[:OPTS]] binds")
    runtime: Runtime | None = field(None, doc="override the profile's container runtime")


@dataclass(frozen=True)
class CheckpointSpec:
    dir: str | None = field(None, check=fields.path, doc="checkpoint directory, exported as AIINFRA_CHECKPOINT_DIR")
    keep: int = field(3, check=fields.positive, doc="how many good checkpoints to keep")
    max_restarts: int = field(3, check=fields.not_negative,
                              doc="requeues without checkpoint progress before a final state")
    signal_lead_s: int = field(120, check=fields.positive,
                               doc="seconds before the time limit that the job is told to save")


@dataclass(frozen=True)
class ServerSpec:
    preset: Preset = field("command", doc="command (yours), vllm, sglang, trtllm or triton")
    model: str | None = field(None, doc="model path/name (model repository for triton)")
    port: int = field(8000, check=fields.port, doc="port the server listens on")
    ready_timeout_s: int = field(900, check=fields.positive, doc="how long to wait for the port")
    args: tuple[str, ...] = field((), doc="extra server arguments appended to the preset")


@dataclass(frozen=True)
class JobSpec:
    name: str = field(check=fields.job_name, doc="Slurm job name")
    command: tuple[str, ...] = field((), doc="argv of the program (a list, never a string)")
    kind: Kind = field("train", doc="train, mpi or inference")
    launcher: LauncherName | None = field(None, doc="torchrun, srun or mpirun (default by kind)")
    nodes: int = field(1, check=fields.positive, doc="number of nodes")
    gpus_per_node: int | None = field(None, check=fields.not_negative, doc="default: the partition's")
    tasks_per_node: int = field(1, check=fields.positive, doc="processes per node (CPU torchrun, MPI)")
    cpus_per_task: int | None = field(None, check=fields.positive, doc="CPUs per task")
    mem: str | None = field(None, check=fields.memory, doc="memory per node, e.g. 64G")
    mem_per_cpu: str | None = field(None, check=fields.memory, doc="memory per CPU (not with mem)")
    time: str = field("01:00:00", check=check_time, doc="time limit in a Slurm time format")
    partition: str | None = field(None, check=fields.sbatch_text, doc="default: the profile's partition")
    account: str | None = field(None, check=fields.sbatch_text, doc="default: the profile's account")
    qos: str | None = field(None, check=fields.sbatch_text, doc="default: the profile's qos")
    constraint: str | None = field(None, check=fields.sbatch_text, doc="default: the profile's constraint")
    workdir: str | None = field(None, check=fields.path, doc="working directory (default: where you submit)")
    log_dir: str = field("logs", check=fields.path, doc="logs, scripts and endpoint files (relative to workdir)")
    env: Mapping[str, str] = field({}, entry=fields.env_name, doc="environment for the program")
    sbatch: Mapping[str, SbatchValue] = field({}, entry=fields.sbatch_entry, doc="extra sbatch options")
    container: ContainerSpec | None = field(None, doc="run the program in a container")
    checkpoint: CheckpointSpec = field(CheckpointSpec(), doc="checkpoint and restart settings")
    server: ServerSpec | None = field(None, doc="inference server settings (kind = inference)")
    preflight: bool | None = field(None, doc="run the health gate first (default: profile's)")

    @property
    def resolved_launcher(self) -> str:
        return self.launcher or DEFAULT_LAUNCHER[self.kind]


@dataclass(frozen=True)
class LoadedJob:
    path: Path
    sha256: str
    job: JobSpec
    raw: Mapping[str, Any]
    origins: Origins = dataclasses.field(compare=False)

    def error(self, path: str, message: str, choices: Sequence[str] = ()) -> SpecError:
        """An error naming the file or flag that set ``path`` (or the job file)."""
        return self.origins.error(path, message, choices)


def load_job(path: Path, overrides: Sequence[tuple[str, str, Any]] = ()) -> LoadedJob:
    """Load a job file and apply ``(flag, dotted_key, value)`` overrides on top."""
    raw = read_toml(path)
    origins = Origins(str(path))
    merged: dict[str, Any] = dict(raw)
    for flag, key, value in overrides:
        merged = merge(merged, _nest(key, value), origins, flag)
    job = build(JobSpec, merged, origins)
    _check_job(job, origins)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LoadedJob(path=path, sha256=digest, job=job, raw=merged, origins=origins)


def _check_job(job: JobSpec, origins: Origins) -> None:
    """Checks across fields of one job file (single fields are checked by the schema)."""
    if job.kind == "inference" and job.server is None:
        raise origins.error("server", "an inference job needs a [server] table")
    if job.kind != "inference" and job.server is not None:
        raise origins.error("server", f"only inference jobs take a [server] table, kind is {job.kind!r}")
    preset = job.server.preset if job.server else "command"
    if preset == "command":
        problem = fields.nonempty_argv(job.command)
        if problem:
            raise origins.error("command", problem)
    elif job.server is not None and not job.server.model:
        raise origins.error("server.model", f"preset {preset!r} needs a model")
    if job.mem and job.mem_per_cpu:
        raise origins.error("mem_per_cpu", "set mem or mem_per_cpu, not both (sbatch rejects both)")
    if job.kind == "inference" and job.resolved_launcher != "srun":
        raise origins.error("launcher", "inference servers start through srun", ["srun"])
    if preset != "command" and job.command:
        raise origins.error("command", f"preset {preset!r} sets the command; put extra "
                            "arguments in server.args")
    if preset != "command" and job.nodes > 1:
        raise origins.error("nodes", f"preset {preset!r} runs on one node; for multi-node "
                            "serving use preset = \"command\" with your own launch")
    if job.resolved_launcher == "torchrun" and job.kind == "mpi":
        raise origins.error("launcher", "MPI jobs launch with mpirun or srun", ["mpirun", "srun"])


def parse_override(text: str, flag: str = "--set") -> tuple[str, str, Any]:
    """``key=value`` into a typed override.

    A value for a string field is taken as written (``--set env.SEED=7`` gives "7");
    any other value is read as TOML (``nodes=4``, ``command=["a", "b"]``), else as text.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not all(part.strip() for part in key.split(".")):
        raise SpecError(flag, text, "expected KEY=VALUE, e.g. --set nodes=2")
    label = f"{flag} {key}" if flag == "--set" else flag
    if type_at(JobSpec, key) is str:
        return (label, key, value)
    try:
        parsed: Any = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return (label, key, parsed)


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out
