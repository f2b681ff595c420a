"""sbatch's long options across the Slurm releases aiinfra supports (sbatch_options.toml)."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from pathlib import Path

OPTIONS_FILE = Path(__file__).with_name("sbatch_options.toml")

# Real sbatch options that cannot work in a job file: aiinfra's submission depends on them.
REFUSED: Mapping[str, str] = {
    "help": "sbatch would print help and submit nothing",
    "usage": "sbatch would print usage and submit nothing",
    "version": "sbatch would print its version and submit nothing",
    "parsable": "aiinfra always submits with --parsable",
    "wrap": "the rendered script is the batch script",
    "test-only": "sbatch would submit nothing",
    "wait": "sbatch would block until the job ends",
}


@functools.cache
def known_options() -> frozenset[str]:
    """Every long option of every supported release (union: a site runs one of them)."""
    releases = tomllib.loads(OPTIONS_FILE.read_text())["releases"]
    return frozenset(name for rel in releases.values() for name in rel["options"])


def sbatch_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an extra ``#SBATCH --key`` option, or None."""
    if key in REFUSED:
        return f"--{key} is not allowed here: {REFUSED[key]}"
    if key in known_options():
        return None
    import difflib  # only on the error path: keeps it off `submit`'s start-up

    near = difflib.get_close_matches(key, sorted(known_options() - set(REFUSED)), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return (f"{key!r} is not an sbatch long option (names are written without dashes, "
            f"as in sbatch(1) of Slurm 22.05 to 26.05){hint}")
