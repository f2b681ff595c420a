"""InfiniBand checks: port state and rate, port error counters.

One collector reads /sys/class/infiniband once, in the format the kernel documents
(Documentation/ABI/stable/sysfs-class-infiniband): ``state`` "4: ACTIVE", ``phys_state``
"5: LinkUp", ``rate`` "400 Gb/sec (4X NDR)", ``link_layer`` "InfiniBand" or "Ethernet",
one decimal number per file under ``counters/``. The checks are pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiinfra.health.facts import CollectContext, Facts, FunctionCollector, Section, section_error
from aiinfra.health.registry import check, collector
from aiinfra.health.result import CheckResult, Status, crit, from_problems, ok, unknown
from aiinfra.launcher.schema import field

SYS_IB = "sys/class/infiniband"
PORT_FILES = ("state", "phys_state", "rate", "link_layer")
COUNTERS = ("symbol_error", "link_error_recovery", "link_downed", "port_rcv_errors",
            "port_xmit_discards", "excessive_buffer_overrun_errors",
            "local_link_integrity_errors")
ABSENT = "no InfiniBand devices (/sys/class/infiniband absent)"
RATE = re.compile(r"^(\d+(?:\.\d+)?) Gb/sec")


# ---------------------------------------------------------------- collector

def collect_ib(ctx: CollectContext, root: Path = Path("/")) -> Section:
    """Every HCA's ports under ``root``/sys/class/infiniband (``root`` is a fixture in tests)."""
    base = root / SYS_IB
    if not base.is_dir():
        return {"error": ABSENT, "absent": True}
    return {"hcas": {hca.name: {"ports": _ports(hca)} for hca in sorted(base.iterdir())}}


collector(FunctionCollector("ib", collect_ib))


def _ports(hca: Path) -> dict[str, dict[str, Any]]:
    ports_dir = hca / "ports"
    if not ports_dir.is_dir():
        return {}
    ports = sorted(ports_dir.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0)
    return {port.name: {**{name: _read(port / name) for name in PORT_FILES},
                        "counters": {name: _count(port / "counters" / name) for name in COUNTERS}}
            for port in ports}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None  # some drivers lack a file, or a read fails while the port resets


def _count(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text is not None and text.isdigit() else None


# ---------------------------------------------------------------- helpers for the checks

def _name(value: str | None) -> str:
    """The name the kernel writes after the number: "4: ACTIVE" -> "ACTIVE"."""
    return "missing" if value is None else value.partition(": ")[2] or value


def rate_gbps(rate: str | None) -> float | None:
    """The rate in Gb/s: "400 Gb/sec (4X NDR)" -> 400.0, "2.5 Gb/sec (1X SDR)" -> 2.5."""
    match = RATE.match(rate or "")
    return float(match[1]) if match else None


def _selected(facts: Facts, devices: tuple[str, ...]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(hca, port, data) for the ports a check looks at: the listed HCAs (all when none are
    listed); Ethernet (RoCE) ports only when their HCA is listed."""
    hcas = facts["ib"]["hcas"]
    for hca in devices or sorted(hcas):
        for port, data in hcas.get(hca, {}).get("ports", {}).items():
            if data["link_layer"] == "Ethernet" and hca not in devices:
                continue
            yield hca, port, data


def _check_counters(table: Mapping[str, int]) -> str | None:
    bad = [name for name in table if name not in COUNTERS]
    return f"unknown counters {bad}; known: {list(COUNTERS)}" if bad else None


# ---------------------------------------------------------------- checks

@dataclass(frozen=True)
class PortsParams:
    expected_ports: int = field(doc="ports to find (of the listed HCAs); 0 for a node without IB")
    min_rate_gbps: float = field(doc="lowest active rate, e.g. 400 for NDR 4X")
    devices: tuple[str, ...] = field((), doc="HCAs to check, e.g. [\"mlx5_0\"]; empty = all")


@check("ib.ports", "quick", ("ib",), PortsParams)
def check_ports(facts: Facts, p: PortsParams) -> CheckResult:
    """expected_ports ports (of the listed HCAs, or all), each ACTIVE/LinkUp at min_rate_gbps."""
    if (why := section_error(facts, "ib")) is not None:
        if p.expected_ports == 0:
            return ok("ib.ports", f"0 ports expected ({why})")
        if isinstance(section := facts.get("ib"), Mapping) and section.get("absent"):
            return crit("ib.ports", f"0 ports != expected {p.expected_ports}: {why}")
        return unknown("ib.ports", why)
    hcas = facts["ib"]["hcas"]
    problems = [f"{hca} absent (listed in devices)" for hca in p.devices if hca not in hcas]
    ports = list(_selected(facts, p.devices))
    if len(ports) != p.expected_ports:
        problems.insert(0, f"{len(ports)} ports != expected {p.expected_ports}")
    for hca, port, data in ports:
        problems += _port_problems(f"{hca}/{port}", data, p.min_rate_gbps)
    return from_problems("ib.ports", problems, f"{len(ports)} ports == expected "
                         f"{p.expected_ports}, all ACTIVE/LinkUp at >= {p.min_rate_gbps:g} Gb/s",
                         ports={f"{h}/{n}": {k: d[k] for k in PORT_FILES} for h, n, d in ports})


def _port_problems(where: str, data: Mapping[str, Any], min_rate: float) -> list[str]:
    state, phys = _name(data["state"]), _name(data["phys_state"])
    problems = []
    if state != "ACTIVE" or phys != "LinkUp":
        problems.append(f"{where} {state}/{phys} != expected ACTIVE/LinkUp")
    rate = rate_gbps(data["rate"])
    if rate is None or rate < min_rate:
        problems.append(f"{where} rate {data['rate'] or 'missing'} < min {min_rate:g} Gb/s")
    return problems


@dataclass(frozen=True)
class ErrorsParams:
    max_counts: Mapping[str, int] = field(check=_check_counters,
                                          doc="per counter, the most it may read")
    severity: Literal["warn", "crit"] = field(doc="status when a counter is over its max")
    devices: tuple[str, ...] = field((), doc="HCAs to check; empty = all")


@check("ib.errors", "quick", ("ib",), ErrorsParams)
def check_errors(facts: Facts, p: ErrorsParams) -> CheckResult:
    """Port error counters (cumulative since the counters were last reset) at most the maxima."""
    if (why := section_error(facts, "ib")) is not None:
        return unknown("ib.errors", why)
    ports = list(_selected(facts, p.devices))
    problems = [f"{hca}/{port} {name} {data['counters'][name]} > max {limit}"
                for hca, port, data in ports for name, limit in p.max_counts.items()
                if (data["counters"][name] or 0) > limit]
    status = Status.CRIT if p.severity == "crit" else Status.WARN
    limits = ", ".join(f"{name} {max((d['counters'][name] or 0 for _, _, d in ports), default=0)}"
                       f" <= max {limit}" for name, limit in p.max_counts.items())
    return from_problems("ib.errors", problems, f"{len(ports)} ports: "
                         f"{limits or 'no counters limited'}", status, findings=problems,
                         counters={f"{h}/{n}": d["counters"] for h, n, d in ports})
