"""The CLI: light start-up, help on every command, dry-run == what is submitted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aiinfra.launcher.cli import main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "pynvml", "mpi4py", "submitit", "numpy")

PROBE = """
import sys
from aiinfra.launcher.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(%r))
print('HEAVY=' + ','.join(heavy))
print('EXIT=' + str(code))
"""


@pytest.mark.parametrize("args", [
    ["--help"],
    ["submit", "--help"],
    ["submit", "examples/train_ddp.toml", "--profile", "local", "--dry-run"],
    ["submit", "examples/serve.toml", "--profile", "local", "--dry-run"],
    ["profiles", "list"],
    ["sweep", "--help"],
    ["report", "nodes", "--help"],
    ["doctor", "--help"],
    ["status", "--help"],
], ids=lambda a: " ".join(a[:2]))
def test_login_node_commands_import_nothing_heavy(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert "EXIT=0" in proc.stdout, proc.stdout + proc.stderr
    assert "HEAVY=\n" in proc.stdout, proc.stdout
    # the probe is not vacuous: the same check sees torch when torch is imported
    sees = subprocess.run([sys.executable, "-c", "import json, sys; import click; "
                           "sys.modules['torch'] = json; " + PROBE % (HEAVY,), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert "HEAVY=torch" in sees.stdout


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
    return out


@pytest.mark.parametrize("path", _commands(main), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) >= 2 and lines[1].strip(), "a one-line description follows the usage"


def test_dry_run_json_carries_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["submit", "examples/mpi_allreduce.toml", "--profile",
                                       "local", "--dry-run", "--json"])
    data = json.loads(result.output)
    assert data["job_id"] is None
    assert data["text"].startswith("#!/bin/bash\n")
    assert data["script"].endswith(".sbatch")
    assert "mpirun -np 2 --map-by ppr:1:node --allow-run-as-root" in data["text"]


def test_profiles_show_resolves_inheritance(tmp_path: Path) -> None:
    child = tmp_path / "child.toml"
    child.write_text('inherits = "local"\ndescription = "mine"\n[env]\nX = "1"\n')
    result = CliRunner().invoke(main, ["profiles", "show", str(child)])
    data = json.loads(result.output)
    assert data["profile"]["description"] == "mine"
    assert data["profile"]["env"]["X"] == "1"
    assert data["profile"]["env"]["GLOO_SOCKET_IFNAME"] == "lo"
    assert [Path(p).name for p in data["inherits_chain"]] == ["child.toml", "local.toml"]


def test_a_bad_job_id_is_refused_before_slurm() -> None:
    result = CliRunner().invoke(main, ["status", "12; rm -rf /"])
    assert result.exit_code == 2
    assert "is not a Slurm job id" in result.output
