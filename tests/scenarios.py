"""Render scenarios: every template x container runtime, as job files on shipped profiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aiinfra.launcher.render import Rendered, render_job
from aiinfra.launcher.profile import LoadedProfile, load_profile
from aiinfra.launcher.spec import LoadedJob, load_job

RUNTIME_PROFILE = {"none": "local", "apptainer": "apptainer-a100",
                   "singularity": "apptainer-a100", "pyxis": "dgx-h100"}

JOBS = {
    "torchrun": """
        name = "train it's \\"big\\""
        command = ["python3", "train.py", "--lr", "3e-4", "--note", "$(rm -rf ~); `id`"]
        nodes = 2
        time = "2-00:00:00"
        [env]
        WANDB_NOTES = "a;b && c | d\\nline 2"
        [checkpoint]
        dir = "ckpt"
    """,
    "mpirun": """
        name = "mpi"
        kind = "mpi"
        launcher = "mpirun"
        command = ["python3", "allreduce.py"]
        nodes = 2
        tasks_per_node = 2
        time = "30"
    """,
    "srun": """
        name = "mpi-srun"
        kind = "mpi"
        launcher = "srun"
        command = ["./a.out"]
        nodes = 2
        tasks_per_node = 2
        cpus_per_task = 1
        mem_per_cpu = "2G"
        [sbatch]
        mail-type = "END"
        exclusive = false
    """,
    "inference": """
        name = "serve"
        kind = "inference"
        nodes = 1
        mem = "64G"
        [server]
        preset = "{preset}"
        model = "/models/llama 3"
        port = 8000
    """,
}
PRESETS = {"none": "vllm", "apptainer": "sglang", "singularity": "trtllm", "pyxis": "triton"}


def scenarios() -> list[tuple[str, str]]:
    """(template kind, runtime) pairs; pyxis cannot wrap mpirun (rejected at render)."""
    return [(kind, runtime) for kind in JOBS for runtime in RUNTIME_PROFILE
            if not (kind == "mpirun" and runtime == "pyxis")]


def job_text(kind: str, runtime: str) -> str:
    text = JOBS[kind].replace("{preset}", PRESETS[runtime])
    if runtime != "none":
        text += '\n[container]\nimage = "/images/app.sif"\nbinds = ["/data:/data:ro"]\n'
        if runtime == "singularity":
            text += 'runtime = "singularity"\n'
    return "\n".join(line.strip() for line in text.splitlines()) + "\n"


CWD = Path("/project")
# Info-level notes that flag correct quoting of user values: SC2016 '$(...)' inside single
# quotes; SC1003 a literal backslash just before a closing single quote ('a\').
SHELLCHECK_ARGS = ("shellcheck", "--shell=bash", "--exclude=SC2016,SC1003")
SELF_ARGV = ("/opt/aiinfra/bin/python3", "-m", "aiinfra")  # the submitting install, fixed


def load_scenario(kind: str, runtime: str, tmp: Path) -> tuple[LoadedJob, LoadedProfile]:
    """Job and profile with fixed paths, so that renders agree on every machine."""
    path = tmp / f"{kind}-{runtime}.toml"
    path.write_text(job_text(kind, runtime))
    loaded = dataclasses.replace(load_job(path), path=Path(f"jobs/{path.name}"))
    profile = load_profile(RUNTIME_PROFILE[runtime])
    return loaded, dataclasses.replace(profile, path=Path(f"profiles/{profile.name}.toml"))


def render_scenario(kind: str, runtime: str, tmp: Path) -> Rendered:
    return render_job(*load_scenario(kind, runtime, tmp), CWD, SELF_ARGV)
