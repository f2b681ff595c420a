"""`aiinfra logs`: reading and following a job's files (no Slurm: the end is injected)."""

from __future__ import annotations

from pathlib import Path

from aiinfra.launcher.joblogs import JobFiles, Tail, chosen, follow


def test_a_tail_returns_whole_lines_and_keeps_a_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tail = Tail(path)
    assert tail.read_lines() == []                 # not written yet
    path.write_text("one\ntw")
    assert tail.read_lines() == ["one"]
    with path.open("a") as handle:
        handle.write("o\nthree")
    assert tail.read_lines() == ["two"]
    assert tail.rest() == ["three"]


def test_follow_reads_each_attempt_in_turn_until_the_job_ends(tmp_path: Path) -> None:
    files = JobFiles("7", tmp_path / "train-7.log")
    files.attempt(0).write_text("a0 first\n")
    looks = iter(range(100))

    def is_over() -> bool:
        n = next(looks)
        if n == 1:  # attempt 0 ends without a newline; Slurm requeues; attempt 1 starts
            with files.attempt(0).open("a") as handle:
                handle.write("a0 stopped")
            files.attempt(1).write_text("a1 resumed\n")
        if n == 2:
            with files.attempt(1).open("a") as handle:
                handle.write("a1 done\n")
        return n >= 2

    lines = list(follow(files, batch=False, is_over=is_over, interval_s=0))
    assert lines == ["a0 first", "a0 stopped", "a1 resumed", "a1 done"]


def test_the_files_chosen(tmp_path: Path) -> None:
    files = JobFiles("7", tmp_path / "train-7.log")
    for n in (0, 1, 10, 2):
        files.attempt(n).write_text("")
    assert [p.name for p in chosen(files, None, False)] == [
        "train-7.attempt0.log", "train-7.attempt1.log", "train-7.attempt2.log",
        "train-7.attempt10.log"]
    assert chosen(files, 3, False) == [files.attempt(3)]
    assert chosen(files, None, True) == [files.batch]
