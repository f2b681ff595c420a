"""Helpers for tests that submit to the real dev cluster through the real CLI."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE")


def job_env() -> dict[str, str]:
    """The submitting environment: this interpreter's bin first (python3, torchrun)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def aiinfra(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(Path(sys.executable).parent / "aiinfra"), *args], cwd=REPO,
                          env=job_env(),
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"aiinfra {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def submit(job_file: str | Path, log_dir: Path, *extra: str) -> dict[str, str]:
    out = aiinfra("submit", str(job_file), "--profile", "local", "--json",
                  "--set", f"log_dir={log_dir}", *extra).stdout
    data: dict[str, str] = json.loads(out)
    return data


def sacct_row(job_id: str) -> dict[str, str]:
    fields = ["State", "ExitCode", "NodeList", "NNodes"]
    out = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs",
                          job_id, f"--format={','.join(fields)}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return dict(zip(fields, out.splitlines()[0].split("|"))) if out else {}


def wait_final(job_id: str, timeout_s: float = 180, nodes: int | None = None) -> dict[str, str]:
    """The job's accounting row once it is final and the same on two reads in a row.

    slurmdbd is updated asynchronously: for a moment after a short job ends, its row can
    still carry only the batch host (even beside NNodes=2). With ``nodes``, wait until its
    NodeList names that many nodes."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        row = sacct_row(job_id)
        settled = row and row["State"].split()[0] in FINAL and row == last \
            and not still_queued(job_id)
        if settled and (nodes is None or len(hostnames(row["NodeList"])) == nodes):
            return row
        last = row
        time.sleep(1)
    subprocess.run(["scancel", job_id], check=False)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s: {sacct_row(job_id)}")


def still_queued(job_id: str) -> bool:
    """slurmctld still has the job pending or running: a NODE_FAIL or PREEMPTED record in
    sacct may be a run that Slurm has just requeued (measured: NODE_FAIL on two reads a
    second apart, then the requeued run's record)."""
    out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id],
                         capture_output=True, text=True).stdout
    state = re.search(r"JobState=(\S+)", out)
    return state is not None and state[1] not in FINAL


def wait_for_file(path: Path, job_id: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            return path.read_text()
        row = sacct_row(job_id)
        if row and row["State"].split()[0] in FINAL:
            raise AssertionError(f"job {job_id} ended ({row}) before {path} appeared")
        time.sleep(0.5)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


def wait_status(job_id: str, prefix: str, timeout_s: float = 60) -> dict[str, object]:
    """`aiinfra status --json` once its state starts with ``prefix``."""
    deadline = time.monotonic() + timeout_s
    while True:
        state: dict[str, object] = json.loads(aiinfra("status", job_id, "--json").stdout)
        if str(state["state"]).startswith(prefix) or time.monotonic() > deadline:
            return state
        time.sleep(1)


def hostnames(nodelist: str) -> list[str]:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def wait_for_text(path: Path, pattern: str, job_id: str, timeout_s: float = 240) -> re.Match[str]:
    """The first match of ``pattern`` in the file at ``path``, waiting for it to appear."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text() if path.is_file() else "")
        if found:
            return found
        row = sacct_row(job_id)
        if row and row["State"].split()[0] in FINAL:
            raise AssertionError(f"job {job_id} ended ({row}) before {pattern!r} in {path}")
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in {path} within {timeout_s} s")


def ledger_of(log: Path, job_id: str) -> list[dict[str, object]]:
    path = log.with_name(log.name.replace(f"-{job_id}.log", f"-{job_id}.ledger.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def attempt_log(log: Path, attempt: object) -> Path:
    return log.with_name(f"{log.stem}.attempt{attempt}.log")


@functools.cache
def reference_checksum(steps: int) -> str:
    """examples/train_ddp.py uninterrupted on this machine (2 ranks, no Slurm)."""
    out = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone",
                          "--nproc-per-node=2", "examples/train_ddp.py", "--steps", str(steps)],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    return re.findall(r"final_checksum=([0-9a-f]{64})", out.stdout)[0]


def checksums(text: str) -> list[str]:
    return re.findall(r"final_checksum=([0-9a-f]{64})", text)
