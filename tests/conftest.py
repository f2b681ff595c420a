"""Shared fixtures: job/profile files in tmp dirs, the real dev cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a dedented text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


@pytest.fixture
def profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory searched first for profiles by name."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    monkeypatch.setenv("AIINFRA_PROFILE_PATH", str(directory))
    return directory


def cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "--noheader", "--format=%D %t"], capture_output=True,
                          text=True, timeout=30, check=False)
    return proc.returncode == 0 and "idle" in proc.stdout or "mix" in proc.stdout


@pytest.fixture(scope="session")
def cluster() -> Iterator[None]:
    """The real dev cluster. Skips locally when it is down; fails in CI (CI=true)."""
    if not cluster_up():
        message = "the dev cluster is not up: run `scripts/dev-cluster.sh up` first"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: tests that need Slurm never skip)")
        pytest.skip(message)
    yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: the long, random fuzz run (pytest -m fuzz)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long fuzz run is opt-in: only `-m` expressions that name it select it."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("fuzz") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
