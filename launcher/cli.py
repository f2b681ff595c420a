"""The `aiinfra` command. Library errors become messages and exit codes here only.

Start-up stays light for login nodes: this module imports click alone; each command
imports what it needs when it runs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from aiinfra import __version__
from aiinfra.launcher.errors import AiinfraError, SlurmError, SpecError

EXIT_INPUT = 2   # bad job file, profile or flag: nothing was submitted
EXIT_SLURM = 1   # Slurm refused or failed


class InputError(click.ClickException):
    exit_code = EXIT_INPUT


class AiinfraGroup(click.Group):
    """Turns the library's typed errors into one clear line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpecError as exc:
            raise InputError(f"{exc}\nnothing was submitted") from exc
        except SlurmError as exc:
            raise click.ClickException(f"Slurm: {exc}") from exc
        except AiinfraError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=AiinfraGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aiinfra")
def main() -> None:
    """Launch AI training and inference on Slurm."""


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--profile", "-p", "profile_ref", required=True,
              help="Cluster profile: a name (see `aiinfra profiles list`) or a .toml path.")
@click.option("--dry-run", is_flag=True, help="Print the exact script; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print {job_id, script, log} as JSON.")
@click.option("--nodes", type=str, help="Override the job's node count.")
@click.option("--time", "time_limit", type=str, help="Override the time limit (Slurm format).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any job field, e.g. --set env.SEED=3 (repeatable).")
@click.option("--after", multiple=True, metavar="JOBID",
              help="Start only after JOBID completed successfully (afterok; repeatable).")
@click.option("--after-any", multiple=True, metavar="JOBID",
              help="Start only after JOBID ended, however (afterany; repeatable).")
@click.option("--after-notok", multiple=True, metavar="JOBID",
              help="Start only if JOBID failed (afternotok; repeatable).")
def submit(job_file: Path, profile_ref: str, dry_run: bool, as_json: bool, nodes: str | None,
           time_limit: str | None, sets: Sequence[str], after: Sequence[str],
           after_any: Sequence[str], after_notok: Sequence[str]) -> None:
    """Render JOB_FILE's sbatch script for a profile and submit it with sbatch.

    A job named by --after/--after-any/--after-notok must be known to Slurm (squeue or
    sacct), or nothing is submitted."""
    from aiinfra.launcher import submit as submitting

    deps = ([("afterok", j) for j in after] + [("afterany", j) for j in after_any]
            + [("afternotok", j) for j in after_notok])
    overrides = submitting.overrides(nodes=nodes, time_limit=time_limit, sets=sets, after=deps)
    rendered = submitting.prepare(job_file, profile_ref, overrides, Path.cwd())
    if dry_run:
        if as_json:
            _print_json({"job_id": None, "script": str(rendered.script_path),
                         "text": rendered.text})
        else:
            click.echo(rendered.text, nl=False)
        return
    submitting.check_dependencies(deps)
    job_id = submitting.submit(rendered)
    log = str(rendered.log_for(job_id))
    if as_json:
        _print_json({"job_id": job_id, "script": str(rendered.script_path), "log": log})
    else:
        click.echo(job_id)
        click.echo(f"aiinfra: submitted {rendered.script_path}; log {log}", err=True)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job's state (squeue while queued or running, then sacct), then one line per
    attempt from its ledger (nodes, how it ended, checkpoint step before -> after, duration,
    decision) and `final:` once it has ended."""
    from dataclasses import asdict

    from aiinfra.launcher import slurm

    from aiinfra.launcher import attempts

    state = slurm.job_state(_job_id(job_id))
    tried = attempts.job_attempts(state.job_id)
    if as_json:
        _print_json({**asdict(state), **attempts.as_json(tried)})
        return
    restarts = "" if state.restarts is None else f"  restarts={state.restarts}"
    exit_code = f"  exit={state.exit_code}" if state.exit_code else ""
    click.echo(f"{state.job_id}  {state.name}  {state.state}{exit_code}  nodes={state.nodes}"
               f"  elapsed={state.elapsed}{restarts}")
    for line in attempts.status_lines(tried):
        click.echo(line)


@main.command()
@click.argument("job_id")
@click.option("--attempt", type=click.IntRange(0), help="Only this attempt's output.")
@click.option("--batch", is_flag=True, help="The batch log (the supervisor's lines) instead.")
@click.option("--follow", "-f", is_flag=True,
              help="Follow the output as it is written, until the job ends.")
def logs(job_id: str, attempt: int | None, batch: bool, follow: bool) -> None:
    """Print a job's output: every attempt's log in turn (or --attempt N, or --batch).

    The files are found through Slurm (the script's --output line), so this works from any
    directory and after the job has left squeue."""
    from aiinfra.launcher import joblogs

    files = joblogs.files_of(_job_id(job_id))
    if follow:
        for line in joblogs.follow(files, batch, lambda: joblogs.ended(files.job_id)):
            click.echo(line)
        return
    for path in joblogs.chosen(files, attempt, batch):
        if not path.is_file():
            raise click.ClickException(f"{path}: no such file (yet)")
        click.echo(path.read_text(errors="replace"), nl=False)


@main.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job (scancel); an unknown or ended job is an error."""
    from aiinfra.launcher import slurm

    slurm.cancel(_job_id(job_id))
    click.echo(f"cancelled {job_id}")


@main.command()
@click.option("--profile", "-p", "profile_ref", required=True,
              help="Cluster profile (name or path) whose partition the probes run in.")
@click.option("--launcher", "launchers", multiple=True,
              type=click.Choice(["torchrun", "srun", "mpirun"]),
              help="Probe only these launchers [default: all three].")
@click.option("--checkpoint-mb", default=16, show_default=True, type=click.IntRange(1, 65536),
              help="Size of the checkpoint rank 0 saves after the stop.")
@click.option("--lead-s", default=120, show_default=True, type=click.IntRange(1),
              help="The checkpoint.signal_lead_s your jobs will use.")
@click.option("--time", "time_limit", default="01:00:00", show_default=True,
              help="The time limit your jobs will use (Slurm format).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the probes' jobs, logs and checkpoints go (visible to the nodes) "
              "[default: ./aiinfra-doctor].")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(profile_ref: str, launchers: Sequence[str], checkpoint_mb: int, lead_s: int,
           time_limit: str, workdir: Path | None, as_json: bool) -> None:
    """Check the signal, checkpoint and requeue path on this cluster, once per launcher.

    Submits one 2-node probe job per launcher, sends its batch shell USR2 the way
    --signal=B: does, and reports whether every rank saw the stop and how fast, how long
    a checkpoint save took, whether the job's own requeue worked, and whether the lead
    fits the time limit, GraceTime and KillWait. Exit code: 0 OK, 1 WARN, 2 CRIT."""
    from dataclasses import asdict

    from aiinfra.launcher import doctor as checkup
    from aiinfra.launcher.profile import load_profile
    from aiinfra.launcher.slurmtime import TimeFormatError, parse_time

    try:
        limit_s = parse_time(time_limit)
    except TimeFormatError as exc:
        raise click.BadParameter(str(exc), param_hint="--time") from exc
    place = (workdir or Path("aiinfra-doctor")).resolve()
    place.mkdir(parents=True, exist_ok=True)
    partition = load_profile(profile_ref).profile.partition
    probes = checkup.probe_all(profile_ref, place, launchers or checkup.LAUNCHERS,
                               checkpoint_mb, lead_s)
    findings = checkup.evaluate(probes, checkup.site(partition), lead_s, limit_s)
    if as_json:
        _print_json({"probes": [asdict(p) for p in probes],
                     "findings": [asdict(f) for f in findings]})
    else:
        click.echo(checkup.table(findings))
    sys.exit(checkup.worst(findings))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("snapshot", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--serve", is_flag=True, help="The program is an inference server: wait for "
              "its port, write the endpoint file.")
@click.argument("launch", nargs=-1, required=True, type=click.UNPROCESSED)
def attempt(snapshot: Path, serve: bool, launch: tuple[str, ...]) -> None:
    """Run one attempt of a job inside its allocation (the batch script execs this)."""
    import os

    from aiinfra.launcher import supervisor

    ctx = supervisor.context(snapshot, os.environ)
    head = os.environ.get("AIINFRA_HEAD_ADDR", ctx.nodes[0]) if serve else None
    sys.exit(supervisor.supervise(ctx, launch, head))


@main.group()
def profiles() -> None:
    """List and show cluster profiles."""


@profiles.command("list")
def profiles_list() -> None:
    """Every profile found by name, and where it lives."""
    from aiinfra.launcher.profile import available_profiles
    from aiinfra.launcher.schema import read_toml

    for name, path in available_profiles().items():
        description = read_toml(path).get("description", "")
        click.echo(f"{name:<20} {description}  [{path}]")


@profiles.command("show")
@click.argument("ref")
def profiles_show(ref: str) -> None:
    """The resolved profile REF (inheritance applied) as JSON."""
    from aiinfra.launcher.profile import load_profile
    from aiinfra.launcher.schema import as_plain

    loaded = load_profile(ref)
    _print_json({"name": loaded.name, "path": str(loaded.path),
                 "inherits_chain": [str(p) for p in loaded.chain],
                 "profile": as_plain(loaded.profile)})


@main.group()
def health() -> None:
    """Node health checks. Exit code: the worst status (OK 0, WARN 1, CRIT 2, UNKNOWN 3)."""


_profile_option = click.option(
    "--profile", "-p", "profile_ref", envvar="AIINFRA_PROFILE", default="local",
    show_default=True, help="Profile with the thresholds (name or path; env AIINFRA_PROFILE).")
_tier_option = click.option("--tier", type=click.Choice(["quick", "standard", "deep"]),
                            default="quick", show_default=True, help="Which checks to run.")
_node_option = click.option("--node", envvar="SLURMD_NODENAME",
                            help="Node name for per-node thresholds [default: SLURMD_NODENAME "
                                 "or the host name].")


@health.command("list")
def health_list() -> None:
    """Every check: its tier, the facts it reads, what it tests."""
    from aiinfra.health.registry import checks

    for chk in checks().values():
        click.echo(f"{chk.name:<20} {chk.tier:<9} needs {','.join(chk.needs):<12} {chk.doc}")


@health.command("run")
@_profile_option
@_tier_option
@_node_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first CRIT (the preflight gate).")
@click.option("--facts", "facts_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Replay recorded facts (from `health record`) instead of reading this node.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the JSON report to DIR/NODE.json (atomically).")
@click.option("--check", "only", multiple=True, metavar="NAME",
              help="Run only this check, whatever its tier (repeatable).")
def health_run(profile_ref: str, tier: str, node: str | None, as_json: bool, fail_fast: bool,
               facts_file: Path | None, output_dir: Path | None, only: Sequence[str]) -> None:
    """Run a tier's checks on this node and report; exit code = worst status."""
    from aiinfra.health import gate

    report = gate.run_command(profile_ref, tier, node, fail_fast, facts_file, output_dir, only)
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else gate.table(report))
    sys.exit(report.status.value)


@health.command("scan-log")
@click.argument("log_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_profile_option
@_node_option
@click.option("--json", "as_json", is_flag=True, help="Print {file, status, findings} as JSON.")
def health_scan_log(log_file: Path, profile_ref: str, node: str | None, as_json: bool) -> None:
    """Judge a saved kernel log (dmesg, journalctl, syslog or kmsg format) like kernel.log;
    every line counts (no time window). Exit code = the worst status."""
    from aiinfra.health import gate

    report = gate.scan_log_command(log_file, profile_ref, node)
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else gate.scan_table(report))
    sys.exit(report.status.value)


@health.command("record")
@click.argument("facts_file", type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@click.option("--tier", type=click.Choice(["quick", "standard", "deep"]), default="deep",
              show_default=True, help="Record the facts this tier reads.")
@_node_option
def health_record(facts_file: Path, profile_ref: str, tier: str, node: str | None) -> None:
    """Write this node's raw facts as JSON (for test fixtures and bug reports)."""
    from aiinfra.health import gate

    sections = gate.record_command(facts_file, profile_ref, tier, node)
    click.echo(f"recorded {', '.join(sections)} to {facts_file}")


@health.command("gate")
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", required=True, help="Comma-separated nodes that must have reported.")
def health_gate(results_dir: Path, nodes: str) -> None:
    """Read the preflight reports in RESULTS_DIR; print the bad nodes (exit 2) or nothing."""
    from aiinfra.health import gate

    verdict = gate.judge(results_dir, [n for n in nodes.split(",") if n])
    for line in verdict.messages:
        click.echo(f"aiinfra: preflight: {line}", err=True)
    if verdict.bad:
        click.echo(",".join(verdict.bad))
        sys.exit(2)


def _job_id(text: str) -> str:
    """JOBID or JOBID_TASK, in ASCII digits (str.isdigit() also takes other scripts' digits)."""
    if re.fullmatch(r"[0-9]+(?:_[0-9]+)?", text) is None:
        raise InputError(f"{text!r} is not a Slurm job id (JOBID or JOBID_TASK)")
    return text


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


# ======================================================================================
# The nightly health sweep and its reports (issue 9). Each command imports its modules
# when it runs; pandas and matplotlib only inside `aiinfra report`.
# ======================================================================================

EXIT_UNKNOWN = 3  # Nagios UNKNOWN: the sweep could not run (another one holds the lock)


@main.command()
@click.option("--profile", "-p", "profile_ref", required=True,
              help="Cluster profile (name or path): thresholds and the default partition.")
@click.option("--partition", help="Sweep this partition [default: the profile's].")
@click.option("--nodes", "node_list", help="Only these nodes (Slurm hostlist, node[001-512]).")
@click.option("--tier", type=click.Choice(["quick", "standard", "deep"]),
              help="Which checks each node runs [default: settings' tier, quick].")
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with a [sweep] table (drain_after, resume_after, ...).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one sweep setting, e.g. --set drain_after=2 (repeatable).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Lock and run directories (must be visible to the nodes).")
@click.option("--history", type=click.Path(dir_okay=False, path_type=Path),
              help="SQLite history file [default: STATE_DIR/history.sqlite].")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Prometheus node_exporter textfile here.")
@click.option("--dry-run", is_flag=True,
              help="Run the checks, show every action; change no node, write no history.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sweep(profile_ref: str, partition: str | None, node_list: str | None, tier: str | None,
          settings_file: Path | None, sets: Sequence[str], state_dir: Path | None,
          history: Path | None, textfile: Path | None, dry_run: bool, as_json: bool) -> None:
    """Check every node through Slurm; drain CRIT nodes, resume healed ones.

    Exit code: the worst status (OK 0, WARN 1, CRIT 2, UNKNOWN 3); CRIT when the
    blast-radius cap stopped the drains; 3 when another sweep is running."""
    from aiinfra.health import sweep as decisions
    from aiinfra.health import sweeprun
    from aiinfra.launcher.profile import load_profile

    loaded = load_profile(profile_ref)
    flags = {"tier": tier, "state_dir": _str(state_dir), "history": _str(history),
             "textfile": _str(textfile)}
    settings = sweeprun.settings_for(loaded, settings_file, sets, flags)
    request = sweeprun.Request(loaded, settings, partition, node_list, dry_run)
    try:
        summary = sweeprun.run_sweep(request, lambda line: click.echo(f"aiinfra: {line}",
                                                                      err=True))
    except sweeprun.SweepBusy as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_UNKNOWN)
    if as_json:
        _print_json(summary.as_json())
    else:
        click.echo("\n".join(decisions.actions_text(summary)))
    sys.exit(summary.status.value)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@main.group()
def report() -> None:
    """Reports over the sweep history and sacct (needs the `report` extra: pandas)."""


_since_option = click.option("--since", default="30d", show_default=True,
                             help="How far back: a number and m, h, d or w.")
_format_option = click.option("--format", "fmt", default="table", show_default=True,
                              type=click.Choice(["table", "csv", "json", "html"]),
                              help="table (terminal), csv, json, or html with plots.")
_output_option = click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                              help="Write here instead of standard output.")
_history_option = click.option("--history", type=click.Path(dir_okay=False, path_type=Path),
                               help="Sweep history [default: ~/.local/state/aiinfra/sweep/"
                                    "history.sqlite].")


@report.command("nodes")
@_since_option
@_format_option
@_output_option
@_history_option
@click.option("--flap-min", default=2, show_default=True, help="Pass/fail flips that make a "
              "node flapping.")
@click.option("--drop", default=0.2, show_default=True, help="Flag measured values this "
              "share below the node's own baseline or the fleet median.")
def report_nodes(since: str, fmt: str, output: Path | None, history: Path | None,
                 flap_min: int, drop: float) -> None:
    """Pass/fail history per node, flapping nodes, failing checks, slow nodes."""
    import time

    from aiinfra.health import report as reports
    from aiinfra.health.history import connect

    reports.require_pandas()
    with connect(_history_file(history, must_exist=True)) as conn:
        made = reports.nodes_report(conn, time.time() - reports.since_seconds(since),
                                    flap_min=flap_min, drop=drop)
    _emit(reports.render(made, fmt), output)  # type: ignore[arg-type]


@report.command("jobs")
@_since_option
@_format_option
@_output_option
@_history_option
def report_jobs(since: str, fmt: str, output: Path | None, history: Path | None) -> None:
    """Job states, restarts and failures per node from sacct, linked to node health."""
    from aiinfra.health import report as reports
    from aiinfra.health.history import connect

    frame, start = _sacct(since)
    path = _history_file(history, must_exist=False)
    verdicts = None
    if path.exists():
        with connect(path) as conn:
            verdicts = reports.load_verdicts(conn, start)
    _emit(reports.render(reports.jobs_report(frame, verdicts), fmt), output)  # type: ignore[arg-type]


@report.command("goodput")
@_since_option
@_format_option
@_output_option
@click.option("--price-per-gpu-hour", "price", type=float, default=0.0, show_default=True,
              help="Price of one GPU-hour (of one CPU-hour on clusters without GPUs).")
def report_goodput(since: str, fmt: str, output: Path | None, price: float) -> None:
    """GPU-hours used, and lost to failures, requeues and preemption; in money."""
    from aiinfra.health import report as reports

    frame, _ = _sacct(since)
    _emit(reports.render(reports.goodput_report(frame, price), fmt), output)  # type: ignore[arg-type]


def _sacct(since: str) -> tuple[Any, float]:
    import time

    from aiinfra.health import report as reports
    from aiinfra.launcher import slurm

    reports.require_pandas()
    start = time.time() - reports.since_seconds(since)
    text = slurm.sacct_records(time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
                               reports.SACCT_FIELDS)
    return reports.parse_sacct(text), start


def _history_file(history: Path | None, must_exist: bool) -> Path:
    from aiinfra.health.sweep import SweepSettings
    from aiinfra.health.sweeprun import history_path

    path = history or history_path(SweepSettings())
    if must_exist and not path.exists():
        raise InputError(f"no sweep history at {path} (run `aiinfra sweep` or pass --history)")
    return path


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    from aiinfra.launcher.files import write_atomic

    write_atomic(output, text)
    click.echo(f"aiinfra: wrote {output}", err=True)
