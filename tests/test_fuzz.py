"""Property-based fuzzing of job files, `--set` values, profiles and job ids (issue 8).

Every drawn input ends in exactly one of two ways: exit 2 naming the file or flag and the
field, with nothing written and nothing submitted; or a script that passes `bash -n` and
shellcheck and, run by bash against recording stubs, delivers every value byte for byte.
CI runs a fixed seed and a bounded count; `pytest -m fuzz` runs the long, random version.
Defects the harness found are kept below as explicit examples.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from aiinfra.launcher.cli import EXIT_INPUT, main
from aiinfra.launcher.snapshot import read_snapshot
from fuzz_support import (HOSTILE, NAMES, SBATCH_KEYS, bash_n, calls, launch_call,
                          make_stubs, run_script, safe_relative, shellcheck, to_toml)

CI_EXAMPLES = int(os.environ.get("AIINFRA_FUZZ_EXAMPLES", "150"))
LONG_EXAMPLES = int(os.environ.get("AIINFRA_FUZZ_LONG_EXAMPLES", "2000"))


def ci(test: Callable[..., None]) -> Callable[..., None]:
    return settings(max_examples=CI_EXAMPLES, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])(test)


def long(test: Callable[..., None]) -> Callable[..., None]:
    marked = pytest.mark.fuzz(test)
    return settings(max_examples=LONG_EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])(marked)


# ---------------------------------------------------------------- drawn jobs

SHAPES = {"torchrun": {}, "srun": {"launcher": "srun"},
          "mpirun": {"kind": "mpi", "tasks_per_node": 2},
          "mpi-srun": {"kind": "mpi", "launcher": "srun"},
          "serve": {"kind": "inference"}, "vllm": {"kind": "inference"}}


@st.composite
def jobs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    shape = draw(st.sampled_from(sorted(SHAPES)))
    job: dict[str, Any] = {"name": draw(HOSTILE), "time": "5", **SHAPES[shape]}
    if shape == "vllm":
        job["server"] = {"preset": "vllm", "model": draw(HOSTILE),
                         "args": draw(st.lists(HOSTILE, max_size=3))}
    else:
        job["command"] = draw(st.lists(HOSTILE, min_size=1, max_size=4))
        if shape == "serve":
            job["server"] = {"port": draw(st.integers(0, 70000))}
    job["env"] = draw(st.dictionaries(NAMES, HOSTILE, max_size=3))
    job["sbatch"] = draw(st.dictionaries(SBATCH_KEYS, HOSTILE | st.booleans(), max_size=2))
    if draw(st.booleans()):
        job["log_dir"] = safe_relative(draw(HOSTILE))
    if draw(st.booleans()):
        job["checkpoint"] = {"dir": draw(HOSTILE)}
    if draw(st.booleans()) and shape != "mpirun":
        job["container"] = {"image": draw(HOSTILE), "runtime": "apptainer",
                            "binds": draw(st.lists(HOSTILE, max_size=2))}
    sets = draw(st.lists(st.sampled_from(["env.SEED", "name", "nodes", "log_dir", "time"])
                         .flatmap(lambda k: st.tuples(st.just(k), HOSTILE)), max_size=2))
    return job, [f"{k}={safe_relative(v) if k == 'log_dir' else v}" for k, v in sets]


def expected(job: dict[str, Any], sets: list[str],
             profile_env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    """What the program must receive: its argv tail, words it must hold in a row, and its
    environment (job over profile)."""
    env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", **profile_env,
           **job.get("env", {})}
    for text in sets:
        key, _, value = text.partition("=")
        if key == "env.SEED":
            env["SEED"] = value
    server = job.get("server", {})
    if server.get("preset") == "vllm":
        return list(server["args"]), ["vllm", "serve", server["model"]], env
    return job["command"], [], env


def _is_input_error(code: int, output: str, sources: list[str]) -> bool:
    return (code == EXIT_INPUT and output.startswith("Error: ")
            and "nothing was submitted" in output and "Traceback" not in output
            and any(re.match(rf"Error: {re.escape(src)}[: ]", output) for src in sources))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "calls" not in p.parts}


def check_job(job: dict[str, Any], sets: list[str], profile: dict[str, Any] | None = None) -> None:
    profile_text = profile_toml(profile) if profile else ""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bin_dir = make_stubs(root)
        site = root / "site.toml"
        site.write_text('inherits = "local"\n' f'aiinfra = "{bin_dir}/aiinfra-stub"\n'
                        + profile_text)
        job_file = root / "job.toml"
        job_file.write_text(to_toml(job))
        before = _files(root)
        args = ["submit", str(job_file), "-p", str(site), "--json"]
        for text in sets:
            args += ["--set", text]
        old = os.getcwd()
        os.chdir(root)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_DIR": str(root)}
        try:
            result = CliRunner().invoke(main, args, env=env)
        finally:
            os.chdir(old)
        if result.exit_code != 0:
            event(f"refused: {result.output.split(':')[2].strip() if result.output.count(':') > 2 else '?'}")
            sources = [str(job_file), str(site), "--set"]
            assert _is_input_error(result.exit_code, result.output, sources), result.output
            assert not (root / "sbatch").exists(), "an input error submitted a job"
            assert _files(root) == before, "an input error wrote files"
            return
        event("accepted: script run and checked")
        _check_script(root, bin_dir, job, sets, result.output, profile or {})


def _check_script(root: Path, bin_dir: Path, job: dict[str, Any], sets: list[str],
                  output: str, profile: dict[str, Any]) -> None:
    script = Path((root / "sbatch").read_text().split("\n")[1])
    assert script.is_file() and '"job_id": "31337"' in output
    assert bash_n(script) is None, bash_n(script)
    assert shellcheck(script) is None, shellcheck(script)
    snapshot = next(script.parent.glob("*.snapshot.json"))
    assert read_snapshot(snapshot).job.job.name  # the job can read what was submitted
    run_script(script, root, bin_dir)
    tail, inside, env = expected(job, sets, profile.get("env", {}))
    found = calls(root)
    call = launch_call(found, tail, inside)
    for key, value in env.items():
        assert call.env.get(key.encode()) == value.encode(), (key, call.env.get(key.encode()))
    loads = [c.argv[1:] for c in found if c.argv[0] == b"module"]
    assert loads == [[b"load", m.encode()] for m in profile.get("modules", [])]


@ci
@given(jobs())
@example(({"name": "x", "command": ["true"], "env": {"PATH": "/opt/bin"}}, []))
@example(({"name": "x", "command": ["true"], "env": {"X": "a\x00b"}}, []))
@example(({"name": "x", "command": ["true"], "log_dir": "d/%u/%j"}, []))
@example(({"name": "n" * 300, "command": ["true"]}, []))
@example(({"name": "x", "command": ["true"], "sbatch": {"hetjob": True}}, []))
@example(({"name": "x", "command": ["true"], "container": {"image": "i", "runtime": "apptainer",
                                                            "binds": ["/x,y:/z"]}}, []))
@example(({"name": "x", "command": ["true"]}, ["nodes=100000000000000000000"]))
@example(({"name": "x", "command": ["$(id)", "\n", "", "'\"\\"]}, ["env.SEED=`id`\n%"]))
def test_fuzz_jobs(case: tuple[dict[str, Any], list[str]]) -> None:
    check_job(*case)


@long
@given(jobs())
def test_fuzz_jobs_long(case: tuple[dict[str, Any], list[str]]) -> None:
    check_job(*case)


# ---------------------------------------------------------------- drawn profiles

@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    part = draw(HOSTILE)
    return {"modules": draw(st.lists(HOSTILE, max_size=3)),
            "env": draw(st.dictionaries(NAMES, HOSTILE, max_size=3)),
            "partition": part, "partitions": {part: draw(st.integers(1, 8) | st.integers(-1, 0))},
            "disk_path": draw(HOSTILE), "override": draw(HOSTILE),
            "mpirun_args": draw(st.lists(HOSTILE, max_size=2))}


def profile_toml(p: dict[str, Any]) -> str:
    from fuzz_support import toml_str, toml_value

    return "\n".join([
        f"partition = {toml_str(p['partition'])}",
        f"modules = {toml_value(p['modules'])}",
        f"mpirun_args = {toml_value(p['mpirun_args'])}",
        "[env]", *(f"{toml_str(k)} = {toml_str(v)}" for k, v in p["env"].items()),
        f"[partitions.{toml_str(p['partition'])}]", f"nodes = {p['partitions'][p['partition']]}",
        '[health.thresholds."host.disk"]', f"path = {toml_str(p['disk_path'])}",
        "min_free_gib = 1", "[[health.override]]", f"nodes = {toml_str(p['override'])}", ""])


def check_profile(p: dict[str, Any]) -> None:
    check_job({"name": "p", "command": ["prog", "arg"], "kind": "mpi"}, [], p)


@ci
@given(profiles())
@example({"modules": ["cuda/12.4", "a b", "$(id)"], "env": {"NCCL_IB_HCA": "mlx5_0:1,\n"},
          "partition": "gpu", "partitions": {"gpu": 4}, "disk_path": "/tmp",
          "override": "node[1-4]", "mpirun_args": ["--mca", "a b"]})
@example({"modules": ["then"], "env": {}, "partition": ":", "partitions": {":": 1},
          "disk_path": ":", "override": ":", "mpirun_args": ["then", "fi", "do"]})
@example({"modules": [], "env": {}, "partition": "a\nb", "partitions": {"a\nb": 1},
          "disk_path": "/tmp", "override": "node1", "mpirun_args": []})
def test_fuzz_profiles(p: dict[str, Any]) -> None:
    check_profile(p)


@long
@given(profiles())
def test_fuzz_profiles_long(p: dict[str, Any]) -> None:
    check_profile(p)


# ---------------------------------------------------------------- job ids

def check_job_id(command: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bin_dir = make_stubs(root)
        for name in ("squeue", "sacct", "scancel"):
            (bin_dir / name).write_text((bin_dir / "srun").read_text())
            (bin_dir / name).chmod(0o755)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_DIR": str(root)}
        result = CliRunner().invoke(main, [command, text], env=env)
        found = calls(root)
        if result.exit_code == EXIT_INPUT:
            # ours, or Click's own usage error for a word that reads as an option ("-0")
            assert not found and ("is not a Slurm job id" in result.output
                                  or "No such option" in result.output), result.output
            return
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert re.fullmatch(r"[0-9]+(_[0-9]+)?", text), f"{text!r} reached Slurm"
        assert found and all(text.encode() in c.argv for c in found)


@ci
@given(st.sampled_from(["status", "cancel"]), HOSTILE | st.from_regex(r"\A[0-9]{1,9}(_[0-9]{1,3})?\Z"))
@example("status", "\u0661\u0662")  # Arabic-Indic digits: str.isdigit() said yes
@example("cancel", "12_x; rm -rf /")
@example("cancel", "123_4")
def test_fuzz_job_ids(command: str, text: str) -> None:
    check_job_id(command, text)
