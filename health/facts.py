"""Facts: what collectors read from the system once per run, as JSON-able sections.

A collector fills one section (``host``, ``gpu``, ``ib``, ...). A section that could not
be read is ``{"error": "why"}``; checks that need it then say UNKNOWN with that reason.
Recorded facts (``aiinfra health record``) replay through the same checks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Facts = dict[str, Any]
Section = dict[str, Any]


@dataclass(frozen=True)
class CollectContext:
    """What a collector may need: this node's thresholds per check, and the tier."""

    node: str
    tier: str
    thresholds: Mapping[str, Mapping[str, Any]]

    def params(self, check: str, names: Sequence[str]) -> dict[str, Any] | str:
        """The settings a collector reads from a check's thresholds table, or why not."""
        table = self.thresholds.get(check)
        if table is None:
            return f"the profile sets no {check} thresholds"
        missing = [n for n in names if n not in table]
        if missing:
            return f"{check} sets no {', '.join(missing)}"
        return {n: table[n] for n in names}


class Collector(Protocol):
    """Reads one section of facts. Must not raise for a missing device or library:
    it returns ``{"error": reason}`` instead (raising is tolerated and recorded too)."""

    @property
    def section(self) -> str: ...

    def collect(self, ctx: CollectContext) -> Section: ...


@dataclass(frozen=True)
class FunctionCollector:
    section: str
    func: Callable[[CollectContext], Section]

    def collect(self, ctx: CollectContext) -> Section:
        return self.func(ctx)


def section_error(facts: Mapping[str, Any], section: str) -> str | None:
    """Why ``section`` is unusable (missing or an error), or None when it is there."""
    data = facts.get(section)
    if data is None:
        return f"no {section!r} facts were collected"
    if isinstance(data, Mapping) and "error" in data:
        return str(data["error"])
    return None


def new_facts(node: str) -> Facts:
    return {"node": node, "collected_at": time.time(), "durations_s": {}}


def gather(facts: Facts, collectors: Iterable[Collector], ctx: CollectContext,
           timeout_s: float) -> None:
    """Add each collector's section to ``facts``, each under a time limit: a hung collector
    leaves an error in its section, not a hung run."""
    for collector in collectors:
        start = time.monotonic()
        facts[collector.section] = _with_timeout(collector, ctx, timeout_s)
        facts["durations_s"][collector.section] = round(time.monotonic() - start, 6)


def _with_timeout(collector: Collector, ctx: CollectContext, timeout_s: float) -> Section:
    box: dict[str, Section] = {}

    def target() -> None:
        try:
            box["value"] = collector.collect(ctx)
        except Exception as exc:  # a collector bug must not hide the other sections
            box["value"] = {"error": f"{type(exc).__name__}: {exc}"}

    thread = threading.Thread(target=target, name=f"collect-{collector.section}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return {"error": f"collector timed out after {timeout_s:g} s"}
    return box["value"]


def timed(step: Callable[[], object], iterations: int, warmup: int,
          sync: Callable[[], object]) -> float:
    """Seconds for ``iterations`` calls of ``step`` after ``warmup`` ones, between syncs."""
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    return time.perf_counter() - start
