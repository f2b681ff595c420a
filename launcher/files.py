"""Files written whole or not at all; the per-user cache directory; package data."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write beside ``path`` under a name of this process's own, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cache_dir(name: str) -> Path | None:
    """``$XDG_CACHE_HOME/aiinfra/NAME`` (default ``~/.cache``), created; None if it cannot be."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    directory = Path(base) / "aiinfra" / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return directory


def package_dir(package: str) -> Path:
    """Where an installed package's files lie (cheaper at start-up than importlib.resources)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"aiinfra is installed without {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (fsync of the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
