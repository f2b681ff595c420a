"""GPU checks over NVML return values replayed from fixtures (tests/fixtures/nvml/*.json)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aiinfra.health import gpu, registry
from aiinfra.health.facts import CollectContext
from aiinfra.health.result import Status
from aiinfra.health.runner import evaluate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvml"
CTX = CollectContext("dgx-017", "quick", {})

# The strings pynvml's NVMLError prints for the nvmlReturn_t codes the fixtures use.
NVML_STRINGS = {2: "Invalid Argument", 3: "Not Supported", 9: "Driver Not Loaded",
                12: "NVML Shared Library Not Found", 13: "Function Not Found",
                15: "GPU is lost"}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(NVML_STRINGS.get(value, f"NVML error {value}"))
        self.value = value


class Replay:
    """Answers NVML calls from a fixture, with pynvml's function names and NVMLError.

    A device's handle is its index. Arguments after the handle select inside the recorded
    value: a list by position (NVLink index), a table by the enum value as a string. A value
    {"NVMLError": N} raises NVMLError(N); a function the fixture lacks raises 13
    FUNCTION_NOT_FOUND, an argument it lacks 2 INVALID_ARGUMENT (as NVML does for a link
    past the device's last).
    """

    NVMLError = NVMLError

    def __init__(self, data: dict[str, Any]) -> None:
        self.system = data.get("system", {})
        self.devices = data.get("devices", [])

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("nvml"):
            raise AttributeError(name)
        return lambda *args: self._answer(name, args)

    def _answer(self, name: str, args: tuple[Any, ...]) -> Any:
        if name in ("nvmlInit", "nvmlShutdown"):
            return _value(self.system.get(name))
        if name == "nvmlDeviceGetHandleByIndex":
            _value(self.devices[args[0]].get(name))
            return args[0]
        if not name.startswith("nvmlDevice") or name == "nvmlDeviceGetCount":
            return _value(self.system.get(name, {"NVMLError": 13}))
        value = self.devices[args[0]].get(name, {"NVMLError": 13})
        for arg in args[1:]:
            value = _select(_value(value), arg)
        return _value(value)


def _value(value: Any) -> Any:
    if isinstance(value, dict) and "NVMLError" in value:
        raise NVMLError(value["NVMLError"])
    if isinstance(value, dict) and not all(key.isdigit() for key in value):
        return SimpleNamespace(**value)  # a struct, e.g. nvmlPciInfo_t
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [SimpleNamespace(**item) for item in value]  # nvmlProcessInfo_t
    return value


def _select(value: Any, arg: int) -> Any:
    try:
        return value[arg] if isinstance(value, list) else value[str(arg)]
    except (IndexError, KeyError):
        raise NVMLError(2) from None


def fixture(state: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{state}.json").read_text())
    return data


def facts_for(state: str) -> dict[str, Any]:
    return {"gpu": gpu.collect_gpu(CTX, nvml=Replay(fixture(state)))}


# The DGX H100 thresholds (see the profile block in the hand-over note).
DGX = {
    "gpu.count": gpu.CountParams(8),
    "gpu.driver": gpu.DriverParams("535.104.05", "12.2"),
    "gpu.ecc": gpu.EccParams(0, 1000),
    "gpu.retired_pages": gpu.RetiredPagesParams(60),
    "gpu.remapped_rows": gpu.RemappedRowsParams(8),
    "gpu.thermal": gpu.ThermalParams(85, ("hw_slowdown", "hw_thermal_slowdown",
                                          "hw_power_brake_slowdown", "sw_thermal_slowdown")),
    "gpu.power": gpu.PowerParams(0.95),
    "gpu.pcie": gpu.PcieParams("crit", True),
    "gpu.nvlink": gpu.NvlinkParams(18, 100),
    "gpu.processes": gpu.ProcessesParams(0),
}


def run(name: str, facts: dict[str, Any], params: Any = None) -> Any:
    return registry.checks()[name].func(facts, DGX[name] if params is None else params)


# ---------------------------------------------------------------- collector

def test_collector_reads_every_field_of_a_healthy_h100_node() -> None:
    section = facts_for("h100_good")["gpu"]
    assert (section["driver_version"], section["cuda_driver_version"]) == ("535.104.05", "12.2")
    assert section["count"] == len(section["gpus"]) == 8
    g = section["gpus"][0]
    assert (g["index"], g["name"], g["pci_bus_id"]) == (0, "NVIDIA H100 80GB HBM3",
                                                         "00000000:18:00.0")
    assert g["uuid"].startswith("GPU-")
    assert g["ecc"] == {"uncorrected_volatile": 0, "corrected_volatile": 0}
    assert g["retired_pages"] == {"pending": None, "multiple_single_bit_ecc": None,
                                  "double_bit_ecc": None}  # NOT_SUPPORTED on H100: null
    assert g["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False,
                                  "failure": False}
    assert (g["temperature_c"], g["power_mw"], g["power_limit_mw"]) == (31, 70123, 700000)
    assert gpu.reason_names(g["clocks_event_reasons"]) == ["gpu_idle"]
    assert g["pcie"] == {"gen": 5, "max_gen": 5, "width": 16, "max_width": 16}
    assert [link["link"] for link in g["nvlink"]] == list(range(18))
    assert g["nvlink"][0] == {"link": 0, "up": True, "replay": 0, "recovery": 0, "crc_flit": 0,
                              "crc_data": 0}
    assert g["processes"] == []


def test_facts_survive_a_json_record_and_replay() -> None:
    facts = facts_for("h100_stray_process")
    assert json.loads(json.dumps(facts)) == facts


def test_not_supported_fields_are_null_and_the_device_stays_readable() -> None:
    section = facts_for("v100_retired_pages")["gpu"]
    assert all("error" not in g for g in section["gpus"])
    assert {g["remapped_rows"] is None for g in section["gpus"]} == {True}
    assert section["gpus"][1]["retired_pages"] == {"pending": True, "multiple_single_bit_ecc": 3,
                                                   "double_bit_ecc": 2}
    assert len(section["gpus"][0]["nvlink"]) == 6


def test_older_drivers_answer_through_the_throttle_reasons_name() -> None:
    data = fixture("h100_thermal")
    for device in data["devices"]:
        device["nvmlDeviceGetCurrentClocksThrottleReasons"] = device.pop(
            "nvmlDeviceGetCurrentClocksEventReasons")
    section = gpu.collect_gpu(CTX, nvml=Replay(data))
    assert section["gpus"][4]["clocks_event_reasons"] == 0x48


def test_a_lost_gpu_is_marked_and_the_others_are_read() -> None:
    section = facts_for("h100_gpu_lost")["gpu"]
    assert section["gpus"][3] == {"index": 3, "error": "GPU is lost"}
    assert all("error" not in g for i, g in enumerate(section["gpus"]) if i != 3)


@pytest.mark.parametrize(("state", "error", "node_fault"), [
    ("no_library", "NVML not available: NVML Shared Library Not Found", True),
    ("driver_not_loaded", "NVML init failed: Driver Not Loaded", True),
])
def test_nvml_init_failures_are_errors_not_tracebacks(state: str, error: str,
                                                      node_fault: bool) -> None:
    assert facts_for(state)["gpu"] == {"error": error, "node_fault": node_fault}


def test_without_pynvml_the_section_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    section = gpu.collect_gpu(CTX)
    assert section["error"].startswith("NVML not available: ") and not section["node_fault"]


@pytest.mark.parametrize("block", [False, True], ids=["lazy", "absent"])
def test_the_modules_import_without_pynvml(block: bool) -> None:
    """Importing registers every check and leaves pynvml unloaded, whether it is installed
    or not (None in sys.modules makes `import pynvml` fail)."""
    code = ("import sys\n"
            f"if {block}: sys.modules['pynvml'] = None\n"
            "from aiinfra.health import registry, gpu, kernel, ib\n"
            "names = set(registry.checks())\n"
            "assert {'gpu.count', 'kernel.log', 'ib.ports', 'ib.errors'} <= names, names\n"
            "print(sorted(m for m, mod in sys.modules.items() if 'nvml' in m and mod))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- checks

def test_every_gpu_check_passes_on_the_healthy_node() -> None:
    facts = facts_for("h100_good")
    results = {name: run(name, facts) for name in DGX}
    assert {name: r.status for name, r in results.items()} == dict.fromkeys(DGX, Status.OK)
    assert results["gpu.count"].summary == "gpu.count: 8 GPUs == expected 8"
    assert results["gpu.driver"].summary == ("gpu.driver: driver 535.104.05 >= min 535.104.05, "
                                             "CUDA 12.2 >= min 12.2")
    assert results["gpu.pcie"].summary == "gpu.pcie: 8 GPUs at gen 5 x16: gen and width == max"
    assert "not supported on these GPUs" in results["gpu.retired_pages"].summary


BAD_STATES = [
    ("h100_gpu_lost", "gpu.count", Status.CRIT,
     "gpu.count: 7 GPUs != expected 8; GPU 3: GPU is lost"),
    ("h100_old_driver", "gpu.driver", Status.CRIT,
     "gpu.driver: driver 525.85.12 < min 535.104.05; CUDA 12.0 < min 12.2"),
    ("h100_ecc_errors", "gpu.ecc", Status.CRIT,
     "gpu.ecc: GPU 3 uncorrected volatile 12 > max 0"),
    ("v100_retired_pages", "gpu.retired_pages", Status.CRIT,
     "gpu.retired_pages: GPU 1 page retirement pending (GPU reset needed)"),
    ("h100_row_remap", "gpu.remapped_rows", Status.CRIT,
     "gpu.remapped_rows: GPU 2 row remapping pending (GPU reset needed); GPU 6 row remapping "
     "failure (expected none); GPU 6 uncorrectable remapped rows 9 > max 8"),
    ("h100_thermal", "gpu.thermal", Status.CRIT,
     "gpu.thermal: GPU 4 temperature 92 C > max 85 C; GPU 4 clocks event reasons hw_slowdown, "
     "hw_thermal_slowdown (expected none of hw_slowdown, hw_thermal_slowdown, "
     "hw_power_brake_slowdown, sw_thermal_slowdown)"),
    ("h100_power", "gpu.power", Status.WARN,
     "gpu.power: GPU 1 power 690 W > max 0.95 x limit 700 W"),
    ("h100_pcie_degraded", "gpu.pcie", Status.CRIT,
     "gpu.pcie: GPU 5 PCIe width x8 < max x16; GPU 5 PCIe gen 4 < max 5"),
    ("h100_nvlink_errors", "gpu.nvlink", Status.CRIT,
     "gpu.nvlink: GPU 6 NVLinks up 16 < expected 18 (down: 4, 5); GPU 6 link 7 replay errors "
     "1843 > max 100"),
    ("h100_stray_process", "gpu.processes", Status.CRIT,
     "gpu.processes: 2 compute processes > max 0: GPU 0 pid 48213 (2052 MiB), "
     "GPU 1 pid 48213 (520 MiB)"),
]


@pytest.mark.parametrize(("state", "name", "status", "summary"), BAD_STATES,
                         ids=[s[0] for s in BAD_STATES])
def test_each_bad_state_fails_its_check_naming_actual_and_expected(
        state: str, name: str, status: Status, summary: str) -> None:
    result = run(name, facts_for(state))
    assert (result.status, result.summary) == (status, summary)


@pytest.mark.parametrize("state", [s[0] for s in BAD_STATES])
def test_each_bad_state_fails_only_its_own_checks(state: str) -> None:
    facts = facts_for(state)
    failing = {name for name in DGX if run(name, facts).status != Status.OK}
    expected = {s[1] for s in BAD_STATES if s[0] == state}
    if state == "v100_retired_pages":  # a DGX-1 under H100 limits: 6 links; its DBEs count
        expected |= {"gpu.nvlink", "gpu.ecc"}
    assert failing == expected


def test_pcie_severity_and_generation_come_from_the_params() -> None:
    facts = facts_for("h100_pcie_degraded")
    width_only = run("gpu.pcie", facts, gpu.PcieParams("warn", False))
    assert width_only.status == Status.WARN
    assert width_only.summary == "gpu.pcie: GPU 5 PCIe width x8 < max x16"


def test_retired_pages_count_limit() -> None:
    result = run("gpu.retired_pages", facts_for("v100_retired_pages"),
                 gpu.RetiredPagesParams(4))
    assert "GPU 1 retired pages 5 > max 4" in result.summary


def test_remapped_rows_are_not_applicable_before_ampere() -> None:
    result = run("gpu.remapped_rows", facts_for("v100_retired_pages"))
    assert result.status == Status.OK and "see gpu.retired_pages" in result.summary


@pytest.mark.parametrize(("actual", "minimum", "expected"), [
    ("535.104.05", "535.104.05", True), ("535.104.05", "535.54.03", True),
    ("525.147.05", "535.104.05", False), ("12.10", "12.2", True), ("12.2", "12.2.0", True),
    ("550", "535.104.05", True),
])
def test_versions_compare_numerically(actual: str, minimum: str, expected: bool) -> None:
    assert gpu._at_least(actual, minimum) is expected


# ---------------------------------------------------------------- no NVML

def test_cpu_nodes_pass_gpu_count_with_zero_expected() -> None:
    facts = facts_for("no_library")
    result = run("gpu.count", facts, gpu.CountParams(0))
    assert result.status == Status.OK
    assert result.summary == ("gpu.count: 0 GPUs expected; NVML not present (NVML not "
                              "available: NVML Shared Library Not Found)")


def test_a_gpu_node_whose_driver_failed_is_crit() -> None:
    result = run("gpu.count", facts_for("driver_not_loaded"))
    assert result.status == Status.CRIT
    assert result.summary == "gpu.count: NVML init failed: Driver Not Loaded; expected 8 GPUs"


def test_a_missing_python_binding_is_unknown_not_crit() -> None:
    facts = {"gpu": {"error": "NVML not available: No module named 'pynvml'", "node_fault": False}}
    assert run("gpu.count", facts).status == Status.UNKNOWN


@pytest.mark.parametrize("name", [n for n in DGX if n != "gpu.count"])
def test_other_checks_are_unknown_with_the_reason(name: str) -> None:
    result = run(name, facts_for("no_library"))
    assert result.status == Status.UNKNOWN
    assert result.summary == f"{name}: NVML not available: NVML Shared Library Not Found"


def test_missing_section_is_unknown() -> None:
    assert run("gpu.count", {}).summary == "gpu.count: no 'gpu' facts were collected"


def test_unknown_throttle_reason_names_are_rejected_with_the_valid_list() -> None:
    result = evaluate(registry.checks()["gpu.thermal"], facts_for("h100_good"),
                      {"max_temp_c": 85, "bad_reasons": ["too_hot"]}, "site")
    assert result.status == Status.UNKNOWN
    assert "unknown clocks event reasons ['too_hot']" in result.summary
    assert "hw_thermal_slowdown" in result.summary


def test_params_from_a_profile_table_build() -> None:
    table = {"min_driver": "535.104.05", "min_cuda": "12.2"}
    good = evaluate(registry.checks()["gpu.driver"], facts_for("h100_good"), table, "site")
    assert good.status == Status.OK
    bad = evaluate(registry.checks()["gpu.driver"], facts_for("h100_good"),
                   {**table, "min_cuda": "twelve"}, "site")
    assert bad.status == Status.UNKNOWN and "not a dotted version" in bad.summary


def test_replay_does_not_change_the_fixture() -> None:
    data = fixture("h100_good")
    before = copy.deepcopy(data)
    gpu.collect_gpu(CTX, nvml=Replay(data))
    assert data == before
