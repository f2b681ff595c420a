#!/usr/bin/env python3
"""Per interruption of a fault-matrix run: signal -> checkpoint on disk, requeue -> next
attempt, and the steps redone, read from the jobs' ledgers and logs.

    pytest --basetemp=/tmp/faults tests/test_faults_e2e.py tests/test_requeue_e2e.py
    .venv/bin/python scripts/bench/fault_times.py /tmp/faults

For each requeued attempt: the stop signal's time is the supervisor's `SIGUSR2/SIGTERM at T`
line in the batch log when the batch shell got one (time limit), else rank 0's
`stopped_at_step=N ... t=T` (preemption: only the ranks get SIGTERM); the checkpoint is on
disk at rank 0's `saved_checkpoint_step=<step after> t=T`; the next attempt starts at its
ledger line's start (seconds). "Redone" is the next attempt's start step against the last
step rank 0 saved or stopped at.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from collections.abc import Iterator
from pathlib import Path

SIGNAL = re.compile(r"aiinfra: SIG(?:USR2|TERM) at ([0-9.]+)")
SAVED = re.compile(r"saved_checkpoint_step=(\d+) t=([0-9.]+)")
STOPPED = re.compile(r"stopped_at_step=(\d+) signal=\S+ t=([0-9.]+)")


def epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def rows(root: Path) -> Iterator[dict[str, object]]:
    for path in sorted(root.rglob("*.ledger.jsonl")):
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        log = path.with_name(path.name.replace(".ledger.jsonl", ".log"))
        for entry, after in zip(entries, entries[1:]):
            yield row(path.parent.parent.name, log, entry, after)


def row(test: str, log: Path, entry: dict[str, object], after: dict[str, object]) -> dict[str, object]:
    step_log = log.with_name(f"{log.stem}.attempt{entry['attempt']}.log")
    text = step_log.read_text() if step_log.is_file() else ""
    start, end = epoch(str(entry["start"])), epoch(str(entry["end"]))
    signals = [float(t) for t in SIGNAL.findall(log.read_text()) if start <= float(t) <= end + 1]
    stopped = STOPPED.search(text)
    signal_t = signals[0] if signals else (float(stopped[2]) if stopped else None)
    saved = {int(s): float(t) for s, t in SAVED.findall(text)}
    on_disk = saved.get(int(str(entry["step_after"]))) if entry["step_after"] is not None else None
    reached = max([*saved, int(stopped[1]) if stopped else 0])
    return {"test": test, "attempt": entry["attempt"], "outcome": entry["outcome"],
            "signal_to_checkpoint_s": None if signal_t is None or on_disk is None
            else round(on_disk - signal_t, 2),
            "requeue_to_next_start_s": round(epoch(str(after["start"])) - end, 1),
            "resumed_from": after["step_before"], "redone_steps": reached - int(
                str(after["step_before"] or 0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("basetemp", type=Path)
    args = parser.parse_args()
    for r in rows(args.basetemp):
        print("  ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
