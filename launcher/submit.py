"""The submit flow: load, render, write the snapshot and the script atomically, sbatch."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import slurm
from .errors import SpecError
from .files import write_atomic
from .profile import load_profile
from .render import Rendered, render_job
from .spec import load_job, parse_override

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


def self_argv() -> tuple[str, str, str]:
    """This aiinfra, by the absolute path of its interpreter: jobs call back into the
    install that submitted them, whatever PATH the compute nodes give (``--export=NONE``)."""
    return (sys.executable, "-m", "aiinfra")


def prepare(job_file: Path, profile_ref: str, extra: Sequence[Override], cwd: Path) -> Rendered:
    """Everything short of submitting; raises SpecError on any bad input."""
    profile = load_profile(profile_ref)
    job = load_job(job_file, extra)
    return render_job(job, profile, cwd, self_argv())


def submit(rendered: Rendered) -> str:
    """Write the snapshot and the script where the header says, then submit; the job id."""
    try:
        write_atomic(rendered.snapshot_path, rendered.snapshot)
        write_atomic(rendered.script_path, rendered.text, mode=0o755)
    except OSError as exc:
        raise SpecError(rendered.log_source, "log_dir", f"cannot write {exc.filename or ''}: "
                        f"{exc.strerror or exc}") from exc
    return slurm.sbatch(rendered.script_path)
