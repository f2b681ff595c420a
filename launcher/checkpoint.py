"""Checkpoint helpers for training code: ``from aiinfra import checkpoint as ckpt``.

Layout of the checkpoint directory (``AIINFRA_CHECKPOINT_DIR`` or ``directory=``)::

    step-00000040.pt         the state, torch.save (pickle when torch is not imported)
    step-00000040.complete   the marker: JSON with the step, the format and, per file,
                             its size and sha256; written last, so no marker = incomplete
    step-00000050.dcp/       a torch.distributed.checkpoint directory (sharded state)
    step-00000050.complete

A save writes a temporary name in the same directory, fsyncs it, renames it, fsyncs the
directory, then writes the marker the same way. A checkpoint counts only with a marker
whose sizes and hashes match, so a save killed at any point leaves the previous checkpoint
the newest valid one. Step discovery (:func:`latest_step`) reads names and markers only:
it never imports torch, so the supervisor can measure progress.

With torch.distributed (or mpi4py) initialized, replicated state is written by rank 0
only, every rank returns from :func:`save` once the checkpoint is durable, every rank
loads the step rank 0 chose, and :func:`stop_requested` answers the same on every rank.

Stopping: once :func:`stop_requested` (or :func:`install_signal_handlers`) has been
called, SIGTERM and SIGUSR2 only set a flag (checkpointing happens at a step boundary,
never in a handler); a program that never asks keeps the default behaviour (it dies). The
supervisor also writes ``AIINFRA_STOP_FILE`` for ranks that no signal reaches (torchrun's
agent forwards neither USR1 nor USR2).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

from .errors import AiinfraError
from .files import fsync_dir

ENV_DIR = "AIINFRA_CHECKPOINT_DIR"
ENV_KEEP = "AIINFRA_CHECKPOINT_KEEP"
ENV_STOP = "AIINFRA_STOP_FILE"
DEFAULT_KEEP = 3
STOP_FILE_INTERVAL_S = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
_MARKER = re.compile(r"^step-(\d{8,})\.complete$")
_DATA = re.compile(r"^step-(\d{8,})\.(pt|pkl|dcp)$")
_TEMP = re.compile(r"^\.step-(\d{8,})\..*tmp$")
_CHUNK = 1 << 20


class CheckpointError(AiinfraError):
    """No checkpoint directory, a bad argument, or a checkpoint that cannot be loaded."""


@dataclass(frozen=True)
class FileSum:
    path: str  # relative to the checkpoint directory
    size: int
    sha256: str


@dataclass(frozen=True)
class Marker:
    """A complete checkpoint's marker: what was written and how to check it."""

    step: int
    format: str  # "torch", "pickle" or "dcp"
    data: str  # the data file's or directory's name
    files: tuple[FileSum, ...]
    written: str


# --- where, how many ---------------------------------------------------------------------------

def checkpoint_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """``directory``, else ``$AIINFRA_CHECKPOINT_DIR`` (set from the job's ``[checkpoint] dir``)."""
    chosen = directory if directory is not None else os.environ.get(ENV_DIR)
    if not chosen:
        raise CheckpointError(f"no checkpoint directory: set [checkpoint] dir in the job file "
                              f"(exported as {ENV_DIR}) or pass directory=")
    return Path(chosen)


def keep_count(keep: int | None = None) -> int:
    """``keep``, else ``$AIINFRA_CHECKPOINT_KEEP``, else 3: how many checkpoints stay."""
    text = str(keep) if keep is not None else os.environ.get(ENV_KEEP, str(DEFAULT_KEEP))
    if not text.strip().isdigit() or int(text) < 1:
        raise CheckpointError(f"keep must be a positive integer, not {text!r} ({ENV_KEEP})")
    return int(text)


def _name(step: int, suffix: str) -> str:
    return f"step-{step:08d}.{suffix}"


# --- discovery (torch-free) ----------------------------------------------------------------------

def markers(directory: str | os.PathLike[str] | None = None) -> list[Marker]:
    """Every readable marker, newest step first (not yet checked against the data)."""
    root = checkpoint_dir(directory)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = [m for m in (_read_marker(root / n) for n in names if _MARKER.match(n)) if m]
    return sorted(found, key=lambda m: m.step, reverse=True)


def _read_marker(path: Path) -> Marker | None:
    try:
        data = json.loads(path.read_text())
        files = tuple(FileSum(str(f["path"]), int(f["size"]), str(f["sha256"]))
                      for f in data["files"])
        marker = Marker(int(data["step"]), str(data["format"]), str(data["data"]), files,
                        str(data.get("written", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return marker if path.name == _name(marker.step, "complete") else None


def is_valid(marker: Marker, directory: str | os.PathLike[str] | None = None,
             verify: bool = True) -> bool:
    """Every file of the checkpoint is there with its size, and (``verify``) its hash."""
    root = checkpoint_dir(directory)
    return all(_file_ok(root / f.path, f, verify) for f in marker.files) and bool(marker.files)


def _file_ok(path: Path, expected: FileSum, verify: bool) -> bool:
    try:
        if path.stat().st_size != expected.size:
            return False
        return not verify or _sha256(path) == expected.sha256
    except OSError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def latest_marker(directory: str | os.PathLike[str] | None = None,
                  verify: bool = True) -> Marker | None:
    """The newest checkpoint that is complete and intact, or None."""
    return next((m for m in markers(directory) if is_valid(m, directory, verify)), None)


def latest_step(directory: str | os.PathLike[str] | None = None,
                verify: bool = True) -> int | None:
    """The step of the newest complete, intact checkpoint; None if there is none.

    Reads only file names, markers and (``verify``) the data to hash it; never torch.
    ``verify=False`` checks sizes only (cheap for very large checkpoints).
    """
    marker = latest_marker(directory, verify)
    return marker.step if marker else None


# --- process groups: torch.distributed, mpi4py, or one process -----------------------------------

class _Group(Protocol):
    rank: int

    def barrier(self) -> None: ...
    def broadcast(self, value: int) -> int: ...
    def any(self, flag: bool) -> bool: ...


class _Solo:
    rank = 0

    def barrier(self) -> None:
        return None

    def broadcast(self, value: int) -> int:
        return value

    def any(self, flag: bool) -> bool:
        return flag


class _TorchGroup:
    def __init__(self) -> None:
        import torch.distributed as dist

        self.rank = dist.get_rank()

    def _tensor(self, value: int) -> Any:
        import torch
        import torch.distributed as dist

        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        return torch.tensor([value], dtype=torch.int64, device=device)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast(self, value: int) -> int:
        import torch.distributed as dist

        tensor = self._tensor(value)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def any(self, flag: bool) -> bool:
        import torch.distributed as dist

        tensor = self._tensor(int(flag))
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


class _MpiGroup:
    def __init__(self) -> None:
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()

    def barrier(self) -> None:
        self.comm.Barrier()

    def broadcast(self, value: int) -> int:
        return int(self.comm.bcast(value, root=0))

    def any(self, flag: bool) -> bool:
        from mpi4py import MPI

        return bool(self.comm.allreduce(int(flag), op=MPI.MAX))


def _group() -> _Group:
    """The program's own process group, found without importing anything it did not."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return _TorchGroup()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return _MpiGroup()
    return _Solo()


# --- save ----------------------------------------------------------------------------------------

class _HashingWriter:
    """A binary file that hashes what goes through it (one read of the data, not two)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += view.nbytes
        return self.handle.write(view)

    def flush(self) -> None:
        self.handle.flush()


def save(state: Any, step: int, *, directory: str | os.PathLike[str] | None = None,
         sharded: bool = False, keep: int | None = None) -> Path:
    """Write ``state`` as the checkpoint of ``step``, atomically; return its marker's path.

    Replicated state (the default: DDP, one process) is written by rank 0; every rank
    returns once it is durable. ``sharded=True`` writes a torch.distributed.checkpoint
    directory to which every rank contributes its shards (``state`` is a state dict).
    Older checkpoints beyond ``keep`` (``$AIINFRA_CHECKPOINT_KEEP``, default 3) are removed.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"step must be a non-negative integer, not {step!r}")
    root, count, group = checkpoint_dir(directory), keep_count(keep), _group()
    if group.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
    if sharded:
        marker: Marker | None = _save_sharded(state, step, root, group)
    else:
        marker = _save_file(state, step, root) if group.rank == 0 else None
    if marker is not None and group.rank == 0:
        _write_marker(root, marker)
        prune(root, count)
    group.barrier()
    return root / _name(step, "complete")


def _save_file(state: Any, step: int, root: Path) -> Marker:
    fmt, suffix = ("torch", "pt") if "torch" in sys.modules else ("pickle", "pkl")
    final = root / _name(step, suffix)
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    try:
        with tmp.open("wb") as handle:
            writer = _HashingWriter(handle)
            _dump(state, writer, fmt)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(root)
    return Marker(step, fmt, final.name,
                  (FileSum(final.name, writer.size, writer.digest.hexdigest()),), _now())


def _dump(state: Any, writer: _HashingWriter, fmt: str) -> None:
    if fmt == "torch":
        import torch

        torch.save(state, writer)  # type: ignore[arg-type]  # a file-like with write()
    else:
        pickle.dump(state, writer, protocol=pickle.HIGHEST_PROTOCOL)


def _save_sharded(state: Any, step: int, root: Path, group: _Group) -> Marker:
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    final = root / _name(step, "dcp")
    tmp = root / f".{final.name}.tmp"
    if group.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    group.barrier()
    dcp_save(state, checkpoint_id=tmp)
    group.barrier()
    if group.rank != 0:
        return Marker(step, "dcp", final.name, (), "")
    files = tuple(FileSum(f"{final.name}/{p.relative_to(tmp)}", p.stat().st_size, _sha256(p))
                  for p in sorted(tmp.rglob("*")) if p.is_file())
    for path in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        fsync_dir(path)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(root)
    return Marker(step, "dcp", final.name, files, _now())


def _write_marker(root: Path, marker: Marker) -> None:
    body = {"step": marker.step, "format": marker.format, "data": marker.data,
            "written": marker.written,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in marker.files]}
    final = root / _name(marker.step, "complete")
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    with tmp.open("w") as handle:
        json.dump(body, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_dir(root)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def prune(directory: str | os.PathLike[str], keep: int) -> list[str]:
    """Remove all but the ``keep`` newest complete checkpoints, and leftovers of killed saves.

    A marker goes before its data, so a removal cut short leaves an incomplete checkpoint,
    never a marker without data. Returns the names removed.
    """
    root = Path(directory)
    kept = {m.step for m in markers(root) if is_valid(m, root, verify=False)}
    kept = set(sorted(kept, reverse=True)[:keep])
    names = os.listdir(root)
    doomed = [n for n in names if _MARKER.match(n) and _step_of(n) not in kept]
    doomed += [n for n in names if _DATA.match(n) and _step_of(n) not in kept]
    doomed += [n for n in names if _TEMP.match(n)]
    for name in doomed:
        _remove(root / name)
    return doomed


def _step_of(name: str) -> int:
    match = _MARKER.match(name) or _DATA.match(name)
    return int(match.group(1)) if match else -1


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- load ----------------------------------------------------------------------------------------

def load_latest(default: Any = None, *, directory: str | os.PathLike[str] | None = None,
                into: Any = None, map_location: Any = "cpu") -> Any:
    """The newest complete, intact checkpoint's state, or ``default`` when there is none.

    Rank 0 chooses the step (checking sizes and hashes, skipping incomplete or corrupt
    checkpoints) and every rank loads that one. A sharded checkpoint loads in place into
    ``into`` (a state dict with the same keys), which is returned.
    """
    root, group = checkpoint_dir(directory), _group()
    chosen = latest_marker(root) if group.rank == 0 else None
    step = group.broadcast(chosen.step if chosen else -1)
    if step < 0:
        return default
    marker = chosen or _marker_for(root, step)
    if marker.format == "dcp":
        return _load_sharded(root / marker.data, into)
    return _load_file(root / marker.data, marker.format, map_location)


def _marker_for(root: Path, step: int) -> Marker:
    marker = _read_marker(root / _name(step, "complete"))
    if marker is None:
        raise CheckpointError(f"rank 0 chose step {step} but {root} has no readable marker "
                              "for it here: is the checkpoint directory shared by all nodes?")
    return marker


def _load_file(path: Path, fmt: str, map_location: Any) -> Any:
    if fmt == "pickle":
        with path.open("rb") as handle:
            return pickle.load(handle)
    import torch

    # The job's own files: full unpickling, so RNG states and optimizer objects load.
    return torch.load(path, map_location=map_location, weights_only=False)


def _load_sharded(path: Path, into: Any) -> Any:
    if into is None:
        raise CheckpointError(f"{path.name} is a sharded checkpoint: pass into=<state dict> "
                              "to load it in place")
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    dcp_load(into, checkpoint_id=path)
    return into


# --- stopping ------------------------------------------------------------------------------------

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class _StopFlag:
    """Set by SIGTERM/SIGUSR2 or by the supervisor's stop file; read at step boundaries."""

    def __init__(self) -> None:
        self.signalled: int | None = None
        self.installed = False
        self.previous: dict[int, Handler] = {}
        self.file_seen = False
        self.checked_at = float("-inf")
        self.agreed = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = signum  # nothing else here: the training loop checkpoints
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def file_exists(self) -> bool:
        path = os.environ.get(ENV_STOP)
        now = time.monotonic()
        if path and not self.file_seen and now - self.checked_at >= STOP_FILE_INTERVAL_S:
            self.checked_at = now
            self.file_seen = os.path.exists(path)
        return self.file_seen

    def local(self) -> bool:
        return self.signalled is not None or self.file_exists()


_STOP = _StopFlag()


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGUSR2 set the stop flag (main thread only; once per process)."""
    if _STOP.installed or not _main_thread():
        return
    for signum in STOP_SIGNALS:
        _STOP.previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _STOP.handle)
    _STOP.installed = True


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def stop_requested() -> bool:
    """True once this job should checkpoint and exit: the same answer on every rank.

    The first call installs the signal handlers (:func:`install_signal_handlers`). Local
    evidence is a SIGTERM/SIGUSR2 received by this process or the file named by
    ``$AIINFRA_STOP_FILE`` (looked at most every second). Under torch.distributed or
    mpi4py the ranks all-reduce it (MAX), so call this on every rank at the same points.
    Once True it stays True, without further collectives.
    """
    install_signal_handlers()
    if not _STOP.agreed:
        _STOP.agreed = _group().any(_STOP.local())
    return _STOP.agreed


def stop_signal() -> int | None:
    """The signal that asked this process to stop, if one did (for logs)."""
    return _STOP.signalled


def complete_steps(directory: str | os.PathLike[str] | None = None,
                   verify: bool = False) -> list[int]:
    """Steps of the complete checkpoints, newest first (sizes checked; hashes if ``verify``)."""
    return [m.step for m in markers(directory) if is_valid(m, directory, verify)]
