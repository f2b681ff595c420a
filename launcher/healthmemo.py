"""A remembered success of checking a profile's health tables against the checks.

Checking imports every check module (~50 ms); `aiinfra submit` should pay that once per
profile, not on every call. Failures are never remembered."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .files import cache_dir, package_dir
from .schema import Origins, as_plain, check_partial

if TYPE_CHECKING:
    from .profile import HealthSettings


def check_health(health: HealthSettings, origins: Origins) -> None:
    """Threshold tables must name registered checks and hold their parameters.

    Checking imports every check module (~50 ms), so a success is remembered in the user's
    cache, keyed by the health table, the aiinfra version and the check modules' files:
    `aiinfra submit` pays once per profile, not on every call. Failures are never cached."""
    marker = _validated_marker(health)
    if marker is not None and marker.exists():
        return
    _check_health_tables(health, origins)
    if marker is not None:
        with contextlib.suppress(OSError):
            marker.touch()


def _validated_marker(health: HealthSettings) -> Path | None:
    directory = cache_dir("validated")
    if directory is None:
        return None
    from aiinfra import __version__

    health_dir = package_dir("aiinfra.health")
    files = sorted(p for p in health_dir.iterdir() if p.suffix in (".py", ".toml"))
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps([__version__, stamp, as_plain(health)], sort_keys=True, default=str)
    return directory / hashlib.sha256(blob.encode()).hexdigest()


def _check_health_tables(health: HealthSettings, origins: Origins) -> None:
    from aiinfra.health.registry import checks
    from aiinfra.health.sweep import SweepSettings

    check_partial(SweepSettings, health.sweep, origins, "health.sweep")
    known = checks()
    tables = [("health.thresholds", health.thresholds)] + [
        (f"health.override[{i}].thresholds", o.thresholds) for i, o in enumerate(health.override)]
    for i, pattern in enumerate(health.skip):
        if not fnmatch.filter(known, pattern):
            raise origins.error(f"health.skip[{i}]", f"{pattern!r} matches no check", list(known))
    for prefix, table in tables:
        for name, values in table.items():
            if name not in known:
                raise origins.error(f"{prefix}.{name}", "unknown check", list(known))
            check_partial(known[name].params, values, origins, f"{prefix}.{name}")
