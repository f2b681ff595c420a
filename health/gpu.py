"""GPU checks over NVML: count, driver, ECC, retired pages, remapped rows, thermal, power,
PCIe link, NVLink, stray processes.

One collector reads every GPU once through an NVML binding: the real ``pynvml`` module
(package nvidia-ml-py, imported inside the collector) or, in tests, a replay of recorded
return values. A value NVML reports as not supported on a device is recorded as null; the
checks are pure and take every threshold from their params.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, cast

from aiinfra.health.facts import CollectContext, Facts, FunctionCollector, Section, section_error
from aiinfra.health.registry import check, collector
from aiinfra.health.result import CheckResult, Status, crit, from_problems, ok, unknown
from aiinfra.launcher.schema import field

T = TypeVar("T")

# nvmlReturn_t and enum values from nvml.h (the same numbers as pynvml's NVML_* constants).
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_TEMPERATURE_GPU = 0
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_NVLINK_MAX_LINKS = 36  # links past a device's own count answer INVALID_ARGUMENT
# nvmlPageRetirementCause_t
RETIREMENT_CAUSES = {"multiple_single_bit_ecc": 0, "double_bit_ecc": 1}
# nvmlNvLinkErrorCounter_t
NVLINK_COUNTERS = {"replay": 0, "recovery": 1, "crc_flit": 2, "crc_data": 3}
# nvmlClocksEventReason* bits (formerly nvmlClocksThrottleReason*), named as nvidia-smi's
# clocks_event_reasons.* query fields.
CLOCK_EVENT_REASONS = {
    "gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4,
    "hw_slowdown": 0x8, "sync_boost": 0x10, "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40, "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
# A value NVML cannot give for this device: recorded as null, the device stays readable.
UNSUPPORTED = (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND)
NO_SUCH_LINK = (*UNSUPPORTED, NVML_ERROR_INVALID_ARGUMENT)
MIB = 1024**2


class Nvml(Protocol):
    """The part of the NVML binding (``pynvml``) the collector calls."""

    @property
    def NVMLError(self) -> type[Exception]: ...  # noqa: N802 (pynvml's name)

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlSystemGetCudaDriverVersion(self) -> int: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int: ...
    def nvmlDeviceGetRetiredPages(self, handle: Any, cause: int) -> list[int]: ...
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any) -> int: ...
    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int: ...
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int: ...
    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int: ...
    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int: ...
    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int: ...
    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int: ...
    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int: ...
    def nvmlDeviceGetNvLinkErrorCounter(self, handle: Any, link: int, counter: int) -> int: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]: ...


# ---------------------------------------------------------------- collector

def collect_gpu(ctx: CollectContext, nvml: Nvml | None = None) -> Section:
    """Every GPU's facts. ``node_fault`` in an error says whether the node's driver stack
    failed (true) or only the Python binding is missing (false)."""
    if nvml is None:
        try:  # nvidia-ml-py: absent on CPU-only installs, so imported only here
            nvml = cast(Nvml, importlib.import_module("pynvml"))
        except ImportError as exc:
            return {"error": f"NVML not available: {exc}", "node_fault": False}
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if _code(exc) == NVML_ERROR_LIBRARY_NOT_FOUND:
            return {"error": f"NVML not available: {exc}", "node_fault": True}
        return {"error": f"NVML init failed: {exc}", "node_fault": True}
    try:
        return _read_system(nvml)
    except nvml.NVMLError as exc:
        return {"error": f"NVML query failed: {exc}", "node_fault": True}
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


collector(FunctionCollector("gpu", collect_gpu))


def _code(exc: BaseException) -> int | None:
    return getattr(exc, "value", None)


def _optional(nvml: Nvml, func: Callable[..., T], *args: Any,
              absent: tuple[int, ...] = UNSUPPORTED) -> T | None:
    """``func(*args)``, or None where NVML says the device does not support it."""
    try:
        return func(*args)
    except nvml.NVMLError as exc:
        if _code(exc) in absent:
            return None
        raise


def _read_system(nvml: Nvml) -> Section:
    cuda = _optional(nvml, nvml.nvmlSystemGetCudaDriverVersion)
    count = nvml.nvmlDeviceGetCount()
    return {
        "driver_version": _optional(nvml, nvml.nvmlSystemGetDriverVersion),
        "cuda_driver_version": None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
        "count": count,
        "gpus": [_read_device(nvml, index) for index in range(count)],
    }


def _read_device(nvml: Nvml, index: int) -> dict[str, Any]:
    """One GPU; a failure other than "not supported" (GPU lost, ...) marks the device."""
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        return {"index": index, **_identity(nvml, handle), **_memory(nvml, handle),
                **_sensors(nvml, handle), "pcie": _pcie(nvml, handle),
                "nvlink": _nvlinks(nvml, handle), "processes": _processes(nvml, handle)}
    except nvml.NVMLError as exc:
        return {"index": index, "error": str(exc)}


def _identity(nvml: Nvml, h: Any) -> dict[str, Any]:
    pci = nvml.nvmlDeviceGetPciInfo(h)
    bus_id = pci.busId.decode() if isinstance(pci.busId, bytes) else str(pci.busId)
    return {"name": nvml.nvmlDeviceGetName(h), "uuid": nvml.nvmlDeviceGetUUID(h),
            "pci_bus_id": bus_id}


def _memory(nvml: Nvml, h: Any) -> dict[str, Any]:
    def ecc(kind: int) -> int | None:
        return _optional(nvml, nvml.nvmlDeviceGetTotalEccErrors, h, kind, NVML_VOLATILE_ECC)

    def retired(cause: int) -> int | None:
        pages = _optional(nvml, nvml.nvmlDeviceGetRetiredPages, h, cause)
        return None if pages is None else len(pages)

    pending = _optional(nvml, nvml.nvmlDeviceGetRetiredPagesPendingStatus, h)
    rows = _optional(nvml, nvml.nvmlDeviceGetRemappedRows, h)
    return {
        "ecc": {"uncorrected_volatile": ecc(NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                "corrected_volatile": ecc(NVML_MEMORY_ERROR_TYPE_CORRECTED)},
        "retired_pages": {"pending": None if pending is None else bool(pending),
                          **{name: retired(cause) for name, cause in RETIREMENT_CAUSES.items()}},
        "remapped_rows": None if rows is None else {
            "correctable": rows[0], "uncorrectable": rows[1], "pending": bool(rows[2]),
            "failure": bool(rows[3])},
    }


def _sensors(nvml: Nvml, h: Any) -> dict[str, Any]:
    return {
        "temperature_c": _optional(nvml, nvml.nvmlDeviceGetTemperature, h, NVML_TEMPERATURE_GPU),
        "power_mw": _optional(nvml, nvml.nvmlDeviceGetPowerUsage, h),
        "power_limit_mw": _optional(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, h),
        "clocks_event_reasons": _clock_reasons(nvml, h),
    }


def _clock_reasons(nvml: Nvml, h: Any) -> int | None:
    """The current clocks-event bitmask; drivers before R535 only have the older name."""
    newer = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    reasons = _optional(nvml, newer, h) if newer is not None else None
    if reasons is None:
        reasons = _optional(nvml, nvml.nvmlDeviceGetCurrentClocksThrottleReasons, h)
    return reasons


def _pcie(nvml: Nvml, h: Any) -> dict[str, int | None]:
    return {
        "gen": _optional(nvml, nvml.nvmlDeviceGetCurrPcieLinkGeneration, h),
        "max_gen": _optional(nvml, nvml.nvmlDeviceGetMaxPcieLinkGeneration, h),
        "width": _optional(nvml, nvml.nvmlDeviceGetCurrPcieLinkWidth, h),
        "max_width": _optional(nvml, nvml.nvmlDeviceGetMaxPcieLinkWidth, h),
    }


def _nvlinks(nvml: Nvml, h: Any) -> list[dict[str, Any]]:
    """Every NVLink the device has (none on PCIe cards): state and error counters."""
    links = []
    for link in range(NVML_NVLINK_MAX_LINKS):
        state = _optional(nvml, nvml.nvmlDeviceGetNvLinkState, h, link, absent=NO_SUCH_LINK)
        if state is None:
            continue
        counters = {name: _optional(nvml, nvml.nvmlDeviceGetNvLinkErrorCounter, h, link, counter)
                    for name, counter in NVLINK_COUNTERS.items()}
        links.append({"link": link, "up": bool(state), **counters})
    return links


def _processes(nvml: Nvml, h: Any) -> list[dict[str, Any]] | None:
    procs = _optional(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, h)
    if procs is None:
        return None
    return [{"pid": p.pid, "used_memory_bytes": p.usedGpuMemory} for p in procs]


# ---------------------------------------------------------------- helpers for the checks

def _readable(facts: Facts) -> list[dict[str, Any]]:
    """The GPUs that answered (a lost GPU is gpu.count's finding, not every check's)."""
    return [g for g in facts["gpu"]["gpus"] if "error" not in g]


def _most(values: list[Any]) -> Any:
    """The largest known value, for OK summaries ("n/a" when NVML reported none)."""
    known = [v for v in values if v is not None]
    return max(known) if known else "n/a"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split("."))


def _at_least(actual: str, minimum: str) -> bool:
    """Numeric comparison of dotted versions: 535.104.05 >= 535.54.3, 12.10 > 12.2."""
    a, m = _version(actual), _version(minimum)
    width = max(len(a), len(m))
    return a + (0,) * (width - len(a)) >= m + (0,) * (width - len(m))


def _check_version(value: str) -> str | None:
    try:
        _version(value)
    except ValueError:
        return f"{value!r} is not a dotted version such as 535.104.05"
    return None


def _check_reasons(names: tuple[str, ...]) -> str | None:
    unknown_names = [n for n in names if n not in CLOCK_EVENT_REASONS]
    if unknown_names:
        return f"unknown clocks event reasons {unknown_names}; known: {sorted(CLOCK_EVENT_REASONS)}"
    return None


def reason_names(mask: int) -> list[str]:
    """The names of the bits set in a clocks-event bitmask."""
    return [name for name, bit in CLOCK_EVENT_REASONS.items() if mask & bit]


# ---------------------------------------------------------------- checks

@dataclass(frozen=True)
class CountParams:
    expected: int = field(doc="GPUs this node must have; 0 for a CPU node")


@check("gpu.count", "quick", ("gpu",), CountParams)
def check_count(facts: Facts, p: CountParams) -> CheckResult:
    """Exactly the expected number of GPUs, each readable through NVML."""
    if (why := section_error(facts, "gpu")) is not None:
        if p.expected == 0:
            return ok("gpu.count", f"0 GPUs expected; NVML not present ({why})")
        if isinstance(section := facts.get("gpu"), Mapping) and section.get("node_fault"):
            return crit("gpu.count", f"{why}; expected {p.expected} GPUs")
        return unknown("gpu.count", why)
    gpus = facts["gpu"]["gpus"]
    lost = [f"GPU {g['index']}: {g['error']}" for g in gpus if "error" in g]
    readable = len(gpus) - len(lost)
    problems = [] if readable == p.expected else [f"{readable} GPUs != expected {p.expected}"]
    return from_problems("gpu.count", problems + lost, f"{readable} GPUs == expected {p.expected}",
                         count=readable, names=sorted({g.get("name", "?") for g in gpus}))


@dataclass(frozen=True)
class DriverParams:
    min_driver: str = field(check=_check_version, doc="lowest driver version, e.g. 535.104.05")
    min_cuda: str = field(check=_check_version, doc="lowest CUDA version the driver supports")


@check("gpu.driver", "quick", ("gpu",), DriverParams)
def check_driver(facts: Facts, p: DriverParams) -> CheckResult:
    """Driver and its CUDA version at least min_driver and min_cuda (numeric comparison)."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.driver", why)
    driver, cuda = facts["gpu"]["driver_version"], facts["gpu"]["cuda_driver_version"]
    problems = []
    for what, actual, minimum in (("driver", driver, p.min_driver), ("CUDA", cuda, p.min_cuda)):
        if actual is None:
            problems.append(f"{what} version not reported (min {minimum})")
        elif not _at_least(actual, minimum):
            problems.append(f"{what} {actual} < min {minimum}")
    return from_problems("gpu.driver", problems, f"driver {driver} >= min {p.min_driver}, "
                         f"CUDA {cuda} >= min {p.min_cuda}", driver=driver, cuda=cuda)


@dataclass(frozen=True)
class EccParams:
    max_uncorrected_volatile: int = field(doc="uncorrected ECC errors since the last reset")
    max_corrected_volatile: int = field(doc="corrected ECC errors since the last reset")


@check("gpu.ecc", "quick", ("gpu",), EccParams)
def check_ecc(facts: Facts, p: EccParams) -> CheckResult:
    """Volatile (since driver load or GPU reset) ECC error counts at most the maxima."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.ecc", why)
    gpus = _readable(facts)
    limits = {"uncorrected_volatile": p.max_uncorrected_volatile,
              "corrected_volatile": p.max_corrected_volatile}
    if gpus and all(g["ecc"]["uncorrected_volatile"] is None for g in gpus):
        return unknown("gpu.ecc", "NVML reports no ECC counters (ECC disabled or not supported)")
    problems = [f"GPU {g['index']} {key.replace('_', ' ')} {g['ecc'][key]} > max {limit}"
                for g in gpus for key, limit in limits.items()
                if g["ecc"][key] is not None and g["ecc"][key] > limit]
    worst = {key: _most([g["ecc"][key] for g in gpus]) for key in limits}
    return from_problems(
        "gpu.ecc", problems, f"{len(gpus)} GPUs: uncorrected volatile "
        f"{worst['uncorrected_volatile']} <= max {p.max_uncorrected_volatile}, corrected "
        f"volatile {worst['corrected_volatile']} <= max {p.max_corrected_volatile}",
        counts={g["index"]: g["ecc"] for g in gpus}, findings=problems)


@dataclass(frozen=True)
class RetiredPagesParams:
    max_retired: int = field(doc="retired pages (both causes) per GPU")


@check("gpu.retired_pages", "quick", ("gpu",), RetiredPagesParams)
def check_retired_pages(facts: Facts, p: RetiredPagesParams) -> CheckResult:
    """No page retirement pending (needs a GPU reset) and at most max_retired retired pages."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.retired_pages", why)
    gpus = [g for g in _readable(facts) if g["retired_pages"]["pending"] is not None]
    if not gpus and _readable(facts):
        return ok("gpu.retired_pages", "not supported on these GPUs (Ampere and later remap "
                  "rows instead: see gpu.remapped_rows)")
    problems, totals = [], {}
    for g in gpus:
        pages = g["retired_pages"]
        total = sum(pages[cause] or 0 for cause in RETIREMENT_CAUSES)
        totals[g["index"]] = total
        if pages["pending"]:
            problems.append(f"GPU {g['index']} page retirement pending (GPU reset needed)")
        if total > p.max_retired:
            problems.append(f"GPU {g['index']} retired pages {total} > max {p.max_retired}")
    return from_problems("gpu.retired_pages", problems, f"{len(gpus)} GPUs: none "
                         f"pending, retired pages {_most(list(totals.values()))} <= max "
                         f"{p.max_retired}", retired=totals)


@dataclass(frozen=True)
class RemappedRowsParams:
    max_uncorrectable: int = field(doc="rows remapped for uncorrectable errors per GPU")


@check("gpu.remapped_rows", "quick", ("gpu",), RemappedRowsParams)
def check_remapped_rows(facts: Facts, p: RemappedRowsParams) -> CheckResult:
    """No row remapping pending or failed; uncorrectable remapped rows at most the max."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.remapped_rows", why)
    gpus = [g for g in _readable(facts) if g["remapped_rows"] is not None]
    if not gpus and _readable(facts):
        return ok("gpu.remapped_rows", "not supported on these GPUs (before Ampere pages are "
                  "retired instead: see gpu.retired_pages)")
    problems = []
    for g in gpus:
        rows, index = g["remapped_rows"], g["index"]
        if rows["pending"]:
            problems.append(f"GPU {index} row remapping pending (GPU reset needed)")
        if rows["failure"]:
            problems.append(f"GPU {index} row remapping failure (expected none)")
        if rows["uncorrectable"] > p.max_uncorrectable:
            problems.append(f"GPU {index} uncorrectable remapped rows {rows['uncorrectable']} > "
                            f"max {p.max_uncorrectable}")
    worst = _most([g["remapped_rows"]["uncorrectable"] for g in gpus])
    return from_problems("gpu.remapped_rows", problems, f"{len(gpus)} GPUs: none "
                         f"pending or failed, uncorrectable {worst} <= max {p.max_uncorrectable}",
                         rows={g["index"]: g["remapped_rows"] for g in gpus})


@dataclass(frozen=True)
class ThermalParams:
    max_temp_c: int = field(doc="GPU core temperature limit")
    bad_reasons: tuple[str, ...] = field(check=_check_reasons,
                                         doc="clocks event reasons that fail the check")


@check("gpu.thermal", "quick", ("gpu",), ThermalParams)
def check_thermal(facts: Facts, p: ThermalParams) -> CheckResult:
    """Temperature at most max_temp_c and none of the bad clocks-event (throttle) reasons."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.thermal", why)
    gpus = _readable(facts)
    problems = []
    for g in gpus:
        temp, mask = g["temperature_c"], g["clocks_event_reasons"]
        if temp is not None and temp > p.max_temp_c:
            problems.append(f"GPU {g['index']} temperature {temp} C > max {p.max_temp_c} C")
        bad = [n for n in reason_names(mask or 0) if n in p.bad_reasons]
        if bad:
            problems.append(f"GPU {g['index']} clocks event reasons {', '.join(bad)} "
                            f"(expected none of {', '.join(p.bad_reasons)})")
    return from_problems(
        "gpu.thermal", problems, f"{len(gpus)} GPUs: hottest "
        f"{_most([g['temperature_c'] for g in gpus])} C <= max {p.max_temp_c} C, none of "
        f"{', '.join(p.bad_reasons) or '(no bad reasons listed)'}",
        temperature_c={g["index"]: g["temperature_c"] for g in gpus},
        reasons={g["index"]: reason_names(g["clocks_event_reasons"] or 0) for g in gpus})


@dataclass(frozen=True)
class PowerParams:
    max_power_fraction: float = field(doc="power draw as a fraction of the enforced limit")


@check("gpu.power", "quick", ("gpu",), PowerParams)
def check_power(facts: Facts, p: PowerParams) -> CheckResult:
    """Power draw at most max_power_fraction of the enforced power limit (WARN)."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.power", why)
    gpus = [g for g in _readable(facts) if g["power_mw"] is not None and g["power_limit_mw"]]
    problems = []
    for g in gpus:
        watts, limit = g["power_mw"] / 1000, g["power_limit_mw"] / 1000
        if watts > p.max_power_fraction * limit:
            problems.append(f"GPU {g['index']} power {watts:.0f} W > max {p.max_power_fraction:g}"
                            f" x limit {limit:.0f} W")
    top = _most([g["power_mw"] / g["power_limit_mw"] for g in gpus])
    highest = top if isinstance(top, str) else f"{top:.2f}"
    return from_problems("gpu.power", problems, f"{len(gpus)} GPUs: highest {highest} x "
                         f"enforced limit <= max {p.max_power_fraction:g}", Status.WARN,
                         watts={g["index"]: g["power_mw"] / 1000 for g in gpus})


@dataclass(frozen=True)
class PcieParams:
    severity: Literal["warn", "crit"] = field(doc="status when a link is below its maximum")
    check_gen: bool = field(doc="compare the generation too (it drops at idle to save power)")


@check("gpu.pcie", "quick", ("gpu",), PcieParams)
def check_pcie(facts: Facts, p: PcieParams) -> CheckResult:
    """PCIe link width (and generation, if check_gen) at the maximum the GPU and slot allow."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.pcie", why)
    gpus = _readable(facts)
    problems = []
    for g in gpus:
        link = g["pcie"]
        if _below(link["width"], link["max_width"]):
            problems.append(f"GPU {g['index']} PCIe width x{link['width']} < max "
                            f"x{link['max_width']}")
        if p.check_gen and _below(link["gen"], link["max_gen"]):
            problems.append(f"GPU {g['index']} PCIe gen {link['gen']} < max {link['max_gen']}")
    status = Status.CRIT if p.severity == "crit" else Status.WARN
    links = sorted({f"gen {g['pcie']['gen']} x{g['pcie']['width']}" for g in gpus})
    checked = "gen and width" if p.check_gen else "width"
    return from_problems("gpu.pcie", problems, f"{len(gpus)} GPUs at {', '.join(links)}:"
                         f" {checked} == max", status, links={g["index"]: g["pcie"] for g in gpus})


def _below(actual: int | None, maximum: int | None) -> bool:
    return actual is not None and maximum is not None and actual < maximum


@dataclass(frozen=True)
class NvlinkParams:
    expected_links_up: int = field(doc="active NVLinks per GPU (0 for PCIe cards)")
    max_errors: int = field(doc="per link and counter: replay, recovery, CRC flit/data")


@check("gpu.nvlink", "quick", ("gpu",), NvlinkParams)
def check_nvlink(facts: Facts, p: NvlinkParams) -> CheckResult:
    """Each GPU has expected_links_up active NVLinks, each counter at most max_errors."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.nvlink", why)
    gpus = _readable(facts)
    problems = []
    for g in gpus:
        up = [link["link"] for link in g["nvlink"] if link["up"]]
        if len(up) < p.expected_links_up:
            down = [str(link["link"]) for link in g["nvlink"] if not link["up"]]
            problems.append(f"GPU {g['index']} NVLinks up {len(up)} < expected "
                            f"{p.expected_links_up} (down: {', '.join(down) or 'none listed'})")
        problems += _link_errors(g, p.max_errors)
    fewest = min((sum(link["up"] for link in g["nvlink"]) for g in gpus), default="n/a")
    worst = _most([link[name] for g in gpus for link in g["nvlink"] for name in NVLINK_COUNTERS])
    return from_problems("gpu.nvlink", problems, f"{len(gpus)} GPUs: fewest links up "
                         f"{fewest} >= expected {p.expected_links_up}, most errors on a link "
                         f"{worst} <= max {p.max_errors}",
                         links_up={g["index"]: sum(link["up"] for link in g["nvlink"])
                                   for g in gpus}, findings=problems)


def _link_errors(gpu: Mapping[str, Any], max_errors: int) -> list[str]:
    return [f"GPU {gpu['index']} link {link['link']} {name} errors {link[name]} > max "
            f"{max_errors}" for link in gpu["nvlink"] for name in NVLINK_COUNTERS
            if link[name] is not None and link[name] > max_errors]


@dataclass(frozen=True)
class ProcessesParams:
    max_stray_processes: int = field(doc="compute processes allowed on the GPUs before a job")


@check("gpu.processes", "quick", ("gpu",), ProcessesParams)
def check_processes(facts: Facts, p: ProcessesParams) -> CheckResult:
    """Compute processes already on the GPUs (strays from an earlier job) at most the max."""
    if (why := section_error(facts, "gpu")) is not None:
        return unknown("gpu.processes", why)
    strays = [{"gpu": g["index"], **proc} for g in _readable(facts)
              for proc in g["processes"] or []]
    listed = ", ".join(f"GPU {s['gpu']} pid {s['pid']} ({_mib(s['used_memory_bytes'])})"
                       for s in strays[:8])
    if len(strays) > p.max_stray_processes:
        return crit("gpu.processes", f"{len(strays)} compute processes > max "
                    f"{p.max_stray_processes}: {listed}", processes=strays)
    return ok("gpu.processes", f"{len(strays)} compute processes <= max "
              f"{p.max_stray_processes}", processes=strays)


def _mib(used: int | None) -> str:
    return "memory n/a" if used is None else f"{used / MIB:.0f} MiB"
