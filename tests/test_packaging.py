"""The wheel carries templates and profiles, and the login-node install stays light."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_templates_profiles_and_the_entry_point(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path), str(REPO)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("aiinfra-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (REPO / "templates").glob("*.sh.j2"):
        assert f"aiinfra/templates/{template.name}" in names
    for profile in (REPO / "profiles").glob("*.toml"):
        assert f"aiinfra/profiles/{profile.name}" in names
    assert {"aiinfra/launcher/cli.py", "aiinfra/health/__init__.py"} <= names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "aiinfra = aiinfra.launcher.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_heavy_packages_are_extras_not_requirements() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "pandas", "nvidia-ml-py", "mpi4py", "submitit", "numpy"):
        assert heavy not in required
    extras = " ".join(" ".join(v) for v in project["optional-dependencies"].values())
    assert "torch" in extras and "mpi4py" in extras
