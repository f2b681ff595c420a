"""Bad input: one clear error naming the file (or flag) and the field, exit 2, no job."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from aiinfra.launcher.cli import EXIT_INPUT, main

TOKEN = f"badinput-{uuid.uuid4().hex[:8]}"
GOOD = f'name = "{TOKEN}"\ncommand = ["true"]\ntime = "1"\n'
PROFILE = 'partition = "debug"\n[partitions.debug]\nnodes = 4\n'


@dataclass(frozen=True)
class Case:
    id: str
    job: str
    words: tuple[str, ...]            # must all appear in the message
    profile: str = "local"            # a name, or PROFILE-like text written to a file
    args: tuple[str, ...] = ()
    source: str = "job"               # whose name the message must carry: job, profile, flag


CASES = [
    Case("toml-syntax", GOOD + "nodes = [\n", ("TOML syntax error",)),
    Case("unknown-key", "gpu_per_node = 8\n" + GOOD, ("gpu_per_node: unknown key", "gpus_per_node")),
    Case("wrong-type", GOOD + 'nodes = "2"\n', ("nodes: expected an integer, got a string",)),
    Case("bool-for-int", GOOD + "nodes = true\n", ("nodes: expected an integer, got a boolean",)),
    Case("negative-nodes", GOOD + "nodes = -1\n", ("nodes: must be at least 1",)),
    Case("bad-time-unit", GOOD.replace('"1"', '"1h"'), ("time:", "not a Slurm time", "D-HH:MM:SS")),
    Case("bad-time-minutes", GOOD.replace('"1"', '"00:61"'), ("time:", "seconds must be below 60")),
    Case("unknown-profile", GOOD, ("--profile", "unknown profile 'nosuch'", "local"),
         profile="nosuch", source="flag"),
    Case("inherits-cycle", GOOD, ("inherits: inheritance cycle",), profile='inherits = "@self"\n',
         source="profile"),
    Case("too-many-nodes", GOOD + "nodes = 99\n", ("nodes: 99 nodes requested", "has 4")),
    Case("command-string", GOOD.replace('["true"]', '"python train.py"'),
         ("command: expected a list",)),
    Case("command-empty", GOOD.replace('["true"]', "[]"), ("command: must be a non-empty list",)),
    Case("mem-and-mem-per-cpu", GOOD + 'mem = "4G"\nmem_per_cpu = "1G"\n',
         ("mem_per_cpu: set mem or mem_per_cpu, not both",)),
    Case("unknown-kind", GOOD + 'kind = "training"\n', ("kind: 'training' is not allowed",
                                                        "train, mpi, inference")),
    Case("env-name", GOOD + '[env]\n"MY-VAR" = "1"\n', ("env.MY-VAR: invalid environment variable name",)),
    Case("owned-sbatch", GOOD + "[sbatch]\nnodes = 2\n", ("sbatch.nodes: aiinfra sets this option itself",
                                                          "(use nodes)")),
    Case("newline-name", GOOD.replace(f'"{TOKEN}"', f'"{TOKEN}\\nx"'),
         ("name: must not contain control characters",)),
    Case("bad-memory", GOOD + 'mem = "lots"\n', ("mem: 'lots' is not a Slurm memory size",)),
    Case("gpus-over-partition", GOOD + "gpus_per_node = 1\n", ("gpus_per_node: 1 GPUs per node",)),
    Case("bad-nodes-flag", GOOD, ("--nodes: nodes: expected an integer",), args=("--nodes", "two"),
         source="flag"),
    Case("bad-time-flag", GOOD, ("--time: time:", "not a Slurm time"), args=("--time", "soon"),
         source="flag"),
    Case("unknown-set-key", GOOD, ("--set gpu: gpu: unknown key",), args=("--set", "gpu=1"),
         source="flag"),
    Case("profile-unknown-key", GOOD, ("partitionz: unknown key", "partition"),
         profile=PROFILE + 'partitionz = "x"\n', source="profile"),
    Case("profile-wrong-type", GOOD, ("partitions.debug.nodes: expected an integer",),
         profile=PROFILE.replace("nodes = 4", "nodes = 4.5"), source="profile"),
    Case("inference-no-server", GOOD + 'kind = "inference"\n', ("server: an inference job needs",)),
    Case("missing-job-file", "", ("cannot read",)),
    # hostile input (issue 8): each was a silent failure or a traceback before
    Case("nul-in-env", GOOD + '[env]\nX = "a\\u0000b"\n', ("env.X: must not contain a NUL",)),
    Case("nul-in-argv", GOOD.replace('["true"]', '["a\\u0000"]'),
         ("command[0]: must not contain a NUL",)),
    Case("not-an-sbatch-option", GOOD, ("--set sbatch.hetjob", "not an sbatch long option"),
         args=("--set", "sbatch.hetjob=true"), source="flag"),
    Case("sbatch-option-typo", GOOD + '[sbatch]\nmail-typ = "END"\n',
         ("sbatch.mail-typ: 'mail-typ' is not an sbatch long option", "did you mean mail-type")),
    Case("sbatch-refused-option", GOOD + "[sbatch]\nwait = true\n",
         ("--wait is not allowed here",)),
    Case("sbatch-value-newline", GOOD + '[sbatch]\ncomment = "a\\nb"\n',
         ("sbatch.comment: the value must not contain control characters",)),
    Case("bind-with-comma", GOOD + '[container]\nimage = "i.sif"\nbinds = ["/x,y:/z"]\n',
         ("container.binds: '/x,y:/z' contains a comma",)),
    Case("huge-nodes-from-set", GOOD, ("--set nodes: nodes: 100000000000000000000 nodes",),
         args=("--set", "nodes=100000000000000000000"), source="flag"),
    Case("backslash-log-dir", GOOD + 'log_dir = "logs\\\\x"\n', ("log_dir: must not contain a backslash",)),
    Case("newline-log-dir", GOOD + 'log_dir = "logs\\nx"\n', ("log_dir: must not contain control",)),
    Case("profile-bind-comma", GOOD, ("container.binds: '/a,b' contains a comma",),
         profile=PROFILE + '[container]\nbinds = ["/a,b"]\n', source="profile"),
    Case("profile-partition-newline", GOOD, ("partitions.a\\nb: invalid partition name",),
         profile='partition = "debug"\n[partitions."a\\nb"]\nnodes = 1\n[partitions.debug]\n'
                 'nodes = 4\n', source="profile"),
]


def run_case(case: Case, tmp: Path) -> tuple[int, str, Path, Path | None]:
    job = tmp / "job.toml"
    if case.id != "missing-job-file":
        job.write_text(case.job)
    profile_ref, profile_path = case.profile, None
    if "\n" in case.profile:
        profile_path = tmp / "site.toml"
        profile_path.write_text(case.profile.replace("@self", str(profile_path)))
        profile_ref = str(profile_path)
    result = CliRunner().invoke(main, ["submit", str(job), "--profile", profile_ref, *case.args])
    return result.exit_code, result.output, job, profile_path


def test_the_matrix_is_large_enough() -> None:
    assert len(CASES) >= 15
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_clear_error(case: Case, tmp_path: Path) -> None:
    code, output, job, profile = run_case(case, tmp_path)
    assert code == EXIT_INPUT, output
    assert output.startswith("Error: ")
    assert "Traceback" not in output
    assert "nothing was submitted" in output
    for words in case.words:
        assert words in output, output
    expected_source = {"job": str(job), "profile": str(profile),
                       "flag": case.args[0] if case.args else "--profile"}[case.source]
    assert expected_source in output


@pytest.mark.slurm
def test_bad_input_submits_nothing(cluster: None, tmp_path: Path) -> None:
    """With the real sbatch on PATH, no case may leave a job behind."""
    for case in CASES:
        sub = tmp_path / case.id
        sub.mkdir()
        assert run_case(case, sub)[0] == EXIT_INPUT
    queued = subprocess.run(["squeue", "--noheader", "--format=%j"], capture_output=True,
                            text=True, check=True).stdout
    accounted = subprocess.run(["sacct", "--noheader", "--parsable2", "--allusers",
                                "--starttime=now-1hour", "--format=JobName"],
                               capture_output=True, text=True, check=True).stdout
    assert TOKEN not in queued and TOKEN not in accounted


def test_dependencies_render_as_one_sbatch_value() -> None:
    from aiinfra.launcher.submit import dependency

    assert dependency([("afterok", "12"), ("afterany", "14"), ("afterok", "13_2")]) == \
        "afterok:12:13_2,afterany:14"


@pytest.mark.parametrize("bad", ["x", "12;rm -rf /", "0", "12_", "-1", ""])
def test_a_dependency_that_is_not_a_job_id_is_refused(bad: str) -> None:
    from aiinfra.launcher.errors import SpecError
    from aiinfra.launcher.submit import dependency

    with pytest.raises(SpecError, match="--after-notok: job id: .* is not a Slurm job id"):
        dependency([("afternotok", bad)])
