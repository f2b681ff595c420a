"""Checkpoint helpers in one process: atomic save, latest-valid discovery, keep-last-N,
crash safety (a save killed at any point), the stop flag and the stop file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiinfra.launcher import checkpoint as ck
from aiinfra.launcher.checkpoint import CheckpointError

PY = sys.executable


def python(code: str, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


def save_steps(directory: Path, *steps: int, keep: int = 10) -> None:
    for step in steps:
        ck.save({"step": step, "weights": list(range(step))}, step, directory=directory,
                keep=keep)


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_save_then_load_the_newest(tmp_path: Path) -> None:
    save_steps(tmp_path, 10, 20, 30)
    assert ck.latest_step(tmp_path) == 30
    state = ck.load_latest(directory=tmp_path)
    assert state == {"step": 30, "weights": list(range(30))}
    assert ck.complete_steps(tmp_path, verify=True) == [30, 20, 10]


def test_the_marker_names_the_data_its_size_and_hash(tmp_path: Path) -> None:
    import hashlib

    marker_path = ck.save({"a": 1}, 7, directory=tmp_path)
    assert marker_path == tmp_path / "step-00000007.complete"
    body = json.loads(marker_path.read_text())
    (entry,) = body["files"]
    data = (tmp_path / entry["path"]).read_bytes()
    assert body["step"] == 7 and body["data"] == entry["path"]
    assert entry["size"] == len(data)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_nothing_there_gives_the_default(tmp_path: Path) -> None:
    assert ck.load_latest(default="fresh", directory=tmp_path / "missing") == "fresh"
    assert ck.latest_step(tmp_path) is None


def test_the_directory_comes_from_the_environment(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ck.ENV_DIR, str(tmp_path / "ckpt"))
    ck.save({"x": 1}, 3)
    assert ck.latest_step() == 3 and (tmp_path / "ckpt" / "step-00000003.complete").exists()
    monkeypatch.delenv(ck.ENV_DIR)
    with pytest.raises(CheckpointError, match=r"\[checkpoint\] dir"):
        ck.latest_step()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_data", "bad_marker",
                                    "no_marker", "marker_of_other_step"])
def test_a_damaged_newest_checkpoint_is_skipped(tmp_path: Path, damage: str) -> None:
    save_steps(tmp_path, 10, 20)
    data, marker = tmp_path / "step-00000020.pt", tmp_path / "step-00000020.complete"
    if not data.exists():
        data = tmp_path / "step-00000020.pkl"
    raw = data.read_bytes()
    if damage == "truncate":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        data.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    elif damage == "delete_data":
        data.unlink()
    elif damage == "bad_marker":
        marker.write_text(marker.read_text()[:30])
    elif damage == "no_marker":
        marker.unlink()
    else:
        marker.write_text(marker.read_text().replace('"step": 20', '"step": 21'))
    assert ck.latest_step(tmp_path) == 10
    assert ck.load_latest(directory=tmp_path)["step"] == 10


def test_size_only_discovery_misses_a_flipped_byte_full_discovery_does_not(
        tmp_path: Path) -> None:
    save_steps(tmp_path, 10, 20)
    (data,) = [p for p in tmp_path.glob("step-00000020.*") if p.suffix != ".complete"]
    raw = data.read_bytes()
    data.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    assert ck.latest_step(tmp_path, verify=False) == 20
    assert ck.latest_step(tmp_path) == 10


@pytest.mark.parametrize(("keep_arg", "keep_env", "left"), [
    (None, None, [50, 40, 30]), (None, "1", [50]), (2, "1", [50, 40]), (None, "9", [50, 40, 30,
                                                                                 20, 10]),
])
def test_keep_last_n(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_arg: int | None,
                     keep_env: str | None, left: list[int]) -> None:
    if keep_env is None:
        monkeypatch.delenv(ck.ENV_KEEP, raising=False)
    else:
        monkeypatch.setenv(ck.ENV_KEEP, keep_env)
    for step in (10, 20, 30, 40, 50):
        ck.save({"step": step}, step, directory=tmp_path, keep=keep_arg)
    assert ck.complete_steps(tmp_path) == left
    assert len(names(tmp_path)) == 2 * len(left)


@pytest.mark.parametrize("bad", ["0", "-1", "three", ""])
def test_a_bad_keep_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                bad: str) -> None:
    monkeypatch.setenv(ck.ENV_KEEP, bad)
    with pytest.raises(CheckpointError, match=ck.ENV_KEEP):
        ck.save({}, 1, directory=tmp_path)


@pytest.mark.parametrize("step", [-1, 1.5, "3", True])
def test_a_bad_step_is_an_error(tmp_path: Path, step: object) -> None:
    with pytest.raises(CheckpointError, match="step"):
        ck.save({}, step, directory=tmp_path)  # type: ignore[arg-type]


def test_prune_removes_leftovers_of_killed_saves_and_keeps_other_files(tmp_path: Path) -> None:
    save_steps(tmp_path, 10)
    leftovers = [".step-00000020.pt.4242.tmp", "step-00000030.pt", ".step-00000040.dcp.tmp",
                 ".step-00000050.complete.77.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("mine")
    save_steps(tmp_path, 20)
    assert [n for n in names(tmp_path) if not n.startswith("step-0000001")] == [
        "notes.txt", "step-00000020.complete", f"step-00000020.{_suffix(tmp_path, 20)}"]


def _suffix(directory: Path, step: int) -> str:
    return json.loads((directory / f"step-{step:08d}.complete").read_text())["data"].split(".")[-1]


# --- crash safety: the process dies in the middle of a save ------------------------------------

KILLED_SAVE = """
import os, signal, sys
{imports}
from aiinfra import checkpoint as ckpt

class DieWhenPickled:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)

d = sys.argv[1]
ckpt.save({{"step": 1, "blob": b"x" * 3_000_000}}, 1, directory=d)
if sys.argv[2] == "during_write":
    ckpt.save({{"step": 2, "blob": b"y" * 3_000_000, "die": DieWhenPickled()}}, 2, directory=d)
else:  # the data is renamed into place, the marker is not written yet
    import aiinfra.launcher.checkpoint as impl
    impl._write_marker = lambda root, marker: os.kill(os.getpid(), signal.SIGKILL)
    ckpt.save({{"step": 2}}, 2, directory=d)
"""


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
@pytest.mark.parametrize("when", ["during_write", "before_marker"])
def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path: Path, fmt: str,
                                                             when: str) -> None:
    script = tmp_path / "die.py"
    script.write_text(KILLED_SAVE.format(imports="import torch" if fmt == "torch" else ""))
    directory = tmp_path / "ckpt"
    proc = subprocess.run([PY, str(script), str(directory), when], capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(names(directory)) == 3  # step 1's pair and step 2's temp file or bare data
    assert ck.latest_step(directory) == 1
    assert ck.load_latest(directory=directory)["step"] == 1
    ck.save({"step": 3}, 3, directory=directory)
    assert ck.complete_steps(directory) == [3, 1] and len(names(directory)) == 4


# --- torch-free discovery, formats -------------------------------------------------------------

def test_importing_the_helpers_and_discovering_steps_imports_no_torch(tmp_path: Path) -> None:
    save_steps(tmp_path, 5)
    out = python(f"""
        import sys
        from aiinfra import checkpoint as ckpt
        print(ckpt.latest_step({str(tmp_path)!r}), ckpt.stop_requested())
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mpi4py', 'numpy')))
    """).stdout.split("\n")
    assert out[:2] == ["5 False", "[]"]


def test_without_torch_imported_state_is_pickled_and_loads_with_torch(tmp_path: Path) -> None:
    python(f"""
        from aiinfra import checkpoint as ckpt
        ckpt.save({{"step": 4, "v": [1.5, 2.5]}}, 4, directory={str(tmp_path)!r})
    """)
    assert (tmp_path / "step-00000004.pkl").exists()
    assert ck.load_latest(directory=tmp_path) == {"step": 4, "v": [1.5, 2.5]}


def test_tensors_and_rng_state_round_trip_through_torch(tmp_path: Path) -> None:
    import torch

    state = {"w": torch.randn(3, 4), "rng": torch.get_rng_state(), "step": 9}
    ck.save(state, 9, directory=tmp_path)
    assert (tmp_path / "step-00000009.pt").exists()
    loaded = ck.load_latest(directory=tmp_path)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["rng"], state["rng"])


def test_a_sharded_checkpoint_needs_into(tmp_path: Path) -> None:
    (tmp_path / "step-00000001.dcp").mkdir()
    (tmp_path / "step-00000001.dcp" / ".metadata").write_bytes(b"m")
    ck._write_marker(tmp_path, ck.Marker(1, "dcp", "step-00000001.dcp", (
        ck.FileSum("step-00000001.dcp/.metadata", 1, ck._sha256(
            tmp_path / "step-00000001.dcp" / ".metadata")),), ""))
    assert ck.latest_step(tmp_path) == 1
    with pytest.raises(CheckpointError, match="into="):
        ck.load_latest(directory=tmp_path)


# --- stopping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR2"])
def test_a_stop_signal_sets_the_flag_and_the_process_lives_on(signame: str) -> None:
    out = python(f"""
        import os, signal
        from aiinfra import checkpoint as ckpt
        print(ckpt.stop_requested())
        os.kill(os.getpid(), signal.{signame})
        print(ckpt.stop_requested(), ckpt.stop_signal() == signal.{signame})
        print(ckpt.stop_requested())
    """).stdout.split()
    assert out == ["False", "True", "True", "True"]


def test_a_user_handler_still_runs() -> None:
    out = python("""
        import os, signal
        seen = []
        signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
        from aiinfra import checkpoint as ckpt
        ckpt.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGUSR2)
        print(ckpt.stop_requested(), seen == [signal.SIGUSR2])
    """).stdout.split()
    assert out == ["True", "True"]


def test_save_and_load_leave_signals_alone_until_stop_requested_is_asked(
        tmp_path: Path) -> None:
    proc = python(f"""
        import os, signal
        from aiinfra import checkpoint as ckpt
        ckpt.save({{"step": 1}}, 1, directory={str(tmp_path)!r})
        ckpt.load_latest(directory={str(tmp_path)!r})
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        print("survived")
    """, check=False)
    assert proc.returncode == -signal.SIGTERM and "survived" not in proc.stdout


def test_the_stop_file_is_looked_at_no_more_than_once_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = tmp_path / "stop"
    monkeypatch.setenv(ck.ENV_STOP, str(stop))
    clock = [100.0]
    monkeypatch.setattr(ck.time, "monotonic", lambda: clock[0])
    flag = ck._StopFlag()
    assert flag.local() is False
    stop.touch()
    clock[0] += 0.5
    assert flag.local() is False  # looked 0.5 s ago
    clock[0] += 0.6
    assert flag.local() is True
    stop.unlink()
    assert flag.local() is True  # latched


def test_without_a_stop_file_variable_nothing_is_looked_at(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ck.ENV_STOP, raising=False)
    assert ck._StopFlag().local() is False


def test_the_stop_file_reaches_a_process_through_the_environment(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    out = python("""
        import os, time
        from aiinfra import checkpoint as ckpt
        print(ckpt.stop_requested())
        open(os.environ["AIINFRA_STOP_FILE"], "w").close()
        deadline = time.monotonic() + 5
        while not ckpt.stop_requested() and time.monotonic() < deadline:
            time.sleep(0.05)
        print(ckpt.stop_requested(), ckpt.stop_signal())
    """, env={ck.ENV_STOP: str(stop)}).stdout.split()
    assert out == ["False", "True", "None"]
