"""The restart ledger: atomic appends, tolerant reads, reconciliation from sacct."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from aiinfra.launcher import ledger
from aiinfra.launcher.ledger import Entry, LedgerError, append, decode, encode, read, reconcile
from aiinfra.launcher.requeue import Attempt, Budget, Evidence, Room, classify, decide
from aiinfra.launcher.slurm import parse_history

SACCT = Path(__file__).parent / "fixtures" / "sacct"


def entry(attempt: int, outcome: str = "time_limit", before: int | None = 0,
          after: int | None = 10, job_id: str = "4") -> Entry:
    return Entry(job_id, attempt, ("node1", "node2"), outcome, 0, 0, (), "detail", before,
                 after, "2026-11-23T18:26:46+00:00", "2026-11-23T18:27:16+00:00", "requeue",
                 "REQUEUED", "why")


def test_path_convention() -> None:
    assert ledger.ledger_path("/logs", "train-ddp", "123") == Path(
        "/logs/train-ddp-123.ledger.jsonl")


def test_an_entry_round_trips_through_one_json_line() -> None:
    original = entry(2)
    line = encode(original)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = json.loads(line)
    assert data["v"] == ledger.VERSION and data["nodes"] == ["node1", "node2"]
    assert decode(line.decode()) == original


def test_make_entry_from_a_decision() -> None:
    outcome = classify(Evidence(bad_nodes=("node3",)))
    attempt = Attempt(outcome, 5, 5, Room(("node1", "node2", "node3"), 2))
    decision = decide(attempt, [], Budget())
    made = ledger.make_entry("9", 0, ["node1", "node3"], attempt, decision, "a", "b")
    assert (made.outcome, made.bad_nodes, made.action, made.exclude) == (
        "gate_bad_nodes", ("node3",), "requeue", ("node3",))
    assert decode(encode(made).decode()) == made


@pytest.mark.parametrize("line", [
    "", "{", "[]", '{"v": 1}', '{"v": 2, "outcome": "crash"}',
    json.dumps({**json.loads(encode(entry(0))), "outcome": "exploded"}),
    json.dumps({**json.loads(encode(entry(0))), "surprise": 1}),
    json.dumps({**json.loads(encode(entry(0))), "attempt": "1"}),
])
def test_bad_lines_are_ledger_errors(line: str) -> None:
    with pytest.raises(LedgerError):
        decode(line)


def test_appends_then_reads_in_order(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "job-4.ledger.jsonl"
    for number in range(3):
        append(path, entry(number))
    book = read(path)
    assert [e.attempt for e in book.entries] == [0, 1, 2] and book.skipped == 0
    assert read(tmp_path / "missing.jsonl") == ledger.Ledger((), 0)


def test_a_torn_last_line_is_skipped_and_the_next_append_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "job-4.ledger.jsonl"
    append(path, entry(0))
    with path.open("ab") as handle:  # a writer that died mid-line
        handle.write(encode(entry(1))[:40])
    book = read(path)
    assert [e.attempt for e in book.entries] == [0] and book.skipped == 1
    append(path, entry(2))
    book = read(path)
    assert [e.attempt for e in book.entries] == [0, 2] and book.skipped == 1


def _writer(path: str, start: int) -> None:
    for number in range(start, start + 50):
        append(Path(path), entry(number))


def test_concurrent_appends_never_mix_lines(tmp_path: Path) -> None:
    path = tmp_path / "job-4.ledger.jsonl"
    procs = [multiprocessing.get_context("fork").Process(target=_writer, args=(str(path), n))
             for n in (0, 1000, 2000)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    book = read(path)
    assert book.skipped == 0
    assert sorted(e.attempt for e in book.entries) == [
        *range(0, 50), *range(1000, 1050), *range(2000, 2050)]


def test_append_is_one_write_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        calls.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    append(tmp_path / "l.jsonl", entry(0))
    append(tmp_path / "l.jsonl", entry(1))
    assert calls == [encode(entry(0)), encode(entry(1))]


# --- reconcile -----------------------------------------------------------------------------

def test_reconcile_adds_the_attempt_that_wrote_no_line() -> None:
    runs = parse_history((SACCT / "requeued_twice.txt").read_text())
    written = [entry(0, "crash", 0, 10), entry(2, "completed", 25, 40)]
    whole = reconcile(written, runs)
    assert [e.attempt for e in whole] == [0, 1, 2]
    lost = whole[1]
    assert lost.source == "sacct" and lost.job_id == "4"
    assert lost.nodes == ("node2", "node3")
    assert (lost.outcome, lost.action, lost.state) == ("preempted", "requeue", "REQUEUED")
    assert (lost.step_before, lost.step_after) == (10, 25)
    assert (lost.start, lost.end) == ("2026-11-23T18:27:49", "2026-11-23T18:28:19")
    assert "reconciled from sacct" in lost.reason
    assert whole[0] == written[0] and whole[2] == written[1]


def test_reconcile_a_lost_batch_host() -> None:
    runs = parse_history((SACCT / "node_fail.txt").read_text())
    whole = reconcile([entry(1, "completed", 30, 50)], runs)
    lost = whole[0]
    assert (lost.attempt, lost.outcome, lost.action, lost.step_after) == (
        0, "node_fail", "requeue", 30)
    assert lost.step_before is None


def test_reconcile_a_final_run_and_a_crash_trap() -> None:
    runs = parse_history((SACCT / "crash_kill_on_bad_exit.txt").read_text())
    (lost,) = reconcile([], runs)
    assert (lost.outcome, lost.exit_code, lost.action, lost.state) == ("crash", 3, "final",
                                                                       "FAILED")


def test_reconcile_leaves_running_and_unstarted_runs_alone() -> None:
    runs = parse_history((SACCT / "admin_requeue_then_cancel.txt").read_text())
    whole = reconcile([], runs)
    assert [e.attempt for e in whole] == [0]
    running = parse_history("5|x|RUNNING|0:0|node1|2026-11-23T18:26:46|Unknown\n")
    assert reconcile([entry(0)], (*runs[:1], *running)) == (entry(0),)


def test_reconcile_keeps_every_written_line() -> None:
    written = [entry(n) for n in range(4)]
    runs = parse_history((SACCT / "requeued_twice.txt").read_text())
    assert reconcile(written, runs) == tuple(written)
