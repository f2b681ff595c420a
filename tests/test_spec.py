from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aiinfra.launcher.errors import SpecError
from aiinfra.launcher.profile import available_profiles, load_profile
from aiinfra.launcher.schema import as_plain
from aiinfra.launcher.spec import load_job, parse_override

Write = Callable[[str, str], Path]

JOB = """
    name = "t"
    command = ["python3", "train.py"]
    nodes = 2
    time = "10"
    [env]
    SEED = "1"
"""


def test_a_job_file_loads_into_a_frozen_spec(write: Write) -> None:
    loaded = load_job(write("job.toml", JOB))
    job = loaded.job
    assert (job.name, job.nodes, job.command, job.resolved_launcher) == (
        "t", 2, ("python3", "train.py"), "torchrun")
    assert dict(job.env) == {"SEED": "1"}
    with pytest.raises(AttributeError):
        job.nodes = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        job.env["X"] = "y"  # type: ignore[index]
    assert len(loaded.sha256) == 64


def test_cli_overrides_win_over_the_job_file(write: Write) -> None:
    path = write("job.toml", JOB)
    job = load_job(path, [parse_override("nodes=4", "--nodes"),
                          parse_override("env.SEED=7"), parse_override("container.image=x.sif")]).job
    assert job.nodes == 4
    assert dict(job.env) == {"SEED": "7"}
    assert job.container is not None and job.container.image == "x.sif"


def test_string_fields_take_override_text_as_written() -> None:
    assert parse_override("name=123")[2] == "123"
    assert parse_override("env.SEED=7")[2] == "7"
    assert parse_override("time=1:00:00")[2] == "1:00:00"


def test_override_values_parse_as_toml_then_string() -> None:
    assert parse_override("nodes=4")[2] == 4
    assert parse_override("env.A=hello world")[2] == "hello world"
    assert parse_override('command=["a", "b"]')[2] == ["a", "b"]
    with pytest.raises(SpecError):
        parse_override("novalue")


def test_errors_name_the_override_flag_not_the_file(write: Write) -> None:
    path = write("job.toml", JOB)
    with pytest.raises(SpecError) as err:
        load_job(path, [parse_override("nodes=0", "--nodes")])
    assert err.value.source == "--nodes"
    assert err.value.field == "nodes"
    with pytest.raises(SpecError) as err:
        load_job(path, [parse_override("checkpoint.keep=0")])
    assert err.value.source == "--set checkpoint.keep" and err.value.field == "checkpoint.keep"


def test_unknown_keys_list_the_valid_ones(write: Write) -> None:
    with pytest.raises(SpecError) as err:
        load_job(write("job.toml", 'gpu_per_node = 8\n' + JOB))
    assert err.value.field == "gpu_per_node"
    assert "gpus_per_node" in err.value.choices
    assert str(err.value).startswith(str(err.value.source) + ": gpu_per_node: unknown key")


def test_nested_unknown_keys_are_named_by_path(write: Write) -> None:
    with pytest.raises(SpecError) as err:
        load_job(write("job.toml", JOB + '[checkpoint]\nkeep_last = 2\n'))
    assert err.value.field == "checkpoint.keep_last"
    assert "keep" in err.value.choices


def test_inference_needs_a_server_and_presets_need_a_model(write: Write) -> None:
    with pytest.raises(SpecError) as err:
        load_job(write("a.toml", 'name = "s"\nkind = "inference"\ncommand = ["x"]\n'))
    assert err.value.field == "server"
    with pytest.raises(SpecError) as err:
        load_job(write("b.toml", 'name = "s"\nkind = "inference"\n[server]\npreset = "vllm"\n'))
    assert err.value.field == "server.model"
    job = load_job(write("c.toml", 'name = "s"\nkind = "inference"\n'
                         '[server]\npreset = "vllm"\nmodel = "m"\n')).job
    assert job.resolved_launcher == "srun"


PROFILE = """
    description = "base"
    partition = "p"
    [partitions.p]
    nodes = 4
    [env]
    A = "1"
    B = "2"
"""


def test_profiles_inherit_and_merge_tables(profile_dir: Path) -> None:
    (profile_dir / "base.toml").write_text(PROFILE)
    (profile_dir / "child.toml").write_text(
        'inherits = "base"\ndescription = "child"\n[env]\nB = "3"\n[partitions.q]\nnodes = 1\n')
    loaded = load_profile("child")
    assert loaded.profile.description == "child"
    assert dict(loaded.profile.env) == {"A": "1", "B": "3"}
    assert set(loaded.profile.partitions) == {"p", "q"}
    assert [p.stem for p in loaded.chain] == ["child", "base"]
    assert as_plain(loaded.profile)["partitions"]["p"]["nodes"] == 4


def test_inherits_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "base.toml").write_text(PROFILE)
    (tmp_path / "mine.toml").write_text('inherits = "site/base.toml"\n')
    assert load_profile(str(tmp_path / "mine.toml")).profile.partition == "p"


def test_inherits_cycles_are_reported(profile_dir: Path) -> None:
    (profile_dir / "a.toml").write_text('inherits = "b"\n' + PROFILE)
    (profile_dir / "b.toml").write_text('inherits = "a"\n')
    with pytest.raises(SpecError) as err:
        load_profile("a")
    assert err.value.field == "inherits"
    assert "cycle: a -> b -> a" in err.value.message


def test_errors_in_an_inherited_profile_name_the_file_that_set_the_value(
        profile_dir: Path) -> None:
    (profile_dir / "base.toml").write_text(PROFILE.replace("nodes = 4", 'nodes = "four"'))
    (profile_dir / "child.toml").write_text('inherits = "base"\n')
    with pytest.raises(SpecError) as err:
        load_profile("child")
    assert err.value.source == str((profile_dir / "base.toml").resolve())
    assert err.value.field == "partitions.p.nodes"


def test_default_partition_must_exist(profile_dir: Path) -> None:
    (profile_dir / "x.toml").write_text(PROFILE.replace('partition = "p"', 'partition = "z"'))
    with pytest.raises(SpecError) as err:
        load_profile("x")
    assert err.value.field == "partition" and err.value.choices == ("p",)


def test_unknown_profiles_list_the_known_ones(profile_dir: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_profile("nope")
    assert "local" in err.value.choices


def test_user_profiles_shadow_builtins(profile_dir: Path) -> None:
    (profile_dir / "local.toml").write_text(PROFILE)
    assert available_profiles()["local"] == profile_dir / "local.toml"


@pytest.mark.parametrize("name", ["local", "dgx-h100", "apptainer-a100"])
def test_shipped_profiles_load(name: str) -> None:
    loaded = load_profile(name)
    assert loaded.profile.partition in loaded.profile.partitions
    assert loaded.profile.description
