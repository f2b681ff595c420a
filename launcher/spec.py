"""Job files and cluster profiles: load, layer, validate (frozen results).

Precedence is profile < job file < command-line overrides. Every error is a
:class:`SpecError` naming the file (or flag) and the dotted field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import importlib.util
from pathlib import Path
from typing import Any, Literal

from aiinfra.launcher.errors import SpecError
from aiinfra.launcher.files import cache_dir
from aiinfra.launcher.schema import Origins, build, check_partial, field, merge, type_at
from aiinfra.launcher.slurmtime import check_time

Kind = Literal["train", "mpi", "inference"]
LauncherName = Literal["torchrun", "srun", "mpirun"]
Runtime = Literal["none", "apptainer", "singularity", "pyxis"]
Preset = Literal["command", "vllm", "sglang", "trtllm", "triton"]
SbatchValue = str | int | bool

DEFAULT_LAUNCHER: Mapping[str, str] = {"train": "torchrun", "mpi": "mpirun", "inference": "srun"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_MEMORY = re.compile(r"^[1-9][0-9]*[KMGT]?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _positive(value: int) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def _port(value: int) -> str | None:
    return None if 1024 <= value <= 65535 else f"must be a port in 1024..65535, got {value}"


def _memory(value: str) -> str | None:
    return None if _MEMORY.match(value) else f"{value!r} is not a Slurm memory size (e.g. 16G, 512M)"


def _job_name(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return "must not contain control characters (newlines, tabs)" if _CONTROL.search(value) else None


def _nonempty_argv(value: tuple[str, ...]) -> str | None:
    return None if value and value[0] else "must be a non-empty list of strings, e.g. [\"python\", \"train.py\"]"


def _env_names(value: Mapping[str, str]) -> str | None:
    bad = [k for k in value if not _ENV_NAME.match(k)]
    return f"invalid environment variable name(s): {', '.join(map(repr, bad))}" if bad else None


def _sbatch_keys(value: Mapping[str, SbatchValue]) -> str | None:
    bad = [k for k in value if not _SBATCH_KEY.match(k)]
    if bad:
        return f"option names are sbatch long options without dashes, got {', '.join(map(repr, bad))}"
    owned = sorted(set(value) & set(OWNED_SBATCH_OPTIONS))
    if owned:
        hints = ", ".join(f"{k} (use {OWNED_SBATCH_OPTIONS[k]})" for k in owned)
        return f"aiinfra sets these itself: {hints}"
    return None


# sbatch options rendered from typed fields; extra `sbatch` tables may not set them.
OWNED_SBATCH_OPTIONS: Mapping[str, str] = {
    "job-name": "name", "nodes": "nodes", "ntasks-per-node": "tasks_per_node",
    "gpus-per-node": "gpus_per_node", "gres": "gpus_per_node", "cpus-per-task": "cpus_per_task",
    "mem": "mem", "mem-per-cpu": "mem_per_cpu", "time": "time", "partition": "partition",
    "account": "account", "qos": "qos", "constraint": "constraint", "output": "log_dir",
    "error": "log_dir", "open-mode": "(always append)", "chdir": "workdir",
}


@dataclass(frozen=True)
class ContainerSpec:
    image: str = field(doc="image path or URI (.sif, docker://..., squashfs for pyxis)")
    binds: tuple[str, ...] = field((), doc="extra HOST[:CONTAINER[:OPTS]] binds")
    runtime: Runtime | None = field(None, doc="override the profile's container runtime")


@dataclass(frozen=True)
class CheckpointSpec:
    dir: str | None = field(None, doc="checkpoint directory, exported as AIINFRA_CHECKPOINT_DIR")
    keep: int = field(3, check=_positive, doc="how many good checkpoints to keep")
    max_restarts: int = field(3, check=_not_negative, doc="restart budget before a final state")


@dataclass(frozen=True)
class ServerSpec:
    preset: Preset = field("command", doc="command (yours), vllm, sglang, trtllm or triton")
    model: str | None = field(None, doc="model path/name (model repository for triton)")
    port: int = field(8000, check=_port, doc="port the server listens on")
    ready_timeout_s: int = field(900, check=_positive, doc="how long to wait for the port")
    args: tuple[str, ...] = field((), doc="extra server arguments appended to the preset")


@dataclass(frozen=True)
class JobSpec:
    name: str = field(check=_job_name, doc="Slurm job name")
    command: tuple[str, ...] = field((), doc="argv of the program (a list, never a string)")
    kind: Kind = field("train", doc="train, mpi or inference")
    launcher: LauncherName | None = field(None, doc="torchrun, srun or mpirun (default by kind)")
    nodes: int = field(1, check=_positive, doc="number of nodes")
    gpus_per_node: int | None = field(None, check=_not_negative, doc="default: the partition's")
    tasks_per_node: int = field(1, check=_positive, doc="processes per node (CPU torchrun, MPI)")
    cpus_per_task: int | None = field(None, check=_positive, doc="CPUs per task")
    mem: str | None = field(None, check=_memory, doc="memory per node, e.g. 64G")
    mem_per_cpu: str | None = field(None, check=_memory, doc="memory per CPU (not with mem)")
    time: str = field("01:00:00", check=check_time, doc="time limit in a Slurm time format")
    partition: str | None = field(None, doc="default: the profile's partition")
    account: str | None = field(None, doc="default: the profile's account")
    qos: str | None = field(None, doc="default: the profile's qos")
    constraint: str | None = field(None, doc="default: the profile's constraint")
    workdir: str | None = field(None, doc="working directory (default: where you submit)")
    log_dir: str = field("logs", doc="logs, scripts and endpoint files (relative to workdir)")
    env: Mapping[str, str] = field({}, check=_env_names, doc="environment for the program")
    sbatch: Mapping[str, SbatchValue] = field({}, check=_sbatch_keys, doc="extra sbatch options")
    container: ContainerSpec | None = field(None, doc="run the program in a container")
    checkpoint: CheckpointSpec = field(CheckpointSpec(), doc="checkpoint and restart settings")
    server: ServerSpec | None = field(None, doc="inference server settings (kind = inference)")
    preflight: bool | None = field(None, doc="run the health gate first (default: profile's)")

    @property
    def resolved_launcher(self) -> str:
        return self.launcher or DEFAULT_LAUNCHER[self.kind]


@dataclass(frozen=True)
class PartitionSpec:
    nodes: int = field(check=_positive, doc="nodes in the partition")
    gpus_per_node: int = field(0, check=_not_negative, doc="GPUs on each node")
    cpus_per_node: int | None = field(None, check=_positive, doc="CPUs on each node")


@dataclass(frozen=True)
class ContainerRuntime:
    runtime: Runtime = field("none", doc="none, apptainer, singularity or pyxis")
    binds: tuple[str, ...] = field((), doc="binds every container gets (site file systems)")
    flags: tuple[str, ...] = field((), doc="extra flags for `exec` (apptainer/singularity)")


def _hostlist(value: str) -> str | None:
    from aiinfra.health.thresholds import check_pattern

    return check_pattern(value)


Thresholds = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class HealthOverride:
    nodes: str = field(check=_hostlist, doc="Slurm node list (node[1-4]) or glob (gpu-*)")
    thresholds: Thresholds = field({}, doc="per-check thresholds laid over the profile's")


@dataclass(frozen=True)
class HealthSettings:
    gate: bool = field(True, doc="run the preflight gate in every job")
    gate_tier: Literal["quick", "standard", "deep"] = field("quick", doc="the gate's tier")
    gate_retries: int = field(2, check=_not_negative, doc="requeues with bad nodes excluded")
    collect_timeout_s: float = field(60.0, doc="time limit for each collector")
    watchdog_s: float = field(300.0, doc="time limit for a whole `health run`")
    thresholds: Thresholds = field({}, doc="per-check thresholds: [health.thresholds.\"NAME\"]")
    override: tuple[HealthOverride, ...] = field((), doc="[[health.override]] per node pattern")
    skip: tuple[str, ...] = field((), doc="checks (or globs) that do not apply to these nodes")


@dataclass(frozen=True)
class Profile:
    partition: str = field(doc="default partition")
    partitions: Mapping[str, PartitionSpec] = field(doc="the partitions jobs may use")
    description: str = field("", doc="one line for `aiinfra profiles list`")
    inherits: str | None = field(None, doc="a profile name or path this one extends")
    account: str | None = field(None, doc="default account")
    qos: str | None = field(None, doc="default QOS")
    constraint: str | None = field(None, doc="default node constraint")
    modules: tuple[str, ...] = field((), doc="environment modules to load, in order")
    env: Mapping[str, str] = field({}, check=_env_names, doc="NCCL/IB and site environment")
    sbatch: Mapping[str, SbatchValue] = field({}, check=_sbatch_keys, doc="site sbatch options")
    container: ContainerRuntime = field(ContainerRuntime(), doc="container runtime and binds")
    mpirun_args: tuple[str, ...] = field((), doc="extra mpirun arguments for this site")
    srun_mpi: str = field("pmix", doc="srun --mpi plugin for MPI jobs launched by srun")
    aiinfra: str = field("aiinfra", doc="the aiinfra command as jobs find it on compute nodes")
    health: HealthSettings = field(HealthSettings(), doc="health checks and the preflight gate")


@dataclass(frozen=True)
class LoadedProfile:
    name: str
    path: Path
    chain: tuple[Path, ...]
    profile: Profile
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class LoadedJob:
    path: Path
    sha256: str
    job: JobSpec
    raw: Mapping[str, Any]


def read_toml(path: Path, display: str | None = None) -> dict[str, Any]:
    """Parse a TOML file; syntax and I/O errors become a SpecError naming the file."""
    name = display or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(name, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(name, "", "not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(name, "", f"TOML syntax error: {exc}") from exc


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
    return LoadedJob(path=path, sha256=digest, job=job, raw=merged)


def _check_job(job: JobSpec, origins: Origins) -> None:
    """Checks across fields of one job file (single fields are checked by the schema)."""
    if job.kind == "inference" and job.server is None:
        raise origins.error("server", "an inference job needs a [server] table")
    if job.kind != "inference" and job.server is not None:
        raise origins.error("server", f"only inference jobs take a [server] table, kind is {job.kind!r}")
    preset = job.server.preset if job.server else "command"
    if preset == "command":
        problem = _nonempty_argv(job.command)
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


# ---------------------------------------------------------------- profiles

def profile_dirs() -> list[Path]:
    """Where profiles are found by name: $AIINFRA_PROFILE_PATH, the user's, the built-ins."""
    dirs = [Path(p) for p in os.environ.get("AIINFRA_PROFILE_PATH", "").split(os.pathsep) if p]
    dirs.append(Path.home() / ".config" / "aiinfra" / "profiles")
    dirs.append(builtin_profile_dir())
    return dirs


def builtin_profile_dir() -> Path:
    return package_dir("aiinfra.profiles")


def package_dir(package: str) -> Path:
    """Where an installed package's files lie (cheaper at start-up than importlib.resources)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"aiinfra is installed without {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def available_profiles() -> dict[str, Path]:
    """Profile name -> file; earlier directories shadow later ones."""
    found: dict[str, Path] = {}
    for directory in profile_dirs():
        for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def find_profile(ref: str, relative_to: Path | None = None, source: str = "--profile") -> Path:
    """A profile by path (contains '/' or ends in .toml) or by name."""
    if "/" in ref or ref.endswith(".toml"):
        path = Path(ref).expanduser()
        if relative_to is not None and not path.is_absolute():
            path = relative_to / path
        if not path.is_file():
            raise SpecError(source, "", f"profile file {str(path)!r} does not exist")
        return path
    known = available_profiles()
    if ref not in known:
        raise SpecError(source, "", f"unknown profile {ref!r}", list(known))
    return known[ref]


def load_profile(ref: str) -> LoadedProfile:
    """Load a profile, following ``inherits`` (cycles are an error), and validate it."""
    path = find_profile(ref)
    layers = _inheritance_chain(path)
    origins = Origins(str(path))
    merged: dict[str, Any] = {}
    for step, layer in reversed(layers):  # the requested file last: its keys win
        merged = merge(merged, layer, origins, str(step))
    profile = build(Profile, merged, origins)
    _check_health(profile.health, origins)
    if profile.partition not in profile.partitions:
        raise origins.error("partition", f"default partition {profile.partition!r} is not "
                            "in [partitions]", list(profile.partitions))
    name = path.stem if "/" in ref or ref.endswith(".toml") else ref
    return LoadedProfile(name=name, path=path, chain=tuple(step for step, _ in layers),
                         profile=profile, raw=merged)


def _check_health(health: HealthSettings, origins: Origins) -> None:
    """Threshold tables must name registered checks and hold their parameters.

    Checking imports every check module (~50 ms), so a success is remembered in the user's
    cache, keyed by the health table, the aiinfra version and the check modules' files:
    `aiinfra submit` pays once per profile, not on every call. Failures are never cached."""
    marker = _validated_marker(health)
    if marker is not None and marker.exists():
        return
    _check_health_tables(health, origins)
    if marker is not None:
        with contextlib.suppress(OSError):
            marker.touch()


def _validated_marker(health: HealthSettings) -> Path | None:
    directory = cache_dir("validated")
    if directory is None:
        return None
    from aiinfra import __version__

    health_dir = package_dir("aiinfra.health")
    files = sorted(p for p in health_dir.iterdir() if p.suffix in (".py", ".toml"))
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps([__version__, stamp, as_plain(health)], sort_keys=True, default=str)
    return directory / hashlib.sha256(blob.encode()).hexdigest()


def _check_health_tables(health: HealthSettings, origins: Origins) -> None:
    from aiinfra.health.registry import checks

    known = checks()
    tables = [("health.thresholds", health.thresholds)] + [
        (f"health.override[{i}].thresholds", o.thresholds) for i, o in enumerate(health.override)]
    for i, pattern in enumerate(health.skip):
        if not fnmatch.filter(known, pattern):
            raise origins.error(f"health.skip[{i}]", f"{pattern!r} matches no check", list(known))
    for prefix, table in tables:
        for name, values in table.items():
            if name not in known:
                raise origins.error(f"{prefix}.{name}", "unknown check", list(known))
            check_partial(known[name].params, values, origins, f"{prefix}.{name}")


def _inheritance_chain(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The profile and its ancestors, nearest first, each file read and parsed once."""
    current = path.resolve()
    layers = [(current, read_toml(current))]
    chain = [current]
    while True:
        parent = layers[-1][1].get("inherits")
        if parent is None:
            return layers
        if not isinstance(parent, str):
            raise SpecError(str(current), "inherits", "expected a profile name or path (a string)")
        nxt = find_profile(parent, current.parent, source=f"{current}: inherits").resolve()
        if nxt in chain:
            names = " -> ".join(p.stem for p in [*chain, nxt])
            raise SpecError(str(current), "inherits", f"inheritance cycle: {names}")
        chain.append(nxt)
        layers.append((nxt, read_toml(nxt)))
        current = nxt


def as_plain(value: Any) -> Any:
    """Frozen specs back to plain JSON-able data (for hashing and `profiles show`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [as_plain(v) for v in value]
    return value
