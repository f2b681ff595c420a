"""Cluster profiles: their types, discovery by name, ``inherits`` chains, loading."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import fields
from .errors import SpecError
from .fields import SbatchValue
from .files import package_dir
from .healthmemo import check_health
from .schema import Origins, build, field, merge, read_toml
from .spec import Runtime

SNAPSHOT_SUFFIX = ".snapshot.json"


@dataclass(frozen=True)
class PartitionSpec:
    nodes: int = field(check=fields.positive, doc="nodes in the partition")
    gpus_per_node: int = field(0, check=fields.not_negative, doc="GPUs on each node")
    cpus_per_node: int | None = field(None, check=fields.positive, doc="CPUs on each node")


@dataclass(frozen=True)
class ContainerRuntime:
    runtime: Runtime = field("none", doc="none, apptainer, singularity or pyxis")
    binds: tuple[str, ...] = field((), check=fields.binds,
                                  doc="binds every container gets (site file systems)")
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
    gate_retries: int = field(2, check=fields.not_negative, doc="requeues with bad nodes excluded")
    collect_timeout_s: float = field(60.0, doc="time limit for each collector")
    watchdog_s: float = field(300.0, doc="time limit for a whole `health run`")
    thresholds: Thresholds = field({}, doc="per-check thresholds: [health.thresholds.\"NAME\"]")
    override: tuple[HealthOverride, ...] = field((), doc="[[health.override]] per node pattern")
    skip: tuple[str, ...] = field((), doc="checks (or globs) that do not apply to these nodes")
    sweep: Mapping[str, Any] = field({}, doc="[health.sweep]: nightly sweep settings "
                                     "(aiinfra.health.sweep.SweepSettings)")


@dataclass(frozen=True)
class Profile:
    partition: str = field(check=fields.sbatch_text, doc="default partition")
    partitions: Mapping[str, PartitionSpec] = field(entry=fields.partition_name, doc="the partitions jobs may use")
    description: str = field("", doc="one line for `aiinfra profiles list`")
    inherits: str | None = field(None, doc="a profile name or path this one extends")
    account: str | None = field(None, check=fields.sbatch_text, doc="default account")
    qos: str | None = field(None, check=fields.sbatch_text, doc="default QOS")
    constraint: str | None = field(None, check=fields.sbatch_text, doc="default node constraint")
    modules: tuple[str, ...] = field((), doc="environment modules to load, in order")
    env: Mapping[str, str] = field({}, entry=fields.env_name, doc="NCCL/IB and site environment")
    sbatch: Mapping[str, SbatchValue] = field({}, entry=fields.sbatch_entry, doc="site sbatch options")
    container: ContainerRuntime = field(ContainerRuntime(), doc="container runtime and binds")
    mpirun_args: tuple[str, ...] = field((), doc="extra mpirun arguments for this site")
    srun_mpi: str = field("pmix", doc="srun --mpi plugin for MPI jobs launched by srun")
    aiinfra: str | None = field(None, doc="the aiinfra command on compute nodes (default: "
                                "`python -m aiinfra` of the install that submitted)")
    health: HealthSettings = field(HealthSettings(), doc="health checks and the preflight gate")


@dataclass(frozen=True)
class LoadedProfile:
    name: str
    path: Path
    chain: tuple[Path, ...]
    profile: Profile
    raw: Mapping[str, Any]


def profile_dirs() -> list[Path]:
    """Where profiles are found by name: $AIINFRA_PROFILE_PATH, the user's, the built-ins."""
    dirs = [Path(p) for p in os.environ.get("AIINFRA_PROFILE_PATH", "").split(os.pathsep) if p]
    dirs.append(Path.home() / ".config" / "aiinfra" / "profiles")
    dirs.append(builtin_profile_dir())
    return dirs


def builtin_profile_dir() -> Path:
    return package_dir("aiinfra.profiles")


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
    """Load a profile, following ``inherits`` (cycles are an error), and validate it.

    A job's snapshot (``*.snapshot.json``) stands for the profile as it was at submit time."""
    if ref.endswith(SNAPSHOT_SUFFIX):
        from .snapshot import read_snapshot

        return read_snapshot(Path(ref)).profile
    path = find_profile(ref)
    layers = _inheritance_chain(path)
    origins = Origins(str(path))
    merged: dict[str, Any] = {}
    for step, layer in reversed(layers):  # the requested file last: its keys win
        merged = merge(merged, layer, origins, str(step))
    profile = build(Profile, merged, origins)
    check_health(profile.health, origins)
    if profile.partition not in profile.partitions:
        raise origins.error("partition", f"default partition {profile.partition!r} is not "
                            "in [partitions]", list(profile.partitions))
    name = path.stem if "/" in ref or ref.endswith(".toml") else ref
    return LoadedProfile(name=name, path=path, chain=tuple(step for step, _ in layers),
                         profile=profile, raw=merged)


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
