"""Per-node thresholds: the profile's table with every matching override laid on top."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping
from typing import Any


@functools.lru_cache(maxsize=256)
def _expand(pattern: str) -> frozenset[str]:
    import hostlist  # type: ignore[import-untyped]  # python-hostlist: Slurm node lists

    return frozenset(hostlist.expand_hostlist(pattern))


def node_matches(node: str, pattern: str) -> bool:
    """``pattern`` is a Slurm hostlist (``node[1-3,7]``, comma lists) or a glob (``gpu-*``)."""
    if any(ch in pattern for ch in "*?"):
        return any(fnmatch.fnmatchcase(node, part) for part in pattern.split(","))
    return node in _expand(pattern)


def check_pattern(pattern: str) -> str | None:
    """A schema check for override patterns."""
    if any(ch in pattern for ch in "*?"):
        return None
    try:
        _expand(pattern)
    except Exception as exc:  # hostlist raises its own BadHostlist
        return f"{pattern!r} is not a node list or glob: {exc}"
    return None


def for_node(base: Mapping[str, Mapping[str, Any]],
             overrides: list[tuple[str, Mapping[str, Mapping[str, Any]]]],
             node: str) -> dict[str, dict[str, Any]]:
    """Merge ``base`` with each ``(pattern, thresholds)`` override matching ``node``, in order."""
    merged = {name: dict(values) for name, values in base.items()}
    for pattern, tables in overrides:
        if node_matches(node, pattern):
            for name, values in tables.items():
                merged.setdefault(name, {}).update(values)
    return merged
