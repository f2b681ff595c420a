"""Host checks over a /proc tree in the kernel's formats, and over this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiinfra.health import host
from aiinfra.health.facts import CollectContext
from aiinfra.health.result import Status

MEMINFO = "MemTotal:       263842376 kB\nMemFree:         1022136 kB\nMemAvailable:   201234564 kB\n"
MOUNTS = ("/dev/sda1 / ext4 rw,relatime 0 0\nproc /proc proc rw,nosuid 0 0\n"
          "lustre@o2ib:/fs /lustre lustre rw,flock 0 0\n"
          "/dev/sdb1 /mnt/with\\040space ext4 rw 0 0\n")
STATS = {
    1: "1 (systemd) S 0 1 1 0 -1 4194560 5000 0 0 0",
    200: "200 (munged) S 1 200 200 0 -1 4194560 50 0 0 0",
    301: "301 (slurmd) S 1 301 301 0 -1 4194560 50 0 0 0",
    4242: "4242 (nfs stuck (x)) D 1 4242 4242 0 -1 4194560 50 0 0 0",
}


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "meminfo").write_text(MEMINFO)
    (root / "mounts").write_text(MOUNTS)
    for pid, stat in STATS.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(stat + "\n")
    (root / "self").mkdir()  # not a pid: ignored
    return root


def collect(proc: Path, disk_path: str | None = None) -> dict:
    thresholds = {"host.disk": {"path": disk_path}} if disk_path else {}
    ctx = CollectContext("n1", "quick", thresholds)
    return {"host": host.collect_host(ctx, proc, lambda seconds: None)}


def test_a_process_that_leaves_d_state_before_the_recheck_is_not_stuck(proc: Path) -> None:
    """Healthy processes pass through D state for milliseconds (I/O, page faults): only one
    still there after DSTATE_RECHECK_S counts. Another enters D state meanwhile: not counted
    either (it was not in the first sample)."""
    (proc / "301" / "stat").write_text(STATS[301].replace(" S ", " D ", 1) + "\n")
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        (proc / "301" / "stat").write_text(STATS[301] + "\n")          # its read completed
        (proc / "200" / "stat").write_text(STATS[200].replace(" S ", " D ", 1) + "\n")
        (proc / "4242" / "stat").write_text(STATS[4242] + "\n")        # still D

    ctx = CollectContext("n1", "quick", {})
    facts = host.collect_host(ctx, proc, sleep)
    assert waited == [host.DSTATE_RECHECK_S]
    assert facts["dstate"] == [{"pid": 4242, "comm": "nfs stuck (x)"}]


def test_no_d_state_process_means_no_wait(proc: Path) -> None:
    (proc / "4242" / "stat").write_text(STATS[4242].replace(" D ", " S ", 1) + "\n")
    waited: list[float] = []
    facts = host.collect_host(CollectContext("n1", "quick", {}), proc, waited.append)
    assert (facts["dstate"], waited) == ([], [])


def test_collector_reads_proc(proc: Path, tmp_path: Path) -> None:
    facts = collect(proc, str(tmp_path))["host"]
    assert facts["meminfo_kib"] == {"MemTotal": 263842376, "MemAvailable": 201234564}
    assert facts["mounts"] == ["/", "/lustre", "/mnt/with space", "/proc"]
    assert facts["dstate"] == [{"pid": 4242, "comm": "nfs stuck (x)"}]
    assert {"munged", "slurmd", "systemd"} <= set(facts["processes"])
    disk = facts["disks"][str(tmp_path)]
    assert disk["writable"] and disk["free_bytes"] > 0
    assert not list(tmp_path.glob(".aiinfra-health-*"))  # the probe file is gone


def test_a_missing_disk_path_is_an_error(proc: Path) -> None:
    facts = collect(proc, "/no/such/dir")
    assert "No such file" in facts["host"]["disks"]["/no/such/dir"]["error"]
    result = host.check_disk(facts, host.DiskParams("/no/such/dir", 1))
    assert result.status == Status.CRIT and "/no/such/dir" in result.summary


def test_memory(proc: Path) -> None:
    facts = collect(proc)
    assert host.check_memory(facts, host.MemoryParams(200)).status == Status.OK
    bad = host.check_memory(facts, host.MemoryParams(512))
    assert bad.status == Status.CRIT and bad.summary == "host.memory: 251.6 GiB < min 512 GiB"


def test_mounts(proc: Path) -> None:
    facts = collect(proc)
    assert host.check_mounts(facts, host.MountsParams(("/lustre",))).status == Status.OK
    bad = host.check_mounts(facts, host.MountsParams(("/lustre", "/scratch")))
    assert bad.status == Status.CRIT and bad.summary == "host.mounts: /scratch not mounted"


def test_dstate(proc: Path) -> None:
    facts = collect(proc)
    assert host.check_dstate(facts, host.DstateParams(1)).status == Status.OK
    bad = host.check_dstate(facts, host.DstateParams(0))
    assert bad.status == Status.CRIT
    assert bad.summary == "host.dstate: 1 D-state processes > max 0 (nfs stuck (x)[4242])"


def test_daemons(proc: Path) -> None:
    facts = collect(proc)
    assert host.check_daemons(facts, host.DaemonsParams(("munged", "slurmd"))).status == Status.OK
    bad = host.check_daemons(facts, host.DaemonsParams(("munged", "nvidia-persistenced")))
    assert bad.summary == "host.daemons: nvidia-persistenced not running"


def test_cpu(proc: Path) -> None:
    facts = collect(proc)
    cpus = facts["host"]["cpus"]
    assert host.check_cpu(facts, host.CpuParams(cpus)).status == Status.OK
    assert host.check_cpu(facts, host.CpuParams(cpus + 1)).summary == (
        f"host.cpu: {cpus} CPUs < min {cpus + 1}")


def test_disk_full_and_read_only(proc: Path) -> None:
    facts = {"host": {"disks": {"/tmp": {"free_bytes": 512 * 1024**2, "size_bytes": 1,
                                         "writable": False, "write_error": "Read-only file system"}}}}
    bad = host.check_disk(facts, host.DiskParams("/tmp", 1))
    assert bad.status == Status.CRIT
    assert bad.summary == ("host.disk: /tmp free 0.5 GiB < min 1 GiB; "
                           "/tmp not writable (Read-only file system)")


@pytest.mark.parametrize("func,params", [
    (host.check_cpu, host.CpuParams(1)), (host.check_memory, host.MemoryParams(1)),
    (host.check_disk, host.DiskParams("/", 1)), (host.check_mounts, host.MountsParams(())),
    (host.check_dstate, host.DstateParams(0)), (host.check_daemons, host.DaemonsParams(())),
])
def test_missing_facts_are_unknown_with_the_reason(func, params) -> None:  # type: ignore[no-untyped-def]
    result = func({"host": {"error": "permission denied"}}, params)
    assert result.status == Status.UNKNOWN and result.summary.endswith(": permission denied")
