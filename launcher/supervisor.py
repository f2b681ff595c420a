"""The in-allocation supervisor: ``aiinfra attempt SNAPSHOT -- LAUNCH...``.

The batch script keeps its environment and execs this with the visible launch line. Per
attempt it owns: the preflight gate, starting the step, the signals (USR2 before the time
limit and TERM become a stop file that the ranks' checkpoint helpers poll), checkpoint
progress, how the attempt ended, the decision (pure: :mod:`.requeue`), the ledger line,
and acting on it (``scontrol requeue`` with exclusions, or a final state and exit code).
Everything about the job comes from the submit-time snapshot.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from . import checkpoint, ledger, slurm
from .errors import SlurmError
from .files import write_atomic
from .render import gate_enabled, slug
from .requeue import (Attempt, Budget, Decision, Evidence, Outcome, Room, classify, decide,
                      time_limit_reached)
from .snapshot import Snapshot, read_snapshot
from .submit import self_argv

PREFIX = "aiinfra:"
STEP_SETTLE_S = 20.0  # slurmdbd records a step's end asynchronously


@dataclass(frozen=True)
class Context:
    """One attempt of one job, from the snapshot and Slurm's environment."""

    snapshot: Snapshot
    job_id: str
    attempt: int
    nodes: tuple[str, ...]
    log_dir: Path
    slug: str
    aiinfra: tuple[str, ...]

    @property
    def stem(self) -> Path:
        return self.log_dir / f"{self.slug}-{self.job_id}"

    @property
    def step_log(self) -> Path:
        return self.stem.with_name(f"{self.stem.name}.attempt{self.attempt}.log")

    @property
    def stop_file(self) -> Path:
        return self.stem.with_name(f"{self.stem.name}.attempt{self.attempt}.stop")

    @property
    def ledger(self) -> Path:
        return ledger.ledger_path(self.log_dir, self.slug, self.job_id)

    @property
    def checkpoint_dir(self) -> Path | None:
        directory = self.snapshot.job.job.checkpoint.dir
        return None if directory is None else self.workdir / directory

    @property
    def workdir(self) -> Path:
        return self.snapshot.cwd / (self.snapshot.job.job.workdir or ".")


def context(snapshot_path: Path, environ: Mapping[str, str]) -> Context:
    snap = read_snapshot(snapshot_path)
    job, prof = snap.job.job, snap.profile.profile
    workdir = snap.cwd / (job.workdir or ".")
    return Context(snapshot=snap, job_id=environ["SLURM_JOB_ID"],
                   attempt=int(environ.get("SLURM_RESTART_COUNT") or 0),
                   nodes=slurm.hostnames(environ["SLURM_JOB_NODELIST"]),
                   log_dir=workdir / job.log_dir, slug=slug(job.name),
                   aiinfra=(prof.aiinfra,) if prof.aiinfra else self_argv())


def say(text: str) -> None:
    print(f"{PREFIX} {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- signals

class Signals:
    """USR2 (time limit ahead) and TERM: remember them and write the stop file once."""

    def __init__(self, stop_file: Path) -> None:
        self.stop_file = stop_file
        self.received: set[str] = set()
        self.first_at: float | None = None

    def install(self) -> None:
        for signum in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.add(signal.Signals(signum).name.removeprefix("SIG"))
        if self.first_at is None:
            self.first_at = time.time()
            self.stop_file.touch()
            say(f"SIG{signal.Signals(signum).name.removeprefix('SIG')} at {self.first_at:.3f}: "
                f"the ranks are asked to checkpoint and stop ({self.stop_file})")

    def ignore_term(self) -> None:
        """`scontrol requeue` signals this process too: it must finish its work first."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ---------------------------------------------------------------- the gate

def gate(ctx: Context) -> tuple[str, ...] | None:
    """Run the preflight tier on every node; the bad nodes, or None when the gate itself
    cannot run (no node could even write a report): then the job fails at once."""
    from aiinfra.health.gate import judge

    health = ctx.snapshot.profile.profile.health
    out = ctx.stem.with_name(f"{ctx.stem.name}.attempt{ctx.attempt}.health")
    out.mkdir(parents=True, exist_ok=True)
    count = str(len(ctx.nodes))
    argv = ["srun", f"--nodes={count}", f"--ntasks={count}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=0", *ctx.aiinfra, "health", "run", "--profile",
            str(ctx.snapshot.path), "--tier", health.gate_tier, "--fail-fast",
            "--output-dir", str(out)]
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
    verdict = judge(out, list(ctx.nodes))
    for line in verdict.messages:
        say(f"preflight: {line}")
    if not any(out.glob("*.json")):
        return None
    return tuple(verdict.bad)


def room(ctx: Context) -> Room:
    """Where the job may still run: its partition's nodes, less its own ``--exclude``."""
    job, prof = ctx.snapshot.job.job, ctx.snapshot.profile.profile
    partition = job.partition or prof.partition
    own = own_exclude(ctx.snapshot)
    return Room(slurm.partition_nodes(partition), job.nodes, slurm.hostnames(own or ""))


def own_exclude(snap: Snapshot) -> str | None:
    """The job's own ``--exclude`` (job file over profile): kept in every ExcNodeList."""
    own = {**snap.profile.profile.sbatch, **snap.job.job.sbatch}.get("exclude")
    return own if isinstance(own, str) else None


# ---------------------------------------------------------------- the step

def launch(ctx: Context, argv: Sequence[str]) -> int:
    """Run the launch line with its output in the attempt's step log; its return code."""
    with open(ctx.step_log, "ab") as log:
        child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=_child_env(ctx))
        return child.wait()


def _child_env(ctx: Context) -> dict[str, str]:
    return {**os.environ, "AIINFRA_STOP_FILE": str(ctx.stop_file),
            "AIINFRA_CHECKPOINT_KEEP": str(ctx.snapshot.job.job.checkpoint.keep)}


def serve(ctx: Context, argv: Sequence[str], head: str) -> int:
    """An inference server: once the head node accepts connections on the server's port,
    its URL goes to the endpoint file (atomically); then wait for the server to end."""
    server = ctx.snapshot.job.job.server
    assert server is not None  # the spec requires [server] for inference jobs
    with open(ctx.step_log, "ab") as log:
        child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=_child_env(ctx))
        if not _wait_port(head, server.port, server.ready_timeout_s, child):
            child.terminate()
            child.wait()
            return 1
        url = f"http://{head}:{server.port}"
        write_atomic(ctx.stem.with_name(f"{ctx.stem.name}.endpoint"), url + "\n")
        say(f"serving at {url}")
        return child.wait()


def _wait_port(host: str, port: int, timeout_s: float, child: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            say(f"server exited ({child.returncode}) before listening on {host}:{port}")
            return False
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(1)
    say(f"server not listening on {host}:{port} after {timeout_s:g} s")
    return False


def evidence(ctx: Context, returncode: int, signals: Signals, first_step: int) -> Evidence:
    """What Slurm says about the attempt that just ended (the step line is the truth);
    ``first_step``: the number of the command's step (1 after a preflight gate's step)."""
    info = slurm.job_info(ctx.job_id)
    return Evidence(step=_step_line(ctx, first_step), returncode=returncode,
                    signals=frozenset(signals.received), preempt_time=info.preempt_time is not None,
                    requeued=info.restarts > ctx.attempt, job_state=info.state,
                    time_limit=time_limit_reached(info.end_time, datetime.datetime.now()),
                    unresponsive=slurm.unresponsive_nodes(",".join(ctx.nodes)))


def _step_line(ctx: Context, first_step: int) -> slurm.AcctRow | None:
    """This attempt's launched step, once slurmdbd has recorded it and its end (it lags a
    little: read too early, the newest numbered step is the gate's, COMPLETED 0:0)."""
    deadline = time.monotonic() + STEP_SETTLE_S
    while True:
        try:
            runs = slurm.job_history(ctx.job_id)
        except SlurmError:
            runs = ()
        step = runs[-1].launched_step(first_step) if runs else None
        if (step is not None and step.state not in ("RUNNING", "PENDING")) \
                or time.monotonic() > deadline:
            return step
        time.sleep(1)


def progress(ctx: Context) -> int | None:
    directory = ctx.checkpoint_dir
    return None if directory is None else checkpoint.latest_step(directory)


# ---------------------------------------------------------------- deciding and acting

def budget(ctx: Context) -> Budget:
    return Budget(max_restarts=ctx.snapshot.job.job.checkpoint.max_restarts,
                  gate_retries=ctx.snapshot.profile.profile.health.gate_retries)


def past_attempts(ctx: Context) -> tuple[ledger.Entry, ...]:
    """The ledger so far, with attempts that died without their line filled in."""
    entries = ledger.read(ctx.ledger).entries
    try:
        runs = slurm.job_history(ctx.job_id)
    except SlurmError:
        return entries
    return ledger.reconcile(entries, runs[:-1])  # the last run is this attempt


def conclude(ctx: Context, attempt: Attempt, start: str, signals: Signals) -> int:
    """Decide, write the ledger line, then requeue or end; the batch script's exit code."""
    history = past_attempts(ctx)
    decision = decide(attempt, history, budget(ctx))
    entry = ledger.make_entry(ctx.job_id, ctx.attempt, ctx.nodes, attempt, decision, start,
                              ledger.now_iso())
    ledger.append(ctx.ledger, entry)
    return act(ctx, decision, signals)


def act(ctx: Context, decision: Decision, signals: Signals) -> int:
    if decision.action == "requeue":
        signals.ignore_term()
        excluding = f" (excluding {','.join(decision.exclude)})" if decision.exclude else ""
        say(f"attempt {ctx.attempt}: {decision.reason}{excluding}")
        slurm.requeue(ctx.job_id, decision.exclude)
        return 0
    say(f"final: {decision.state}: {decision.reason}")
    return 0 if decision.state == "COMPLETED" else 1


def supervise(ctx: Context, argv: Sequence[str], serve_at: str | None = None) -> int:
    """One attempt, start to decision; ``serve_at``: an inference server's head address."""
    start = ledger.now_iso()
    signals = Signals(ctx.stop_file)
    signals.install()
    gated = gate_enabled(ctx.snapshot.job.job, ctx.snapshot.profile.profile.health)
    if gated:
        bad = gate(ctx)
        if bad is None:
            say(f"preflight: the gate itself failed: is {' '.join(ctx.aiinfra)} runnable on "
                "the compute nodes? The command did not run")
            return 1
        if bad:
            verdict = classify(Evidence(bad_nodes=bad))
            return conclude(ctx, Attempt(verdict, room=room(ctx)), start, signals)
        say(f"preflight passed on {' '.join(ctx.nodes)}")
    before = progress(ctx)
    code = launch(ctx, argv) if serve_at is None else serve(ctx, argv, serve_at)
    say(f"attempt {ctx.attempt} command returned {code}")
    outcome: Outcome = classify(evidence(ctx, code, signals, 1 if gated else 0))
    return conclude(ctx, Attempt(outcome, before, progress(ctx)), start, signals)

