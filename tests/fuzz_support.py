"""The fuzz harness's tools: hostile text, a TOML writer, recording stubs, one job run.

A drawn job has exactly two acceptable outcomes (issue 8): exit 2 naming the file or flag
and the field, with nothing written and nothing submitted; or a script that passes
``bash -n`` and shellcheck and whose values, when bash runs it against recording stubs of
srun/mpirun/scontrol/sinfo/module, arrive byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from scenarios import SHELLCHECK_ARGS

# Characters that broke real tools before: quotes, expansions, Slurm's % patterns,
# backslashes, newlines and other control characters, non-ASCII, and TOML's own syntax.
ONE_LINE = "'\"$`%\\;&|<>*?!{}[]()#~= ,:/-._é漢😀\u2028"
CONTROL = "\n\t\r\x00\x01\x1b\x7f"
# Mostly one-line nasty text (most fields accept it, so most drawn jobs reach the script),
# sometimes control characters or any code point, sometimes very long.
LINE = st.text(alphabet=st.sampled_from(ONE_LINE), min_size=1, max_size=30)
HOSTILE = (LINE | LINE | st.text(alphabet=st.sampled_from(ONE_LINE + CONTROL), max_size=30)
           | st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
           | st.text(alphabet=st.sampled_from(ONE_LINE), min_size=250, max_size=320))
NAMES = st.sampled_from(["X", "SEED", "A_B", "PATH", "UID", "IFS", "SLURM_JOB_ID",
                         "AIINFRA_PORT", "1BAD", "MY-VAR", "", "é"]) | st.from_regex(
    r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z")
SBATCH_KEYS = st.sampled_from(["comment", "mail-type", "exclusive", "hetjob", "nodes",
                               "wait", "begin", "mail-typ", "signal", "export", "--x", "X"])


def toml_str(text: str) -> str:
    """A TOML basic string for any text (control characters as \\uXXXX escapes)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_str(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def to_toml(data: dict[str, Any]) -> str:
    """Top-level scalars first, then one [table] per dict (one level deep is enough)."""
    lines = [f"{toml_str(k)} = {toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_str(key)}]")
            lines += [f"{toml_str(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def safe_relative(text: str) -> str:
    """A drawn path kept inside the test's directory (no absolute path, no '..')."""
    parts = [p for p in text.split("/") if p not in ("", ".", "..")]
    return "/".join(["d", *parts])


RECORDER = textwrap.dedent("""\
    #!/bin/bash
    # Records argv (NUL-separated) and the environment of every call, then plays its part.
    name=${0##*/}
    n=$(ls "$STUB_DIR/calls" | wc -l)
    printf '%s\\0' "$name" "$@" > "$STUB_DIR/calls/$n.argv"
    env -0 > "$STUB_DIR/calls/$n.env"
    case "$name" in
      scontrol) [[ "$1 $2" == "show hostnames" ]] && printf 'node1\\nnode2\\n' ;;
      sinfo) echo 127.0.0.1 ;;
    esac
    exit 0
    """)
STUBS = ("srun", "mpirun", "scontrol", "sinfo", "module", "aiinfra-stub")


def make_stubs(root: Path) -> Path:
    """A directory of recording stubs, first on PATH when the script runs."""
    bin_dir = root / "stubs"
    (root / "calls").mkdir(parents=True)
    bin_dir.mkdir()
    for name in STUBS:
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "sbatch").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$STUB_DIR/sbatch"\n'
                                    "echo 31337\n")
    (bin_dir / "sbatch").chmod(0o755)
    return bin_dir


@dataclass(frozen=True)
class Call:
    argv: list[bytes]
    env: dict[bytes, bytes]


def calls(root: Path) -> list[Call]:
    found = []
    for argv_file in sorted((root / "calls").glob("*.argv"), key=lambda p: int(p.stem)):
        argv = argv_file.read_bytes().split(b"\0")[:-1]
        env_items = argv_file.with_suffix(".env").read_bytes().split(b"\0")[:-1]
        env = dict(item.split(b"=", 1) for item in env_items if b"=" in item)
        found.append(Call(argv, env))
    return found


def run_script(script: Path, root: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_DIR": str(root), "HOME": str(root),
           "SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "node[1-2]",
           "SLURM_JOB_PARTITION": "debug", "SLURM_JOB_NUM_NODES": "2"}
    return subprocess.run(["bash", str(script)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=30)


def bash_n(script: Path) -> str | None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    return None if proc.returncode == 0 else proc.stderr


def shellcheck(script: Path) -> str | None:
    if shutil.which("shellcheck") is None:
        return None if os.environ.get("CI") != "true" else "shellcheck is not installed"
    proc = subprocess.run([*SHELLCHECK_ARGS, str(script)],
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else proc.stdout


def launch_call(found: list[Call], tail: list[str], inside: list[str] = ()) -> Call:
    """The supervisor's call (``aiinfra attempt SNAPSHOT -- LAUNCH...``) whose launch line
    ends with ``tail`` and holds ``inside`` as consecutive words; its argv is the launch."""
    want, seq = [w.encode() for w in tail], [w.encode() for w in inside]
    for call in found:
        if call.argv[:2] != [b"aiinfra-stub", b"attempt"] or b"--" not in call.argv:
            continue
        launch = call.argv[call.argv.index(b"--") + 1:]
        ends = not want or launch[-len(want):] == want
        holds = not seq or any(launch[i:i + len(seq)] == seq for i in range(len(launch)))
        if ends and holds:
            return Call(launch, call.env)
    shown = [json.dumps([a.decode(errors="replace") for a in c.argv]) for c in found]
    raise AssertionError(f"no launch ends with {tail!r} holding {inside!r}: {shown}")
