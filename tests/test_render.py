from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest

from aiinfra import __version__
from aiinfra.launcher import render
from aiinfra.launcher.errors import SpecError
from aiinfra.launcher.profile import load_profile
from aiinfra.launcher.spec import load_job
from scenarios import CWD, SELF_ARGV, SHELLCHECK_ARGS, load_scenario, render_scenario, scenarios

GOLDEN = Path(__file__).parent / "golden"
Write = Callable[[str, str], Path]


@pytest.mark.parametrize(("kind", "runtime"), scenarios())
def test_golden_scripts(kind: str, runtime: str, tmp_path: Path) -> None:
    text = render_scenario(kind, runtime, tmp_path).text
    golden = GOLDEN / f"{kind}-{runtime}.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs: UPDATE_GOLDEN=1 to accept"


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.sh")), ids=lambda p: p.name)
def test_golden_scripts_parse_in_bash(golden: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(golden)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None and os.environ.get("CI") != "true",
                    reason="shellcheck is not installed")
def test_golden_scripts_pass_shellcheck() -> None:
    goldens = sorted(str(p) for p in GOLDEN.glob("*.sh"))
    proc = subprocess.run([*SHELLCHECK_ARGS, *goldens],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_every_scenario_has_a_golden_file() -> None:
    expected = {f"{k}-{r}.sh" for k, r in scenarios()}
    assert {p.name for p in GOLDEN.glob("*.sh")} == expected
    assert len(expected) == 15


def test_a_misspelled_template_variable_fails_to_render() -> None:
    env = render.template_env()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("#SBATCH --nodes={{ node }}").render(nodes=2)


def test_every_context_key_is_required_by_some_template(tmp_path: Path) -> None:
    """Dropping any key breaks at least one template: none is rendered empty by accident."""
    env = render.template_env()
    used: set[str] = set()
    for kind, runtime in [("torchrun", "none"), ("inference", "none"), ("srun", "none")]:
        rendered = render_scenario(kind, runtime, tmp_path)
        loaded, profile = load_scenario(kind, runtime, tmp_path)
        res = render.resolve(loaded, profile, CWD)
        paths = render.ScriptPaths(rendered.script_path, rendered.snapshot_path)
        context = render.build_context(res, loaded, profile, rendered.spec_hash, paths,
                                       SELF_ARGV)
        template = env.get_template(render.template_for(res.job))
        assert template.render(context) == rendered.text
        for key in context:
            trimmed = {k: v for k, v in context.items() if k != key}
            try:
                template.render(trimmed)
            except jinja2.UndefinedError:
                used.add(key)
    assert used == set(context)


def test_header_carries_provenance(tmp_path: Path) -> None:
    rendered = render_scenario("torchrun", "none", tmp_path)
    lines = rendered.text.splitlines()
    assert lines[0] == "#!/bin/bash"
    header = "\n".join(lines[:6])
    assert f"aiinfra {__version__}" in header
    assert "profile:   local (profiles/local.toml)" in header
    assert re.search(r"job file:  jobs/torchrun-none.toml \(sha256 [0-9a-f]{64}\)", header)
    assert f"spec hash: {rendered.spec_hash}" in header
    assert f"Run with:  sbatch --parsable {rendered.script_path}" in header
    assert rendered.script_path.parent == Path("/project/logs")


def test_sbatch_lines_are_sorted_and_quoted(tmp_path: Path) -> None:
    text = render_scenario("torchrun", "none", tmp_path).text
    keys = [m.group(1) for m in re.finditer(r"^#SBATCH --([a-z-]+)", text, re.M)]
    assert keys == sorted(keys)
    assert "#SBATCH --job-name='train it'\"'\"'s \"big\"'" in text
    assert "#SBATCH --time=2-00:00:00" in text
    assert "gpus-per-node" not in text  # a CPU partition gets no empty GPU request


def test_user_values_are_shell_quoted(tmp_path: Path) -> None:
    text = render_scenario("torchrun", "none", tmp_path).text
    assert "--note '$(rm -rf ~); `id`'" in text
    assert "export WANDB_NOTES='a;b && c | d\nline 2'" in text


def test_extra_sbatch_options_merge_and_false_drops(tmp_path: Path) -> None:
    text = render_scenario("srun", "pyxis", tmp_path).text
    assert "#SBATCH --mail-type=END" in text
    assert "--exclusive" not in text  # the job's false beats the profile's true
    assert "#SBATCH --gpus-per-node=8" in text
    assert "--container-image=/images/app.sif --container-mounts=/lustre:/lustre,/data:/data:ro" in text


def test_apptainer_wraps_the_program_with_nv_and_binds(tmp_path: Path) -> None:
    text = render_scenario("torchrun", "apptainer", tmp_path).text
    assert ("apptainer exec --nv --writable-tmpfs --bind /scratch --bind /projects "
            "--bind /data:/data:ro /images/app.sif torchrun") in text
    assert "module load cuda/12.4" in text


def test_torchrun_rendezvous_uses_a_per_job_port(tmp_path: Path) -> None:
    text = render_scenario("torchrun", "none", tmp_path).text
    assert f"AIINFRA_PORT=$(( {render.PORT_BASE} + SLURM_JOB_ID % {render.PORT_SPAN} ))" in text
    assert '--rdzv-endpoint="$AIINFRA_HEAD_ADDR:$AIINFRA_PORT"' in text
    assert render.PORT_BASE + render.PORT_SPAN <= 32768  # below Linux's ephemeral ports


def test_logs_are_per_attempt(tmp_path: Path) -> None:
    text = render_scenario("mpirun", "none", tmp_path).text
    assert "#SBATCH --open-mode=append" in text
    assert 'AIINFRA_STEP_LOG=/project/logs/mpi-"${SLURM_JOB_ID}.attempt${AIINFRA_ATTEMPT}.log"' in text
    assert 'AIINFRA_ATTEMPT="${SLURM_RESTART_COUNT:-0}"' in text


@pytest.mark.parametrize(("preset", "words"), [
    ("vllm", "vllm serve '/models/llama 3' --host 0.0.0.0 --port 8000"),
    ("sglang", "python3 -m sglang.launch_server --model-path '/models/llama 3'"),
    ("trtllm", "trtllm-serve '/models/llama 3' --host 0.0.0.0 --port 8000 --tp_size 4"),
    ("triton", "tritonserver '--model-repository=/models/llama 3' --http-port=8000"),
])
def test_inference_presets(preset: str, words: str, tmp_path: Path) -> None:
    runtime = {"vllm": "none", "sglang": "apptainer", "trtllm": "singularity", "triton": "pyxis"}
    text = render_scenario("inference", runtime[preset], tmp_path).text
    assert words in text


def _render(write: Write, job: str, profile: str = "local") -> render.Rendered:
    loaded = load_job(write("job.toml", job))
    return render.render_job(loaded, load_profile(profile), Path("/p"), SELF_ARGV)


BASE = 'name = "x"\ncommand = ["true"]\n'


@pytest.mark.parametrize(("job", "field", "words"), [
    (BASE + "nodes = 5\n", "nodes", "5 nodes requested, but partition 'debug'"),
    (BASE + "gpus_per_node = 1\n", "gpus_per_node", "1 GPUs per node requested"),
    (BASE + 'partition = "gpu"\n', "partition", "has no partition 'gpu'"),
    (BASE + "cpus_per_task = 3\n", "cpus_per_task", "3 CPUs per node requested"),
    (BASE + '[container]\nimage = "x.sif"\n', "container.runtime", "no container runtime"),
])
def test_render_lint_against_the_profile(write: Write, job: str, field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        _render(write, job)
    assert err.value.field == field and words in err.value.message
    assert err.value.source.endswith("job.toml")


def test_pyxis_cannot_wrap_mpirun(write: Write) -> None:
    job = 'name = "x"\nkind = "mpi"\ncommand = ["a"]\n[container]\nimage = "i"\n'
    with pytest.raises(SpecError) as err:
        _render(write, job, "dgx-h100")
    assert err.value.field == "launcher"


def test_render_is_pure(tmp_path: Path) -> None:
    first = render_scenario("inference", "pyxis", tmp_path)
    second = render_scenario("inference", "pyxis", tmp_path)
    assert first == second
    assert dataclasses.asdict(first) == dataclasses.asdict(second)


def test_the_gate_runs_first_unless_the_job_or_profile_turns_it_off(
        write: Write, profile_dir: Path) -> None:
    gated = _render(write, BASE).text
    assert "#SBATCH --requeue" in gated
    assert "the preflight gate (quick tier) on every node" in gated
    off = _render(write, BASE + "preflight = false\n").text
    assert "preflight gate" not in off and "#SBATCH --requeue" in off  # the supervisor still decides
    (profile_dir / "nogate.toml").write_text('inherits = "local"\n[health]\ngate = false\n')
    assert "preflight gate" not in _render(write, BASE, "nogate").text
    assert "preflight gate" in _render(write, BASE + "preflight = true\n", "nogate").text


def test_the_launch_line_stays_visible(write: Write) -> None:
    text = _render(write, BASE + "nodes = 2\n").text
    exec_line, launch = text.split("\nexec ", 1)[1].splitlines()[:2]
    assert exec_line.endswith(" attempt /p/logs/x-" + exec_line.split("/p/logs/x-")[1])
    assert launch.strip().startswith("srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 "
                                     "torchrun --nnodes=2")
    assert launch.strip().endswith("--no-python true")


def test_a_checkpointing_job_is_told_before_its_time_limit(write: Write) -> None:
    ckpt = BASE + 'time = "10"\n[checkpoint]\ndir = "ck"\nsignal_lead_s = 90\n'
    assert "#SBATCH --signal=B:USR2@90" in _render(write, ckpt).text
    assert "--signal" not in _render(write, BASE).text  # nothing to save: no signal
    with pytest.raises(SpecError) as err:
        _render(write, ckpt.replace('"10"', '"1"'))
    assert err.value.field == "checkpoint.signal_lead_s" and "not below" in err.value.message
