"""kernel.log over kernel logs recorded on real machines (tests/fixtures/kernlog, see its
README for each file's source): every class, every format, the policy, the collector."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aiinfra.health import kernel, kernlog, registry
from aiinfra.health.facts import CollectContext
from aiinfra.health.kernlog import Stamp, Window, scan, split_prefix
from aiinfra.health.result import Status
from aiinfra.health.runner import evaluate
from aiinfra.launcher.files import package_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kernlog"
AIINFRA = str(Path(sys.executable).parent / "aiinfra")
DMESG_DENIED = (1, "", "dmesg: read kernel buffer failed: Operation not permitted\n")
NO_JOURNAL = (0, "-- No entries --\n", "No journal files were found.\n")


def log(name: str) -> str:
    return (FIXTURES / f"{name}.log").read_text()


def events(text: str, table: dict[str, Any] | None = None) -> Counter[str]:
    """Events per class (a group's count summed) in a whole text."""
    found = kernel.scan_text(text, table or {}).as_json()["findings"]
    counts: Counter[str] = Counter()
    for f in found:
        counts[f["class"]] += f["count"]
    return counts


# ---------------------------------------------------------------- every fixture, every class

# Events per class in each recorded log (repeated lines are one finding with a count).
EXPECTED: dict[str, dict[str, int]] = {
    "crucible_1844_io_error": {"disk.io_error": 2},
    "edacutils_10_ce_dmesg_T": {"cpu.machine_check": 1, "memory.edac_corrected": 1},
    "ganesha_1295_nfs": {"nfs.not_responding": 3},
    "gpuburn_1_aer_xid79": {"gpu.xid": 1, "pcie.aer_fatal": 1, "pcie.aer_corrected": 1},
    "gpud_348_mlx5_power": {"nic.pcie_power": 1},
    "gpud_kmsg_nvswitch": {},
    "gpud_kmsg_peermem": {"gpu.peermem_invalid_context": 7},
    "gpud_matcher_examples": {
        "disk.raid_failure": 1, "fs.read_only": 3, "nvme.no_path": 1, "nvme.timeout": 1,
        "nvme.disabled": 1, "disk.io_error": 3, "cpu.hung_task": 3, "cpu.soft_lockup": 5,
        "nfs.not_responding": 1, "nic.module_temperature": 1, "gpu.nvlink_rx_detect": 3},
    "gpud_memory_decode_iso": {"gpu.xid": 17, "memory.oom_kill": 3},
    "gpud_nccl_decode_iso": {"nccl.segfault": 2},
    "gpud_os_decode_iso": {"os.file_max": 2},
    "gpud_pr1209_syslog": {},
    "gpud_pstore_panic": {"kernel.panic": 1},
    "gpud_sxid_readme": {"gpu.xid": 1, "gpu.fallen_off_bus": 1, "gpu.sxid": 4},
    "gpud_xid119_dmesg_T": {"gpu.xid": 5},
    "gpud_xid_nvlink5": {"gpu.xid": 9},
    "gpuoperator_2511_mlx5_near_miss": {},
    "jade_14_lustre_dmesg_T": {"lustre.error": 1},
    "jmb585_64_aer_corrected": {"pcie.aer_corrected": 4},
    "kickstart_1328_raid_near_miss": {},
    "lkml_aer_nonfatal": {"pcie.aer_nonfatal": 1},
    "lkml_edac_ue_mce": {"memory.edac_uncorrected": 2, "cpu.machine_check": 2},
    "logrotate_232_hung_task_dmesg_T": {"cpu.hung_task": 1},
    "netdev_netkit_mlx5_link_down": {"ib.link_down": 1},
    "nvmecli_151_nvme_removed": {"nvme.timeout": 2, "nvme.disabled": 2},
    "nvsentinel_155_fallen_off_bus": {"gpu.fallen_off_bus": 1},
    "osm_300_edac_ce_syslog": {"cpu.machine_check": 1, "memory.edac_corrected": 7},
    "propolis_578_nvme_abort": {},
    "rockchip_970_ext4_readonly": {"fs.read_only": 1, "disk.io_error": 3},
    "rpi_6661_mount_ro_syslog": {},
    "spdk_1502_buffer_io": {"disk.io_error": 4},
}

# For each class, a recorded line (fixture, exact text) that looks like it and must not match.
NEAR_MISSES: dict[str, tuple[str, str]] = {
    "gpu.xid": ("gpud_xid119_dmesg_T", "[Sun Feb 23 16:24:18 2025] NVRM: GPU at PCI:0000:9b:00: "
                "GPU-509665ad-b600-ac93-3616-d754b23d636d"),
    "gpu.sxid": ("gpud_sxid_readme", "[6781753.406566] nvidia-nvswitch0: SXid (PCI:0000:05:00.0):"
                 " 20034, Data {0x10000000, 0x10000000, 0x00000000, 0x10000000, 0x00000000, "
                 "0x00000000, 0x00000000, 0x00000000, 0x00000000}"),
    "gpu.fallen_off_bus": ("nvsentinel_155_fallen_off_bus",
                           "[ 1843.439662] NVRM: The NVIDIA probe routine failed for 1 device(s)."),
    "gpu.nvlink_rx_detect": ("gpud_xid119_dmesg_T", "[Sun Feb 23 16:24:18 2025] NVRM:      0    "
                             "4115 NVLINK_INBAND_RECEIVE 0x0000000000000000 0x0000000000000000 "
                             "0x00062e099d8f14e7 0x00062e099d8f14eb      4us"),
    "gpu.peermem_invalid_context": ("gpud_kmsg_peermem", "6,3973,227996662,-;test"),
    "nccl.segfault": ("gpud_xid119_dmesg_T", "[Sun Feb 23 16:24:18 2025] WARNING: kernel stack "
                      "frame pointer at 000000005611dc97 in nvidia-smi:2024380 has bad value "
                      "00000000ec717e66"),
    "nic.pcie_power": ("gpuoperator_2511_mlx5_near_miss", "1702 [   22.648340] mlx5_core "
                       "0000:63:00.0: mlx5_pcie_event:297:(pid 2071): PCIe slot power capability "
                       "was not advertised."),
    "nic.module_temperature": ("gpud_matcher_examples", "mlx5_cmd_out_err:838:(pid 1441871): "
                               "ACCESS_REG(0x805) op_mod(0x1) failed, status bad resource(0x5), "
                               "syndrome (0x305684), err(-22)"),
    "ib.link_down": ("gpud_pr1209_syslog", "Feb 14 05:03:41 000-000-00000-1-gpu-1 kernel: "
                     "mlx5_core 0000:ab:00.0 mlx5_5: Port: 1 Link INIT"),
    "cpu.hung_task": ("logrotate_232_hung_task_dmesg_T", "[Wed Dec 19 03:36:07 2018] \"echo 0 > "
                      "/proc/sys/kernel/hung_task_timeout_secs\" disables this message."),
    "cpu.soft_lockup": ("gpud_xid119_dmesg_T", "[Sun Feb 23 16:24:30 2025] clocksource: Long "
                        "readout interval, skipping watchdog check: cs_nsec: 1584036171 wd_nsec:"
                        " 1584036160"),
    "cpu.machine_check": ("lkml_edac_ue_mce", "[   77.633600] EDAC skx MC3: CPU 0: Machine Check "
                          "Event: 0x0 Bank 25: 0xac00000200a00090"),
    "memory.oom_kill": ("gpud_memory_decode_iso", "kern  :warn  : 2025-01-21T08:41:30,287197+00:00"
                        " oom_reaper: reaped process 345646 (vector), now anon-rss:0kB, "
                        "file-rss:0kB, shmem-rss:0"),
    "memory.edac_uncorrected": ("lkml_edac_ue_mce", "[   77.627894] EDAC skx MC3: HANDLING MCE "
                                "MEMORY ERROR"),
    "memory.edac_corrected": ("edacutils_10_ce_dmesg_T", "[Mon Jan 27 19:27:15 2020] EDAC sbridge"
                              " MC0: HANDLING MCE MEMORY ERROR"),
    "pcie.aer_fatal": ("lkml_aer_nonfatal", "[   50.947817] pcieport 0000:00:1b.0: DPC: unmasked "
                       "uncorrectable error detected"),
    "pcie.aer_nonfatal": ("gpuburn_1_aer_xid79", "[74889.542125] pcieport 0000:00:02.0:   device "
                          "[8086:6f04] error status/mask=00000020/00000000"),
    "pcie.aer_corrected": ("jmb585_64_aer_corrected", "[    3.499148] pcieport 0000:00:1d.0: AER: "
                           "Multiple Corrected error received: id=00e8"),
    "disk.raid_failure": ("kickstart_1328_raid_near_miss", "23:54:39,681 INFO kernel:md/raid1:md0:"
                          " active with 2 out of 2 mirrors"),
    "fs.read_only": ("rpi_6661_mount_ro_syslog", "Jun 02 16:29:19 argon kernel: EXT4-fs (nvme0n1p2)"
                     ": mounted filesystem fc7a1f9e-4967-4f41-a1f5-1b5927e6c5f9 ro with ordered "
                     "data mode. Quota mode: none."),
    "nvme.no_path": ("nvmecli_151_nvme_removed", "[11483.115530] nvme nvme2: Device not ready; "
                     "aborting reset"),
    "nvme.timeout": ("propolis_578_nvme_abort", "[  265.311275] nvme nvme1: I/O 775 QID 2 timeout,"
                     " aborting"),
    "nvme.disabled": ("lkml_aer_nonfatal", "[   50.947843] nvme nvme0: frozen state error "
                      "detected, reset controller"),
    "disk.io_error": ("spdk_1502_buffer_io", "[275808.417987] buffer_io_error: 266 callbacks "
                      "suppressed"),
    "nfs.not_responding": ("ganesha_1295_nfs", "[871222.760083] nfs: server 100.73.159.36 OK"),
    "lustre.error": ("jade_14_lustre_dmesg_T", "[Mon Oct 16 09:50:06 2017] Lustre: 2449:0:"
                     "(client.c:2141:ptlrpc_expire_one_request()) Skipped 24 previous similar "
                     "messages"),
    "kernel.panic": ("gpud_pstore_panic", "<4>[ 3098.275499]  panic+0x15c/0x33b"),
    "os.file_max": ("gpud_kmsg_nvswitch", "6,3990,251895583,-;Initializing XFRM netlink socket"),
}


def test_every_fixture_has_its_expected_counts() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_events_per_class_in_each_recorded_log(name: str) -> None:
    assert dict(events(log(name))) == EXPECTED[name]


def test_every_class_has_a_recorded_example_and_a_near_miss() -> None:
    classes = {s.cls for s in kernel.builtin_signatures()}
    recorded = {cls for counts in EXPECTED.values() for cls in counts}
    assert classes == recorded == set(NEAR_MISSES)
    assert len(classes) >= 28


@pytest.mark.parametrize("cls", sorted(NEAR_MISSES))
def test_each_near_miss_is_recorded_and_does_not_match(cls: str) -> None:
    name, line = NEAR_MISSES[cls]
    assert line in log(name).splitlines()
    assert events(line + "\n") == Counter()


# ---------------------------------------------------------------- the examples (CLI)

def scan_log(name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([AIINFRA, "health", "scan-log", str(FIXTURES / f"{name}.log"),
                           "--json", *extra], capture_output=True, text=True, check=False)
    return proc.returncode, json.loads(proc.stdout)


def brief(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(f["class"], f["code"], f["device"], f["process"], f["count"], f["action"])
            for f in report["findings"]]


def test_decode_prefixed_gpud_log_yields_all_17_xids() -> None:
    status, report = scan_log("gpud_memory_decode_iso")
    assert status == 1 and report["status"] == "WARN"
    xids = [f for f in brief(report) if f[0] == "gpu.xid"]
    assert xids == [("gpu.xid", 13, "GPU 0000:38:00.0", None, 16, "warn"),
                    ("gpu.xid", 43, "GPU 0000:38:00.0", "pt_main_thread", 1, "warn")]
    first = report["findings"][0]
    assert (first["first"], first["last"]) == ("2025-01-21T04:41:44.283302+00:00",
                                               "2025-01-21T04:41:44.285147+00:00")
    assert next(f for f in report["findings"] if f["code"] == 43)["pid"] == 2924364


def test_multi_line_fallen_off_the_bus_without_an_xid() -> None:
    status, report = scan_log("nvsentinel_155_fallen_off_bus")
    assert status == 2 and brief(report) == [
        ("gpu.fallen_off_bus", None, "GPU 0000:b3:00.0", None, 1, "drain")]
    assert report["findings"][0]["line"] == (
        "[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0 NVRM: (PCI ID: 10de:26b5) installed "
        "in this system has NVRM: fallen off the bus and is not responding to commands.")
    assert report["findings"][0]["first"] == "boot+1843.308145s"  # a saved file stays relative


def test_fatal_sxid_from_the_nvswitch_drains() -> None:
    status, report = scan_log("gpud_sxid_readme")
    assert status == 2
    sxids = [f for f in report["findings"] if f["class"] == "gpu.sxid"]
    assert [(f["device"], f["code"], f["count"], f["action"]) for f in sxids] == [
        ("NVSwitch 0 (0000:05:00.0)", 20034, 2, "drain"),
        ("NVSwitch 1 (0000:06:00.0)", 20034, 1, "drain"),
        ("NVSwitch 2 (0000:07:00.0)", 20034, 1, "drain")]
    assert sxids[1]["line"] == ("[6781753.400584] nvidia-nvswitch1: SXid (PCI:0000:06:00.0): "
                                "20034, Fatal, Link 48 LTSSM Fault Up")


def test_scan_log_table_for_people() -> None:
    proc = subprocess.run([AIINFRA, "health", "scan-log", str(FIXTURES / "gpud_nccl_decode_iso.log")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[1] == (
        "  warn   nccl.segfault by pt_main_thread[2536443] x2 (warn: a process crashed inside "
        "libnccl.so: an NCCL communication failure)  [2025-01-21T04:41:44.285060+00:00 .. "
        "2025-01-21T04:42:44.285060+00:00]")


# ---------------------------------------------------------------- formats

def first_line(name: str) -> str:
    return log(name).splitlines()[0]


@pytest.mark.parametrize(("name", "stamp", "message"), [
    ("gpud_memory_decode_iso", Stamp(1737434504.283302, False), "NVRM: Xid (PCI:0000:38:00): 13"),
    ("gpud_xid119_dmesg_T", Stamp(1740327858.0, False), "NVRM: GPU at PCI:0000:9b:00"),
    ("nvsentinel_155_fallen_off_bus", Stamp(1843.308145, True), "NVRM: The NVIDIA GPU"),
    ("gpud_pstore_panic", Stamp(1393.305485, True), "IPv6: ADDRCONF"),
    ("gpud_kmsg_peermem", Stamp(227.996636, True), "nvidia-peermem nv_get_p2p_free_callback"),
    ("osm_300_edac_ce_syslog", Stamp(datetime(2026, 5, 7, 6, 45, 12).timestamp(), False),
     "mce: [Hardware Error]"),
    ("gpud_348_mlx5_power", Stamp(1733064880.0, False), "mlx5_core 0000:5c:00.0"),
])
def test_every_format_gives_time_and_message(name: str, stamp: Stamp, message: str) -> None:
    got, text, is_kernel = split_prefix(first_line(name), 2026)
    assert got is not None and got.relative == stamp.relative
    assert got.seconds == pytest.approx(stamp.seconds) and text.startswith(message) and is_kernel


def test_journal_short_iso_kernel_and_userspace_lines() -> None:
    # journalctl -o short-iso lines from the gpud PR 1209 log, re-stamped in ISO form by
    # the same rule: "host kernel:" is the kernel, "host prog[pid]:" is not.
    stamp, text, is_kernel = split_prefix(
        "2026-02-14T05:03:41+0000 000-000-00000-1-gpu-1 kernel: mlx5_core 0000:ab:00.0 mlx5_5: "
        "Port: 1 Link INIT", 2026)
    assert stamp == Stamp(1771045421.0, False) and is_kernel and text.startswith("mlx5_core")
    assert not split_prefix(first_line("gpud_pr1209_syslog"), 2026)[2]


def test_userspace_lines_of_a_syslog_never_match() -> None:
    systemd = [line for line in log("gpud_pr1209_syslog").splitlines() if "systemd[1]" in line]
    assert len(systemd) == 5 and all(not split_prefix(line, 2026)[2] for line in systemd)


def test_a_line_without_a_prefix_has_no_time() -> None:
    assert split_prefix("block nvme0n1: no available path - failing I/O", 2026) == (
        None, "block nvme0n1: no available path - failing I/O", True)


@pytest.mark.parametrize(("address", "normal"), [
    ("0000:38:00", "0000:38:00.0"), ("18:00.0", "0000:18:00.0"), ("00000000:9B:00.0", "0000:9b:00.0"),
    ("0009:01:00", "0009:01:00.0"), ("mlx5_0", "mlx5_0")])
def test_pci_addresses_are_normalised(address: str, normal: str) -> None:
    assert kernlog.normal_pci(address) == normal


def test_formats_mixed_in_one_file_are_each_read() -> None:
    mixed = "".join(log(n) for n in ("gpud_memory_decode_iso", "gpud_kmsg_peermem",
                                     "nvsentinel_155_fallen_off_bus", "osm_300_edac_ce_syslog"))
    assert events(mixed) == Counter({"gpu.xid": 17, "memory.oom_kill": 3,
                                     "gpu.peermem_invalid_context": 7, "gpu.fallen_off_bus": 1,
                                     "cpu.machine_check": 1, "memory.edac_corrected": 7})


# ---------------------------------------------------------------- policy

def actions(name: str, table: dict[str, Any]) -> dict[tuple[str, Any], str]:
    found = kernel.scan_text(log(name), table).as_json()["findings"]
    return {(f["class"], f["code"]): f["action"] for f in found}


def test_application_xids_warn_and_name_the_process() -> None:
    found = kernel.scan_text(log("gpud_memory_decode_iso"), {}).as_json()["findings"]
    xid43 = next(f for f in found if f["code"] == 43)
    assert (xid43["action"], xid43["process"], xid43["pid"]) == ("warn", "pt_main_thread", 2924364)


def test_site_policy_overrides_codes_classes_and_storms() -> None:
    assert actions("gpud_memory_decode_iso", {"xid_policy": {"13": "ignore"}})[("gpu.xid", 13)] \
        == "ignore"
    assert actions("gpud_sxid_readme", {"sxid_policy": {"20034": "warn"}})[("gpu.sxid", 20034)] \
        == "warn"
    assert actions("gpud_nccl_decode_iso", {"actions": {"nccl.segfault": "drain"}}) == {
        ("nccl.segfault", None): "drain"}
    assert actions("jmb585_64_aer_corrected", {}) == {("pcie.aer_corrected", None): "ignore"}
    assert actions("jmb585_64_aer_corrected", {"storm_counts": {"pcie.aer_corrected": 4}}) == {
        ("pcie.aer_corrected", None): "warn"}
    assert actions("netdev_netkit_mlx5_link_down", {"storm_counts": {"ib.link_down": 1}}) == {
        ("ib.link_down", None): "drain"}


def test_nvlink5_xids_reported_fatal_drain() -> None:
    found = kernel.scan_text(log("gpud_xid_nvlink5"), {}).as_json()["findings"]
    xid149 = [f for f in found if f["code"] == 149]
    assert {(f["device"], f["count"], f["severity"], f["action"]) for f in xid149} == {
        ("GPU 0008:01:00.0", 2, "Fatal", "drain"), ("GPU 0009:01:00.0", 3, "Fatal", "drain")}
    assert all(f["reason"].startswith("reported Fatal: NVLink5 NETIR") for f in xid149)


@pytest.mark.parametrize(("default", "action"), [("warn", "warn"), ("drain", "drain"),
                                                 ("ignore", "ignore")])
def test_unlisted_codes_take_the_default_action(default: str, action: str) -> None:
    line = "NVRM: Xid (0000:03:00): 14, Channel 00000001\n"  # quoted in gpud's Xid matcher
    found = kernel.scan_text(line, {"default_action": default}).as_json()["findings"]
    assert [(f["code"], f["action"], f["reason"]) for f in found] == [
        (14, action, "not in the XID policy table")]


def test_a_site_adds_a_signature_in_its_profile() -> None:
    site = {"class": "lnet.timeout", "keyword": "Timed out tx for",
            "pattern": r"Timed out tx for (?P<server>\S+):", "device": "peer {server}",
            "action": "drain", "reason": "LNet peer unreachable"}
    found = kernel.scan_text(log("jade_14_lustre_dmesg_T"), {"signatures": [site]}).as_json()
    assert [(f["class"], f["device"], f["count"], f["action"]) for f in found["findings"]] == [
        ("lnet.timeout", "peer 172.31.126.87@o2ib", 2, "drain"),
        ("lustre.error", "", 1, "warn")]


def test_gpu_findings_name_the_nvml_index_and_uuid() -> None:
    groups = scan(log("gpud_memory_decode_iso"), kernel.all_signatures())
    gpus = kernel.gpu_map({"gpu": {"gpus": [
        {"index": 3, "uuid": "GPU-509665ad-b600-ac93-3616-d754b23d636d",
         "pci_bus_id": "00000000:38:00.0"}]}})
    found = kernel.findings(groups, kernel.KernelLogParams(), gpus)
    xid13 = next(f for f in found if f["code"] == 13)
    assert (xid13["gpu_index"], xid13["gpu_uuid"]) == (3, "GPU-509665ad-b600-ac93-3616-d754b23d636d")
    assert "on GPU 0000:38:00.0 (GPU 3) x16" in kernel.describe(xid13)


BAD_PARAMS = [
    ({"xid_policy": {"abc": "drain"}}, "keys must be code numbers"),
    ({"sxid_policy": {"20034": "reboot"}}, "'reboot' is not allowed"),
    ({"actions": {"gpu.nope": "drain"}}, "unknown classes ['gpu.nope']"),
    ({"signatures": [{"class": "x", "keyword": "k", "pattern": "(", "action": "warn",
                      "reason": "r"}]}, "signature x: pattern:"),
    ({"signatures": [{"class": "x", "keyword": "k", "pattern": "k", "action": "panic",
                      "reason": "r"}]}, "signature x: action 'panic' not in"),
]


@pytest.mark.parametrize(("table", "words"), BAD_PARAMS, ids=[w for _, w in BAD_PARAMS])
def test_bad_params_are_unknown_with_the_reason(table: dict[str, Any], words: str) -> None:
    facts = {"kernlog": {"source": "dmesg", "now": "2026-01-01T00:00:00+00:00",
                         "window_hours": 24, "lines": 0, "groups": []}}
    result = evaluate(registry.checks()["kernel.log"], facts, table, "site")
    assert result.status == Status.UNKNOWN and words in result.summary


def test_policy_files_ship_inside_the_package() -> None:
    for name in (kernel.SIGNATURE_FILE, kernel.POLICY_FILE):
        assert (package_dir("aiinfra.health") / name).is_file()
    xid, sxid = kernel.code_policy()["xid"], kernel.code_policy()["sxid"]
    assert {13: "warn", 31: "warn", 43: "warn", 48: "drain", 79: "drain"} == {
        c: xid[c][0] for c in (13, 31, 43, 48, 79)}
    assert sxid[20034][0] == "drain" and sxid[11012][0] == "ignore"


# ---------------------------------------------------------------- collector and check

NOW = datetime(2025, 1, 21, 10, 0, tzinfo=timezone.utc)


class FakeRun:
    """Answers dmesg and journalctl with fixed (status, stdout, stderr); records the argv."""

    def __init__(self, **answers: tuple[int, str, str]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        return self.answers.get(argv[0], (127, "", "No such file or directory"))


def ctx(**table: Any) -> CollectContext:
    return CollectContext("dgx-017", "quick", {"kernel.log": {"window_hours": 24, **table}})


def test_collector_keeps_the_window_of_the_live_log() -> None:
    run = FakeRun(dmesg=(0, log("gpud_memory_decode_iso"), ""))
    section = kernel.collect_kernlog(ctx(window_hours=3), run=run, now=NOW)  # from 07:00
    assert (section["source"], section["window_hours"], section["lines"]) == ("dmesg", 3, 24)
    assert Counter(g["class"] for g in section["groups"]) == Counter({"memory.oom_kill": 2})
    assert run.calls == [["dmesg", "--time-format=iso"]]


def test_collector_falls_back_to_journalctl_since_the_window_start() -> None:
    run = FakeRun(dmesg=DMESG_DENIED, journalctl=(0, log("gpud_memory_decode_iso"), ""))
    section = kernel.collect_kernlog(ctx(), run=run, now=NOW)
    assert section["source"] == "journalctl" and len(section["groups"]) == 4
    since = (NOW - timedelta(hours=24)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert run.calls[1] == ["journalctl", "-k", "-o", "short-iso", "--no-pager", "--since", since]


def test_no_readable_kernel_log_is_unknown_with_both_reasons() -> None:
    section = kernel.collect_kernlog(ctx(), run=FakeRun(dmesg=DMESG_DENIED, journalctl=NO_JOURNAL),
                                     now=NOW)
    assert section == {"error": "kernel log unreadable: dmesg --time-format=iso: dmesg: read "
                                "kernel buffer failed: Operation not permitted; journalctl -k: "
                                "no kernel messages (No journal files were found.)"}
    result = kernel.check_kernel_log({"kernlog": section}, kernel.KernelLogParams())
    assert result.status == Status.UNKNOWN and result.summary == f"kernel.log: {section['error']}"


def test_live_since_boot_stamps_become_absolute_with_the_boot_time() -> None:
    boot = NOW.timestamp() - 2000
    groups = scan(log("nvsentinel_155_fallen_off_bus"), kernel.all_signatures(),
                  Window(since=NOW.timestamp() - 3600, boot=boot))
    assert groups[0]["first"] == datetime.fromtimestamp(boot + 1843.308145, timezone.utc).isoformat()
    old = scan(log("nvsentinel_155_fallen_off_bus"), kernel.all_signatures(),
               Window(since=NOW.timestamp() - 60, boot=boot))
    assert old == []  # logged 157 s before NOW: outside a one-minute window


def test_boot_time_from_proc_stat(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  1 2 3\nbtime 1737420000\nprocesses 5\n")
    assert kernel.boot_time(tmp_path / "stat") == 1737420000.0
    assert kernel.boot_time(tmp_path / "missing") is None


def test_log_file_threshold_reads_a_saved_log_and_the_check_drains() -> None:
    path = FIXTURES / "nvsentinel_155_fallen_off_bus.log"
    section = kernel.collect_kernlog(ctx(log_file=str(path)), run=FakeRun(), now=NOW)
    assert section["source"] == f"file {path}"
    result = kernel.check_kernel_log({"kernlog": section}, kernel.KernelLogParams())
    assert result.status == Status.CRIT
    assert result.summary == (
        "kernel.log: gpu.fallen_off_bus on GPU 0000:b3:00.0 x1 (drain: GPU fell off the bus "
        "without an Xid (multi-line form, driver 570+): reboot; check PCIe, power, cooling)")


def test_an_unreadable_log_file_is_an_error(tmp_path: Path) -> None:
    section = kernel.collect_kernlog(ctx(log_file=str(tmp_path / "none.log")), run=FakeRun())
    assert section["error"].startswith(f"kernel log file unreadable: {tmp_path / 'none.log'}: ")


def test_warn_only_and_ignored_findings() -> None:
    section = kernel.collect_kernlog(ctx(log_file=str(FIXTURES / "ganesha_1295_nfs.log")),
                                     run=FakeRun())
    assert kernel.check_kernel_log({"kernlog": section}, kernel.KernelLogParams()).status == \
        Status.WARN
    section = kernel.collect_kernlog(ctx(log_file=str(FIXTURES / "jmb585_64_aer_corrected.log")),
                                     run=FakeRun())
    result = kernel.check_kernel_log({"kernlog": section}, kernel.KernelLogParams())
    assert result.status == Status.OK and result.summary.endswith(", 1 ignored by policy")


def test_this_machine_gives_a_section_or_a_reason() -> None:
    section = kernel.collect_kernlog(ctx())
    assert "error" in section or section["source"] in ("dmesg", "journalctl")


# ---------------------------------------------------------------- aiinfra health run --check

def test_run_only_the_named_check(tmp_path: Path) -> None:
    profile = tmp_path / "site.toml"
    profile.write_text('inherits = "local"\n[health.thresholds."kernel.log"]\n'
                       f'log_file = "{FIXTURES / "gpud_sxid_readme.log"}"\n')
    proc = subprocess.run([AIINFRA, "health", "run", "--profile", str(profile), "--check",
                           "kernel.log", "--json", "--node", "node1"], capture_output=True,
                          text=True, check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 2 and [c["name"] for c in report["checks"]] == ["kernel.log"]
    assert report["checks"][0]["summary"].startswith("kernel.log: gpu.fallen_off_bus on GPU "
                                                     "0000:91:00.0 x1 (drain:")


def test_an_unknown_check_name_is_an_input_error() -> None:
    proc = subprocess.run([AIINFRA, "health", "run", "--check", "gpu.xid"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2 and "--check: gpu.xid: unknown check (valid: " in proc.stderr
