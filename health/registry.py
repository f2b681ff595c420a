"""The table of checks and collectors. Importing it stays light: no torch, pynvml, mpi4py."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiinfra.health.facts import Collector, Facts
from aiinfra.health.result import CheckResult

Tier = Literal["quick", "standard", "deep"]
TIERS: tuple[Tier, ...] = ("quick", "standard", "deep")
CheckFunc = Callable[[Facts, Any], CheckResult]
F = TypeVar("F", bound=CheckFunc)

# Modules that register checks and collectors, imported on first use of the registry.
MODULES = ("host", "gpu", "kernel", "ib", "compute", "net")


@dataclass(frozen=True)
class Check:
    name: str
    tier: Tier
    needs: tuple[str, ...]
    params: type
    func: CheckFunc
    doc: str


_CHECKS: dict[str, Check] = {}
_COLLECTORS: dict[str, Collector] = {}
_loaded = False


def check(name: str, tier: Tier, needs: tuple[str, ...], params: type) -> Callable[[F], F]:
    """Register a pure check ``(facts, params) -> CheckResult``; its docstring is its help."""

    def decorate(func: F) -> F:
        if name in _CHECKS:
            raise ValueError(f"check {name!r} registered twice")
        doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        _CHECKS[name] = Check(name, tier, needs, params, func, doc)
        return func

    return decorate


def collector(instance: Collector) -> Collector:
    if instance.section in _COLLECTORS:
        raise ValueError(f"collector {instance.section!r} registered twice")
    _COLLECTORS[instance.section] = instance
    return instance


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in MODULES:
            importlib.import_module(f"aiinfra.health.{module}")


def checks() -> Mapping[str, Check]:
    _load()
    return dict(sorted(_CHECKS.items(), key=lambda kv: (TIERS.index(kv[1].tier), kv[0])))


def collectors() -> Mapping[str, Collector]:
    _load()
    return dict(_COLLECTORS)


def checks_for(tier: Tier) -> list[Check]:
    """The checks a tier runs: its own and every lighter tier's, cheapest first."""
    limit = TIERS.index(tier)
    return [c for c in checks().values() if TIERS.index(c.tier) <= limit]
