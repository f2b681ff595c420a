"""Host checks: CPUs, memory, disk, mounts, D-state processes, required daemons.

One collector reads /proc and the configured paths once; the checks are pure.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiinfra.health.facts import CollectContext, Facts, FunctionCollector, Section, section_error
from aiinfra.health.registry import check, collector
from aiinfra.health.result import CheckResult, crit, from_problems, ok, unknown

PROC = Path("/proc")
# A process counts as stuck only when it is still in D state this long after it was first
# seen there: reading a file or faulting a page puts healthy processes in D state for
# milliseconds (measured: 64 dev-cluster nodes checked at once on one host saw 6-7 such
# processes in a single sample, and drained two healthy nodes).
DSTATE_RECHECK_S = 1.0


# ---------------------------------------------------------------- collector

def collect_host(ctx: CollectContext, proc: Path = PROC,
                 sleep: Callable[[float], None] = time.sleep) -> Section:
    disk = ctx.params("host.disk", ("path",))
    stats = _proc_stats(proc)  # one pass over /proc serves both process facts
    in_d = [(pid, comm) for pid, comm, state in stats if state == "D"]
    return {
        "cpus": os.cpu_count(),
        "meminfo_kib": _meminfo(proc / "meminfo"),
        "disks": {disk["path"]: disk_facts(Path(disk["path"]))} if isinstance(disk, dict) else {},
        "mounts": sorted(_mountpoints(proc / "mounts")),
        "dstate": [{"pid": pid, "comm": comm} for pid, comm in _still_in_d(proc, in_d, sleep)],
        "processes": sorted({comm for _, comm, _ in stats}),
    }


collector(FunctionCollector("host", collect_host))


def _meminfo(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key in ("MemTotal", "MemAvailable") and fields:
            out[key] = int(fields[0])
    return out


def disk_facts(path: Path) -> dict[str, Any]:
    try:
        stat = os.statvfs(path)
    except OSError as exc:
        return {"error": f"{path}: {exc.strerror or exc}"}
    probe = path / f".aiinfra-health-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
        writable, why = True, ""
    except OSError as exc:
        writable, why = False, exc.strerror or str(exc)
    return {"free_bytes": stat.f_bavail * stat.f_frsize, "size_bytes": stat.f_blocks * stat.f_frsize,
            "writable": writable, "write_error": why}


def _mountpoints(path: Path) -> set[str]:
    points = set()
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            points.add(fields[1].replace("\\040", " "))
    return points


def _still_in_d(proc: Path, seen: list[tuple[int, str]],
                sleep: Callable[[float], None]) -> list[tuple[int, str]]:
    """Those of ``seen`` (pid, comm in D state) still in D state after DSTATE_RECHECK_S."""
    if not seen:
        return []
    sleep(DSTATE_RECHECK_S)
    return [(pid, comm) for pid, comm in seen if _state(proc / str(pid) / "stat") == "D"]


def _state(stat: Path) -> str:
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return "gone"
    return fields[0] if fields else "?"


def _proc_stats(proc: Path) -> list[tuple[int, str, str]]:
    """(pid, comm, state) for every process, from /proc/PID/stat."""
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        head, _, tail = text.rpartition(")")
        comm = head.partition("(")[2]
        fields = tail.split()
        state = fields[0] if fields else "?"
        out.append((int(entry.name), comm, state))
    return out


# ---------------------------------------------------------------- checks

GIB = 1024**3


@dataclass(frozen=True)
class CpuParams:
    min_cpus: int


@check("host.cpu", "quick", ("host",), CpuParams)
def check_cpu(facts: Facts, p: CpuParams) -> CheckResult:
    """CPU count at least the profile's min_cpus."""
    if (why := section_error(facts, "host")) is not None:
        return unknown("host.cpu", why)
    cpus = facts["host"]["cpus"]
    if cpus < p.min_cpus:
        return crit("host.cpu", f"{cpus} CPUs < min {p.min_cpus}", cpus=cpus)
    return ok("host.cpu", f"{cpus} CPUs >= min {p.min_cpus}", cpus=cpus)


@dataclass(frozen=True)
class MemoryParams:
    min_gib: float


@check("host.memory", "quick", ("host",), MemoryParams)
def check_memory(facts: Facts, p: MemoryParams) -> CheckResult:
    """Physical memory (MemTotal) at least min_gib."""
    if (why := section_error(facts, "host")) is not None:
        return unknown("host.memory", why)
    total = facts["host"]["meminfo_kib"].get("MemTotal")
    if total is None:
        return unknown("host.memory", "MemTotal missing from /proc/meminfo")
    gib = total * 1024 / GIB
    if gib < p.min_gib:
        return crit("host.memory", f"{gib:.1f} GiB < min {p.min_gib:g} GiB", mem_gib=gib)
    return ok("host.memory", f"{gib:.1f} GiB >= min {p.min_gib:g} GiB", mem_gib=gib)


@dataclass(frozen=True)
class DiskParams:
    path: str
    min_free_gib: float


@check("host.disk", "quick", ("host",), DiskParams)
def check_disk(facts: Facts, p: DiskParams) -> CheckResult:
    """The configured path is writable with at least min_free_gib free."""
    if (why := section_error(facts, "host")) is not None:
        return unknown("host.disk", why)
    disk = facts["host"]["disks"].get(p.path)
    if disk is None:
        return unknown("host.disk", f"{p.path} was not examined")
    if "error" in disk:
        return crit("host.disk", disk["error"])
    free = disk["free_bytes"] / GIB
    problems = []
    if free < p.min_free_gib:
        problems.append(f"{p.path} free {free:.1f} GiB < min {p.min_free_gib:g} GiB")
    if not disk["writable"]:
        problems.append(f"{p.path} not writable ({disk['write_error']})")
    return from_problems("host.disk", problems, f"{p.path} free {free:.1f} GiB >= min "
                         f"{p.min_free_gib:g} GiB, writable", free_gib=free)


@dataclass(frozen=True)
class MountsParams:
    required: tuple[str, ...]


@check("host.mounts", "quick", ("host",), MountsParams)
def check_mounts(facts: Facts, p: MountsParams) -> CheckResult:
    """Every required mount point is mounted."""
    if (why := section_error(facts, "host")) is not None:
        return unknown("host.mounts", why)
    mounted = set(facts["host"]["mounts"])
    missing = [m for m in p.required if m not in mounted]
    return from_problems("host.mounts", [f"{m} not mounted" for m in missing],
                         f"{len(p.required)} required mounts present", missing=missing)


@dataclass(frozen=True)
class DstateParams:
    max_processes: int


@check("host.dstate", "quick", ("host",), DstateParams)
def check_dstate(facts: Facts, p: DstateParams) -> CheckResult:
    """Processes in uninterruptible sleep (D state, hung I/O) at most max_processes."""
    if (why := section_error(facts, "host")) is not None:
        return unknown("host.dstate", why)
    stuck = facts["host"]["dstate"]
    names = ", ".join(f"{d['comm']}[{d['pid']}]" for d in stuck[:5])
    if len(stuck) > p.max_processes:
        return crit("host.dstate", f"{len(stuck)} D-state processes > max {p.max_processes}"
                    f" ({names})", processes=stuck)
    return ok("host.dstate", f"{len(stuck)} D-state processes <= max {p.max_processes}",
              processes=stuck)


@dataclass(frozen=True)
class DaemonsParams:
    required: tuple[str, ...]


@check("host.daemons", "quick", ("host",), DaemonsParams)
def check_daemons(facts: Facts, p: DaemonsParams) -> CheckResult:
    """Required daemons (e.g. munged, slurmd) are running."""
    if (why := section_error(facts, "host")) is not None:
        return unknown("host.daemons", why)
    running = set(facts["host"]["processes"])
    missing = [d for d in p.required if d not in running]
    return from_problems("host.daemons", [f"{d} not running" for d in missing],
                         f"{', '.join(p.required) or 'none'} running", missing=missing)
