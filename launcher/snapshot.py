"""The job as submitted: the resolved spec and profile, written beside the script.

Everything that runs inside the allocation (the preflight gate, the supervisor) reads this
file, never the job file or the profile again: a profile edited while the job pends, or
between two attempts, changes nothing for that job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiinfra import __version__

from .errors import SpecError
from .profile import SNAPSHOT_SUFFIX, LoadedProfile, Profile
from .schema import Origins, as_plain, build
from .spec import JobSpec, LoadedJob

FORMAT = 1

__all__ = ["SNAPSHOT_SUFFIX", "Snapshot", "read_snapshot", "snapshot_text"]


@dataclass(frozen=True)
class Snapshot:
    path: Path
    job: LoadedJob
    profile: LoadedProfile
    cwd: Path
    spec_hash: str


def snapshot_text(loaded: LoadedJob, lp: LoadedProfile, cwd: Path, spec_hash: str) -> str:
    """The snapshot's JSON text (pure): resolved values, not the files they came from."""
    data = {
        "format": FORMAT, "aiinfra": __version__, "spec_hash": spec_hash, "cwd": str(cwd),
        "job": {"path": str(loaded.path), "sha256": loaded.sha256, "spec": as_plain(loaded.job)},
        "profile": {"name": lp.name, "path": str(lp.path), "chain": [str(p) for p in lp.chain],
                    "spec": as_plain(lp.profile)},
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read_snapshot(path: Path) -> Snapshot:
    """Load a snapshot written at submit time; any problem is a SpecError naming the file."""
    data = _read_json(path)
    origins = Origins(str(path))
    try:
        job, prof = data["job"], data["profile"]
        loaded = LoadedJob(path=Path(job["path"]), sha256=job["sha256"],
                           job=build(JobSpec, job["spec"], origins, "job.spec"),
                           raw=job["spec"], origins=origins)
        profile = LoadedProfile(name=prof["name"], path=Path(prof["path"]),
                                chain=tuple(Path(p) for p in prof["chain"]),
                                profile=build(Profile, prof["spec"], origins, "profile.spec"),
                                raw=prof["spec"])
        return Snapshot(path=path, job=loaded, profile=profile, cwd=Path(data["cwd"]),
                        spec_hash=data["spec_hash"])
    except (KeyError, TypeError) as exc:
        raise SpecError(str(path), "", f"not an aiinfra snapshot (missing {exc})") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SpecError(str(path), "", f"not an aiinfra snapshot: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SpecError(str(path), "format", f"not an aiinfra snapshot of format {FORMAT}")
    return data
