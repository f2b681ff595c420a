"""The examples and the CLI against the real dev cluster (scripts/dev-cluster.sh up)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from aiinfra.launcher import slurm
from aiinfra.launcher.errors import SlurmError
from slurmjobs import (REPO, aiinfra, hostnames, job_env, submit, wait_final, wait_for_file,
                       wait_status)

pytestmark = pytest.mark.slurm


def step_log(job: dict[str, str], attempt: int = 0) -> str:
    log = Path(job["log"])
    return log.with_name(log.name.replace(".log", f".attempt{attempt}.log")).read_text()


def assert_completed_on_two_nodes(job_id: str) -> None:
    row = wait_final(job_id, nodes=2)
    assert row["State"] == "COMPLETED", row
    assert row["ExitCode"] == "0:0"
    assert len(set(hostnames(row["NodeList"]))) == 2


def test_train_ddp_matches_a_single_machine_run(cluster: None, tmp_path: Path) -> None:
    job = submit("examples/train_ddp.toml", tmp_path)
    reference = subprocess.run(
        [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node=2",
         "--no-python", sys.executable, "examples/train_ddp.py", "--steps", "20"],
        cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=300, check=True).stdout
    assert_completed_on_two_nodes(job["job_id"])
    out = step_log(job)
    assert "world_size=2" in out
    found = re.findall(r"final_checksum=([0-9a-f]{64})", out)
    expected = re.findall(r"final_checksum=([0-9a-f]{64})", reference)
    assert found and found == expected
    assert set(re.findall(r"host=(node\d)", out)) == set(hostnames(
        wait_final(job["job_id"], nodes=2)["NodeList"]))
    batch_log = Path(job["log"]).read_text()
    assert "attempt 0 command returned 0" in batch_log
    assert "final: COMPLETED: the command completed" in batch_log


def test_mpi_allreduce(cluster: None, tmp_path: Path) -> None:
    job = submit("examples/mpi_allreduce.toml", tmp_path)
    assert_completed_on_two_nodes(job["job_id"])
    match = re.search(r"allreduce_sum=(\d+) expected=(\d+) size=2 nodes=(\S+)", step_log(job))
    assert match, step_log(job)
    assert match.group(1) == match.group(2) == "3"
    assert len(match.group(3).split(",")) == 2


def test_mpi_allreduce_with_two_ranks_per_node(cluster: None, tmp_path: Path) -> None:
    job = submit("examples/mpi_allreduce.toml", tmp_path, "--set", "tasks_per_node=2")
    assert_completed_on_two_nodes(job["job_id"])
    assert "allreduce_sum=10 expected=10 size=4" in step_log(job)


def _serve_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("serve_example", REPO / "examples/serve.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _post(url: str, data: object) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def test_inference_server_is_probed_through_its_endpoint_file(cluster: None,
                                                              tmp_path: Path) -> None:
    job = submit("examples/serve.toml", tmp_path)
    endpoint_file = tmp_path / f"serve-tp-{job['job_id']}.endpoint"
    try:
        url = wait_for_file(endpoint_file, job["job_id"]).strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:18080", url)
        with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
            assert json.loads(response.read()) == {"status": "ok", "world_size": 2}
        x = [1.0, -2.0, 0.5, 3.0]
        answer = _post(f"{url}/v1/infer", {"input": x})
        import torch

        expected = (_serve_module().weights() @ torch.tensor(x)).tolist()
        assert answer["world_size"] == 2
        assert answer["output"] == pytest.approx(expected, rel=1e-6)
        _post(f"{url}/shutdown", {})
    except BaseException:
        subprocess.run(["scancel", job["job_id"]], check=False)  # leave no server behind
        raise
    assert_completed_on_two_nodes(job["job_id"])


NASTY = ["it's", 'say "hi"', "$(touch /tmp/pwned)", "`id`", "a;b", "x && y", "line1\nline2",
         "*", "$HOME", "\\", "--flag=$((1+1))", ""]


def test_shell_metacharacters_reach_the_program_literally(cluster: None,
                                                          tmp_path: Path) -> None:
    name = "q'\"$(id)`id`;&|<>*"
    program = ("import json, os, sys; print('PAYLOAD=' + json.dumps({'argv': sys.argv[1:], "
               "'env': os.environ['NASTY'], 'name': os.environ['SLURM_JOB_NAME']}))")
    job_file = tmp_path / "nasty.toml"
    job_file.write_text(
        f"name = {json.dumps(name)}\nkind = \"train\"\nlauncher = \"srun\"\n"
        f"command = {json.dumps(['python3', '-c', program, *NASTY])}\ntime = \"2\"\n"
        f"[env]\nNASTY = {json.dumps(NASTY[0] + NASTY[2] + NASTY[6])}\n")
    job = submit(job_file, tmp_path / "logs")
    row = wait_final(job["job_id"])
    assert row["State"] == "COMPLETED", (row, Path(job["log"]).read_text())
    payload = json.loads(step_log(job).split("PAYLOAD=", 1)[1].splitlines()[0])
    assert payload == {"argv": NASTY, "env": NASTY[0] + NASTY[2] + NASTY[6], "name": name}
    assert not Path("/tmp/pwned").exists()


def test_dry_run_prints_exactly_what_is_submitted(cluster: None, tmp_path: Path) -> None:
    args = ("submit", "examples/mpi_allreduce.toml", "--profile", "local",
            "--set", f"log_dir={tmp_path}")
    dry = aiinfra(*args, "--dry-run").stdout
    job = json.loads(aiinfra(*args, "--json").stdout)
    assert Path(job["script"]).read_text() == dry
    assert f"# Run with:  sbatch --parsable {job['script']}" in dry
    wait_final(job["job_id"])


def test_status_and_cancel(cluster: None, tmp_path: Path) -> None:
    job_file = tmp_path / "sleep.toml"
    job_file.write_text('name = "sleeper"\nlauncher = "srun"\ncommand = ["sleep", "300"]\n'
                        'time = "10"\n')
    job_id = submit(job_file, tmp_path)["job_id"]
    live = json.loads(aiinfra("status", job_id, "--json").stdout)
    assert live["job_id"] == job_id and live["name"] == "sleeper"
    assert live["state"] in ("PENDING", "RUNNING", "CONFIGURING")
    assert "cancelled" in aiinfra("cancel", job_id).stdout
    row = wait_final(job_id, 60)
    assert row["State"].startswith("CANCELLED")
    # squeue may still say COMPLETING for a moment; then the state is sacct's
    assert str(wait_status(job_id, "CANCELLED")["state"]).startswith("CANCELLED")


def test_sbatch_refusals_are_typed_errors(cluster: None, tmp_path: Path) -> None:
    script = tmp_path / "bad.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --partition=no-such-partition\ntrue\n")
    with pytest.raises(SlurmError) as err:
        slurm.sbatch(script)
    assert err.value.argv == ("sbatch", "--parsable", str(script))
    assert err.value.returncode not in (0, None)
    assert "invalid partition" in err.value.stderr.lower()


def test_more_nodes_than_the_partition_is_refused_by_slurm_too(cluster: None,
                                                               tmp_path: Path) -> None:
    """Behind aiinfra's own check, the cluster (EnforcePartLimits=ALL) refuses as well."""
    script = tmp_path / "wide.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --nodes=5\ntrue\n")
    with pytest.raises(SlurmError) as err:
        slurm.sbatch(script)
    assert "Node count specification invalid" in err.value.stderr


def test_the_cli_reports_slurm_refusals_in_one_line(cluster: None, tmp_path: Path) -> None:
    job_file = tmp_path / "job.toml"
    job_file.write_text('name = "x"\ncommand = ["true"]\n[sbatch]\nreservation = "nope"\n')
    proc = aiinfra("submit", str(job_file), "--profile", "local", "--set",
                   f"log_dir={tmp_path}", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: Slurm: sbatch --parsable ")
    assert "Traceback" not in proc.stderr
