"""The sweep driver: find nodes, run the checks through Slurm jobs, decide, drain/resume.

Side effects live here (Slurm through :mod:`aiinfra.launcher.slurm`, files, the lock); the
decisions are :mod:`.sweep`'s pure functions. A dry run runs the checks on the nodes that
can take a job and shows every action, but changes no node, reservation, history or file
outside its run directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from .. import __version__
from ..launcher.errors import JobNotFound
from ..launcher import slurm
from ..launcher.files import write_atomic
from ..launcher.profile import LoadedProfile
from .history import NodeRow, ResultRow, RunRow, connect, recent, record, rows_from_report
from .result import Status
from .sweep import (Batch, Decision, NodeResult, NodeState, Plan, Summary, SweepError,
                    SweepSettings, apply_cap, classify, decide, node_result, plan, skipped)

Log = Callable[[str], None]
POLL_S = 2.0
JOURNAL = "pending-redrain.json"


class SweepBusy(SweepError):
    """Another sweep holds the lock."""


class SweepInterrupted(SweepError):
    """The sweep was told to stop (SIGTERM, SIGHUP); it cleaned up first."""


@dataclass(frozen=True)
class Request:
    profile: LoadedProfile
    settings: SweepSettings
    partition: str | None = None
    nodes: str | None = None
    dry_run: bool = False


def state_dir(s: SweepSettings) -> Path:
    default = Path.home() / ".local" / "state" / "aiinfra" / "sweep"
    return Path(s.state_dir).expanduser() if s.state_dir else default


def history_path(s: SweepSettings) -> Path:
    return Path(s.history).expanduser() if s.history else state_dir(s) / "history.sqlite"


@contextmanager
def sweep_lock(path: Path) -> Iterator[None]:
    """One sweep at a time. flock: the kernel drops the lock when its holder dies, even
    by SIGKILL, so a crashed sweep never blocks the next one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise SweepBusy(f"another sweep is running ({holder}; lock {path}): "
                            "not starting a second one") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise, so that `finally` blocks restore nodes and reservations."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise SweepInterrupted(f"stopped by signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def run_sweep(req: Request, log: Log) -> Summary:
    s = req.settings
    sdir = state_dir(s)
    with sweep_lock(sdir / "sweep.lock"), stop_on_signals():
        recover(sdir, req.dry_run, log)
        partition = req.partition or req.profile.profile.partition
        states = [NodeState(*t) for t in slurm.node_states(partition, req.nodes)]
        if not states:
            raise SweepError(f"no nodes in partition {partition!r}"
                             + (f" matching {req.nodes!r}" if req.nodes else ""))
        return Sweep(req, sdir, partition, states, log).run()


class Sweep:
    """One run: its plan, jobs, reservation and results."""

    def __init__(self, req: Request, sdir: Path, partition: str, states: list[NodeState],
                 log: Log) -> None:
        self.req, self.s, self.log = req, req.settings, log
        self.partition = partition
        self.states = {n.name: n for n in states}
        self.plan: Plan = plan(states, self.s, reserve=not req.dry_run)
        self.run_id = new_run_id()
        self.run_dir = sdir / "runs" / self.run_id
        self.reports = self.run_dir / "reports"
        self.journal = sdir / JOURNAL
        self.reservation = f"aiinfra-sweep-{self.run_id}"
        self.job_name = f"aiinfra-sweep-{self.run_id}"
        self.started = time.time()
        self.raw: dict[str, dict[str, Any] | None] = {}

    def run(self) -> Summary:
        p = self.plan
        self.log(f"sweep {self.run_id}: {len(self.states)} nodes, {len(p.swept)} to check in "
                 f"{len(p.batches)} job(s), {len(p.skipped)} skipped; run dir {self.run_dir}")
        self.reports.mkdir(parents=True, exist_ok=True)
        decisions: list[Decision] = []
        results: dict[str, NodeResult] = {}
        try:
            if p.reserve:
                self.hold(p.reserve)
            jobs = [self.submit(i, b) for i, b in enumerate(p.batches, 1)]
            self.wait(jobs)
            results = {n: self.result(n) for n in p.swept}
            decisions, cap = self.decide(results)
            decisions = self.apply(decisions)
        finally:
            if p.reserve:
                self.release(p.reserve, decisions)
        summary = Summary(self.run_id, tuple(decisions), cap, self.req.dry_run)
        if not self.req.dry_run:
            self.record(summary, results)
        return summary

    # ------------------------------------------------------------ reservation

    def hold(self, nodes: Sequence[str]) -> None:
        """Our drained nodes under a maint reservation, then resumed: only the sweep's
        jobs can land there. The journal lets the next sweep re-drain them if this one
        dies without cleaning up (SIGKILL, a crash of the machine)."""
        reasons = {n: self.states[n].reason for n in nodes}
        write_atomic(self.journal, json.dumps({"reservation": self.reservation,
                                               "nodes": reasons}, indent=2) + "\n")
        minutes = math.ceil(self.s.deadline_s / 60) + 5
        self.log(f"reserve {','.join(nodes)} as {self.reservation} (maint,ignore_jobs, "
                 f"{minutes} min) and resume them for their check")
        slurm.create_maint_reservation(self.reservation, nodes, minutes, getpass.getuser())
        for node in nodes:
            slurm.resume(node)

    def release(self, nodes: Sequence[str], decisions: Sequence[Decision]) -> None:
        """Drain again every reserved node not decided "resume" (with the decision's
        reason, else its old one), then remove the reservation. Runs even on failure."""
        decided = {d.node: d for d in decisions}
        try:
            for node in nodes:
                d = decided.get(node)
                if d is None or d.action != "resume":
                    slurm.drain(node, d.reason if d and d.reason else self.states[node].reason)
        finally:
            slurm.delete_reservation(self.reservation)
            self.journal.unlink(missing_ok=True)
            self.log(f"reservation {self.reservation} removed")

    # ------------------------------------------------------------ jobs

    def submit(self, index: int, batch: Batch) -> str:
        script = self.run_dir / f"job{index}.sbatch"
        text = self.script(index, batch, script)
        write_atomic(script, text, mode=0o755)
        job_id = slurm.sbatch(script)
        self.log(f"job {index}: {job_id} on {','.join(batch.nodes)}"
                 + (f" (reservation {self.reservation})" if batch.reservation else ""))
        return job_id

    def script(self, index: int, batch: Batch, path: Path) -> str:
        from ..launcher.render import template_env

        minutes = math.ceil(self.s.deadline_s / 60) + 1
        options: dict[str, str | None] = {
            "job-name": self.job_name, "partition": self.partition,
            "nodes": str(len(batch.nodes)), "nodelist": ",".join(batch.nodes),
            "ntasks-per-node": "1", "exclusive": None, "no-requeue": None,
            "time": str(minutes), "output": str(self.run_dir / f"job{index}-%j.log"),
            "chdir": str(self.run_dir)}
        if batch.reservation:
            options["reservation"] = self.reservation
        check = [sys.executable, "-m", "aiinfra", "health", "run", "--profile",
                 str(self.req.profile.path), "--tier", self.s.tier,
                 "--output-dir", str(self.reports)]
        return template_env().get_template("sweep.sh.j2").render(
            version=__version__, run_id=self.run_id, index=index, count=len(self.plan.batches),
            profile_name=self.req.profile.name, profile_path=str(self.req.profile.path),
            nodes=batch.nodes, submit_argv=["sbatch", "--parsable", str(path)],
            sbatch=sorted(options.items()), check=check)

    def wait(self, jobs: Sequence[str]) -> None:
        """Until every node reported, or no job is left, or the deadline: then cancel ours."""
        deadline = time.monotonic() + self.s.deadline_s
        want = set(self.plan.swept)
        while jobs:
            if want <= {p.stem for p in self.reports.glob("*.json")}:
                return
            live = slurm.jobs_named(self.job_name)
            if not live:
                return
            if time.monotonic() > deadline:
                self.log(f"deadline of {self.s.deadline_s:g} s: cancelling {','.join(live)}")
                for job_id in live:
                    with contextlib.suppress(JobNotFound):  # it may end meanwhile
                        slurm.cancel(job_id)
                return
            time.sleep(POLL_S)

    def result(self, node: str) -> NodeResult:
        """The node's report (written atomically by `health run --output-dir`), if any."""
        try:
            report = json.loads((self.reports / f"{node}.json").read_text())
        except (OSError, ValueError):
            report = None
        self.raw[node] = report
        return node_result(node, report)

    # ------------------------------------------------------------ decisions

    def decide(self, results: Mapping[str, NodeResult]) -> tuple[list[Decision], str | None]:
        limit = max(self.s.drain_after, self.s.resume_after)
        past = self.history(list(results), limit)
        checked = [decide(self.states[n], r, past.get(n, []), self.s) for n, r in results.items()]
        checked, cap = apply_cap(checked, len(results), self.s.max_drain_fraction)
        others = [skipped(n, why) for n, why in self.plan.skipped.items()]
        order = {name: i for i, name in enumerate(self.states)}
        return sorted(checked + others, key=lambda d: order[d.node]), cap

    def history(self, nodes: list[str], limit: int) -> dict[str, list[Status]]:
        path = history_path(self.s)
        if not path.exists():
            return {}
        with connect(path) as conn:
            return recent(conn, nodes, limit)

    def apply(self, decisions: Sequence[Decision]) -> list[Decision]:
        """New drains, each only if the node is still available when the sweep acts (a
        node someone drained meanwhile keeps their reason). The reserved nodes are
        drained again or let go by :meth:`release`."""
        drains = [d for d in decisions if d.action == "drain"]
        if not drains or self.req.dry_run:
            return list(decisions)
        now = {n: NodeState(n, st, r) for n, st, r in
               slurm.node_states(nodes=",".join(d.node for d in drains))}
        kept = []
        for d in decisions:
            fresh = now.get(d.node)
            if d.action == "drain" and (fresh is None or classify(fresh) not in ("idle", "busy")):
                why = f"{fresh.state}: {fresh.reason}" if fresh else "gone from sinfo"
                self.log(f"not draining {d.node}: it changed during the sweep ({why})")
                kept.append(replace(d, action="none", outcome="skipped",
                                    note=f"changed during the sweep ({why})"))
                continue
            if d.action == "drain":
                slurm.drain(d.node, d.reason)
                self.log(f"drained {d.node}: {d.reason}")
            kept.append(d)
        return kept

    def record(self, summary: Summary, results: Mapping[str, NodeResult]) -> None:
        nodes = [NodeRow(d.node, d.status, d.action, d.reason) for d in summary.decisions
                 if d.status is not None]
        rows = [r for n, res in results.items()
                for r in rows_from_report(n, self.raw.get(n), res.note)]
        run = RunRow(self.run_id, self.started, time.time(), self.req.profile.name,
                     self.s.tier, summary.status, summary.cap_message is not None)
        with connect(history_path(self.s)) as conn:
            record(conn, run, nodes, rows)
        if self.s.textfile:
            write_atomic(Path(self.s.textfile), textfile(summary, rows, self.started))


def recover(sdir: Path, dry_run: bool, log: Log) -> None:
    """A sweep that died holding nodes out of their drain: drain them again, drop its
    reservation. Only nodes that are not drained now, and carry no foreign reason."""
    journal = sdir / JOURNAL
    if not journal.exists():
        return
    data = json.loads(journal.read_text())
    reasons: dict[str, str] = data["nodes"]
    now = {name: NodeState(name, state, reason) for name, state, reason
           in slurm.node_states(nodes=",".join(reasons))}
    verb = "would drain" if dry_run else "drain"
    for node, reason in reasons.items():
        state = now.get(node)
        if state is not None and classify(state) in ("idle", "busy"):
            log(f"recovering from an interrupted sweep: {verb} {node} again: {reason}")
            if not dry_run:
                slurm.drain(node, reason)
    if dry_run:
        return
    if data["reservation"] in slurm.reservations():
        slurm.delete_reservation(data["reservation"])
    journal.unlink()


# ---------------------------------------------------------------- Prometheus

def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def textfile(summary: Summary, rows: Sequence[ResultRow], when: float) -> str:
    """The node_exporter textfile: per-node and per-check status, the run's time."""
    lines = [
        "# HELP aiinfra_health_check_status Last sweep's status per node and check "
        "(0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN).",
        "# TYPE aiinfra_health_check_status gauge"]
    lines += [f'aiinfra_health_check_status{{node="{_label(r.node)}",check="{_label(r.check)}"}} '
              f"{int(r.status)}" for r in rows]
    lines += ["# HELP aiinfra_health_node_status Last sweep's worst status per node.",
              "# TYPE aiinfra_health_node_status gauge"]
    lines += [f'aiinfra_health_node_status{{node="{_label(d.node)}",action="{d.action}"}} '
              f"{int(d.status)}" for d in summary.decisions if d.status is not None]
    lines += ["# HELP aiinfra_health_sweep_nodes Nodes per outcome in the last sweep.",
              "# TYPE aiinfra_health_sweep_nodes gauge"]
    lines += [f'aiinfra_health_sweep_nodes{{outcome="{o}"}} {len(summary.named(o))}'
              for o in ("drained", "resumed", "unchanged", "skipped")]
    lines += ["# HELP aiinfra_health_sweep_capped 1 when the blast-radius cap stopped drains.",
              "# TYPE aiinfra_health_sweep_capped gauge",
              f"aiinfra_health_sweep_capped {int(summary.cap_message is not None)}",
              "# HELP aiinfra_health_sweep_status The sweep's Nagios status.",
              "# TYPE aiinfra_health_sweep_status gauge",
              f"aiinfra_health_sweep_status {int(summary.status)}",
              "# HELP aiinfra_health_sweep_timestamp_seconds When the last sweep started.",
              "# TYPE aiinfra_health_sweep_timestamp_seconds gauge",
              f"aiinfra_health_sweep_timestamp_seconds {when:.3f}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- settings sources

def settings_for(profile: LoadedProfile, settings_file: Path | None, sets: Sequence[str],
                 flags: Mapping[str, Any]) -> SweepSettings:
    """The profile's ``[health.sweep]`` (once the profile schema carries it), then a
    ``--settings`` file's ``[sweep]`` table, then ``--set KEY=VALUE``, then named flags."""
    from ..launcher.errors import SpecError
    from ..launcher.schema import read_toml

    tables: list[tuple[str, Mapping[str, Any]]] = []
    health = profile.raw.get("health", {})
    if isinstance(health, Mapping) and isinstance(health.get("sweep"), Mapping):
        tables.append((f"{profile.path}: health.sweep", health["sweep"]))
    if settings_file is not None:
        data = read_toml(settings_file)
        extra = sorted(set(data) - {"sweep"})
        if extra:
            raise SpecError(str(settings_file), extra[0], "unknown key", ["sweep"])
        tables.append((f"{settings_file}: sweep", data.get("sweep", {})))
    tables += [(f"--set {key}", {key: value}) for key, value in map(_parse_set, sets)]
    tables += [(f"--{name.replace('_', '-')}", {name: value})
               for name, value in flags.items() if value is not None]
    from .sweep import load_settings

    return load_settings(tables)


def _parse_set(text: str) -> tuple[str, Any]:
    import tomllib

    from ..launcher.errors import SpecError

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError("--set", text, "expected KEY=VALUE, e.g. --set drain_after=2")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value
