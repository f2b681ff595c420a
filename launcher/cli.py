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
def submit(job_file: Path, profile_ref: str, dry_run: bool, as_json: bool, nodes: str | None,
           time_limit: str | None, sets: Sequence[str]) -> None:
    """Render JOB_FILE's sbatch script for a profile and submit it with sbatch."""
    from aiinfra.launcher import submit as submitting

    overrides = submitting.overrides(nodes=nodes, time_limit=time_limit, sets=sets)
    rendered = submitting.prepare(job_file, profile_ref, overrides, Path.cwd())
    if dry_run:
        if as_json:
            _print_json({"job_id": None, "script": str(rendered.script_path),
                         "text": rendered.text})
        else:
            click.echo(rendered.text, nl=False)
        return
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
    """Show a job's state (squeue while queued or running, then sacct)."""
    from dataclasses import asdict

    from aiinfra.launcher import slurm

    state = slurm.job_state(_job_id(job_id))
    if as_json:
        _print_json(asdict(state))
        return
    restarts = "" if state.restarts is None else f"  restarts={state.restarts}"
    exit_code = f"  exit={state.exit_code}" if state.exit_code else ""
    click.echo(f"{state.job_id}  {state.name}  {state.state}{exit_code}  nodes={state.nodes}"
               f"  elapsed={state.elapsed}{restarts}")


@main.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job (scancel); an unknown or ended job is an error."""
    from aiinfra.launcher import slurm

    slurm.cancel(_job_id(job_id))
    click.echo(f"cancelled {job_id}")


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
