"""The submit flow: load, render, write the script atomically, sbatch it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiinfra.launcher import slurm
from aiinfra.launcher.files import write_atomic
from aiinfra.launcher.render import Rendered, render_job
from aiinfra.launcher.spec import load_job, load_profile, parse_override

Override = tuple[str, str, Any]


def overrides(nodes: str | None, time_limit: str | None, sets: Sequence[str]) -> list[Override]:
    """Command-line overrides, applied in this order: --nodes, --time, then each --set."""
    out: list[Override] = []
    if nodes is not None:
        out.append(parse_override(f"nodes={nodes}", "--nodes"))
    if time_limit is not None:
        out.append(("--time", "time", time_limit))
    out += [parse_override(text) for text in sets]
    return out


def prepare(job_file: Path, profile_ref: str, extra: Sequence[Override], cwd: Path) -> Rendered:
    """Everything short of submitting; raises SpecError on any bad input."""
    profile = load_profile(profile_ref)
    job = load_job(job_file, extra)
    return render_job(job, profile, cwd)


def submit(rendered: Rendered) -> str:
    """Write the script where its header says, then submit it; returns the job id."""
    write_atomic(rendered.script_path, rendered.text, mode=0o755)
    return slurm.sbatch(rendered.script_path)
