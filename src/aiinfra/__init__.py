"""aiinfra: launch AI training and inference on Slurm.

``aiinfra.submit(job_file, profile, ...)`` returns a :class:`aiinfra.Job` handle (``state``,
``wait``, ``logs``, ``attempts``, ``cancel``); both load on first use, so that importing
``aiinfra`` (as the CLI does for its version) costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Job", "__version__", "submit"]

if TYPE_CHECKING:
    from .launcher.api import Job, submit


def __getattr__(name: str) -> Any:
    if name in ("Job", "submit"):
        from .launcher import api

        return getattr(api, name)
    raise AttributeError(f"module 'aiinfra' has no attribute {name!r}")
