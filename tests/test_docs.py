"""The README's references list every key the loader accepts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from aiinfra.launcher.profile import Profile
from aiinfra.launcher.spec import JobSpec

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _documented(title: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", _section(title)))


def test_every_job_key_is_documented() -> None:
    assert {f.name for f in dataclasses.fields(JobSpec)} <= _documented("Job file reference")


def test_every_profile_key_is_documented() -> None:
    assert {f.name for f in dataclasses.fields(Profile)} <= _documented("Profile reference")


def test_every_health_check_is_documented_with_its_tier() -> None:
    from aiinfra.health.registry import checks

    rows = dict(re.findall(r"^\| `([a-z]+\.[a-z_]+)` \| (quick|standard|deep) \|", README, re.M))
    assert rows == {name: chk.tier for name, chk in checks().items()}
