"""The submit flow: load, render, write the snapshot and the script atomically, sbatch."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import slurm
from .errors import SlurmError, SpecError
from .files import write_atomic
from .profile import load_profile
from .render import Rendered, render_job
from .spec import load_job, parse_override

Override = tuple[str, str, Any]


def overrides(nodes: str | None, time_limit: str | None, sets: Sequence[str],
              after: Dependencies = ()) -> list[Override]:
    """Command-line overrides, applied in this order: --nodes, --time, each --set, then the
    dependencies (``#SBATCH --dependency``, so that --dry-run shows them)."""
    out: list[Override] = []
    if nodes is not None:
        out.append(parse_override(f"nodes={nodes}", "--nodes"))
    if time_limit is not None:
        out.append(("--time", "time", time_limit))
    out += [parse_override(text) for text in sets]
    if after:
        out.append(("--after", "sbatch.dependency", dependency(after)))
    return out


# (kind, job id): kind is Slurm's afterok, afterany or afternotok.
Dependencies = Sequence[tuple[str, str]]
OPTION = {"afterok": "--after", "afterany": "--after-any", "afternotok": "--after-notok"}
_JOB_ID = re.compile(r"^[1-9][0-9]*(_[0-9]+)?$")


def dependency(after: Dependencies) -> str:
    """Slurm's ``--dependency`` value: ``afterok:1:2,afterany:3`` (all must hold)."""
    for kind, job_id in after:
        if not _JOB_ID.match(job_id):
            raise SpecError(OPTION[kind], "job id",
                            f"{job_id!r} is not a Slurm job id (1234 or 1234_5)")
    kinds = dict.fromkeys(kind for kind, _ in after)
    return ",".join(":".join([kind, *(j for k, j in after if k == kind)]) for kind in kinds)


def check_dependencies(after: Dependencies) -> None:
    """Every job depended on is known to Slurm (squeue or sacct); SpecError otherwise."""
    for kind, job_id in after:
        try:
            slurm.job_state(job_id)
        except SlurmError as exc:
            raise SpecError(OPTION[kind], f"job {job_id}",
                            "unknown to squeue and sacct") from exc


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
