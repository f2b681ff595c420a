"""Hostile input that used to break a job silently (issue 8), one regression test each.

The rows that need Slurm itself run as real jobs in test_hostile_e2e.py."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from aiinfra.launcher import render, submit
from aiinfra.launcher.cli import EXIT_INPUT, main
from aiinfra.launcher.errors import SpecError
from aiinfra.launcher.profile import load_profile
from aiinfra.launcher.schema import as_plain
from aiinfra.launcher.snapshot import read_snapshot
from aiinfra.launcher.spec import load_job
from scenarios import SELF_ARGV

Write = Callable[[str, str], Path]
BASE = 'name = "x"\ncommand = ["true"]\n'


def _render(write: Write, job: str, profile: str = "local",
            cwd: Path = Path("/p")) -> render.Rendered:
    return render.render_job(load_job(write("job.toml", job)), load_profile(profile), cwd,
                             SELF_ARGV)


def test_a_percent_in_the_log_dir_reaches_slurm_escaped(write: Write) -> None:
    rendered = _render(write, BASE + 'log_dir = "logs/%u/100%"\n')
    assert "#SBATCH --output=/p/logs/%%u/100%%/x-%j.log" in rendered.text
    assert "#SBATCH --chdir=/p\n" in rendered.text  # --chdir takes no patterns
    assert rendered.log_for("42") == Path("/p/logs/%u/100%/x-42.log")
    assert rendered.script_path.parent == Path("/p/logs/%u/100%")


def test_a_backslash_in_the_submit_directory_is_refused(write: Write) -> None:
    with pytest.raises(SpecError) as err:
        _render(write, BASE, cwd=Path("/p/a\\b"))
    assert err.value.field == "log_dir" and "backslash" in err.value.message


def test_a_long_name_keeps_file_names_short_and_unique(write: Write) -> None:
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    first = _render(write, f'name = "{long_a}"\ncommand = ["true"]\n')
    second = _render(write, f'name = "{long_b}"\ncommand = ["true"]\n')
    assert len(first.slug) <= render.SLUG_MAX and len(second.slug) <= render.SLUG_MAX
    assert first.slug != second.slug
    assert len(first.snapshot_path.name) < 100
    assert f"#SBATCH --job-name={long_a}\n" in first.text  # Slurm gets the whole name


def test_short_names_keep_their_slug(write: Write) -> None:
    assert _render(write, 'name = "train it\'s big"\ncommand = ["true"]\n').slug == "train-it-s-big"


def test_a_long_name_submits_without_a_traceback(write: Write, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Written for real (sbatch itself is replaced by a recorder on PATH)."""
    recorder = tmp_path / "bin" / "sbatch"
    recorder.parent.mkdir()
    recorder.write_text("#!/bin/sh\necho 4242\n")
    recorder.chmod(0o755)
    monkeypatch.setenv("PATH", f"{recorder.parent}:/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    job = write("job.toml", f'name = "{"n" * 300}"\ncommand = ["true"]\n')
    result = CliRunner().invoke(main, ["submit", str(job), "-p", "local", "--json"])
    assert result.exit_code == 0, result.output
    assert '"job_id": "4242"' in result.output


def test_an_unwritable_log_dir_is_an_input_error(write: Write, tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the log directory should be")
    job = write("job.toml", BASE + f'log_dir = "{tmp_path / "blocked"}"\n')
    result = CliRunner().invoke(main, ["submit", str(job), "-p", "local"])
    assert result.exit_code == EXIT_INPUT, result.output
    assert f"{job}: log_dir: cannot write" in result.output
    assert "Traceback" not in result.output


def test_the_job_calls_back_into_the_submitting_install(tmp_path: Path, write: Write) -> None:
    job = write("job.toml", BASE)
    rendered = submit.prepare(job, "local", [], tmp_path)
    line = next(line for line in rendered.text.splitlines() if line.startswith("exec "))
    assert line.startswith(f"exec {sys.executable} -m aiinfra attempt {rendered.snapshot_path} ")


def test_the_profiles_aiinfra_wins(write: Write, profile_dir: Path) -> None:
    (profile_dir / "site.toml").write_text('inherits = "local"\naiinfra = "/opt/ai/bin/aiinfra"\n')
    line = next(line for line in _render(write, BASE, "site").text.splitlines()
                if line.startswith("exec "))
    assert line.startswith("exec /opt/ai/bin/aiinfra attempt ") and "-m aiinfra" not in line


def test_the_snapshot_holds_the_job_and_profile_as_submitted(
        write: Write, profile_dir: Path, tmp_path: Path) -> None:
    site = profile_dir / "site.toml"
    site.write_text('inherits = "local"\n[env]\nSITE = "before"\n')
    job = write("job.toml", BASE + "nodes = 2\n[env]\nSEED = \"7\"\n")
    rendered = submit.prepare(job, "site", [("--set", "time", "5")], tmp_path)
    rendered.snapshot_path.parent.mkdir(parents=True)
    rendered.snapshot_path.write_text(rendered.snapshot)
    site.write_text('inherits = "local"\n[env]\nSITE = "after"\n')  # edited while pending
    snap = read_snapshot(rendered.snapshot_path)
    assert snap.profile.profile.env["SITE"] == "before"
    assert load_profile(str(rendered.snapshot_path)).profile == snap.profile.profile
    assert snap.job.job == load_job(job, [("--set", "time", "5")]).job
    assert snap.job.job.time == "5" and snap.cwd == tmp_path
    assert snap.spec_hash == rendered.spec_hash
    assert as_plain(snap.profile.profile) == as_plain(load_profile("local").profile) | {
        "env": {**load_profile("local").profile.env, "SITE": "before"}, "inherits": "local"}


@pytest.mark.parametrize("profile", ["local", "dgx-h100", "apptainer-a100"])
def test_every_builtin_profile_survives_the_snapshot(profile: str, write: Write,
                                                     tmp_path: Path) -> None:
    lp = load_profile(profile)
    rendered = submit.prepare(write("job.toml", BASE), profile, [], tmp_path)
    path = tmp_path / "s.snapshot.json"
    path.write_text(rendered.snapshot)
    assert read_snapshot(path).profile == dataclasses.replace(lp, raw=read_snapshot(path).profile.raw)


def test_a_damaged_snapshot_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.snapshot.json"
    bad.write_text('{"format": 1, "job": {}}')
    with pytest.raises(SpecError) as err:
        load_profile(str(bad))
    assert err.value.source == str(bad) and "not an aiinfra snapshot" in err.value.message
