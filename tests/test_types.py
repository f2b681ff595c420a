"""The package type-checks under mypy --strict, as installed (the import names that users see)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_strict_passes_on_the_installed_package(tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-compile", "--target", str(site), str(REPO)], check=True, timeout=300)
    env = {**os.environ, "MYPYPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "-p", "aiinfra"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues found" in proc.stdout
