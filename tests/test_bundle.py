"""What ecod-jobs ships beside the package (ecod_jobs/bundle.py): the profiles, the
``ecod-jobs profiles show|copy`` commands, the plugin check before a run, and the run
summary of a workflow that never started. The installs themselves: tests/test_install.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, create_batch, q, run_cli, setup_batch

from ecod_jobs import bundle
from ecod_jobs.cli import main
from ecod_jobs.exceptions import ConfigurationError
from ecod_jobs.launch import BatchResult

PLUGIN_MODULES = ("snakemake_logger_plugin_ecod_jobs", "snakemake_executor_plugin_ecod_slurm")


def hide_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's sys.path without the directories holding ecod-jobs' plugins, as an
    install that Snakemake's discovery cannot see (the modules stay imported: pkgutil looks
    at sys.path, not at sys.modules)."""
    kept = [p for p in sys.path if not any((Path(p or ".") / m).is_dir() for m in PLUGIN_MODULES)]
    assert len(kept) < len(sys.path), "the plugins were not on sys.path to begin with"
    monkeypatch.setattr(sys, "path", kept)


def test_the_shipped_profiles_name_the_workflow_and_our_plugins() -> None:
    assert bundle.profile_names() == ["local", "slurm"]
    local = bundle.profile_settings(bundle.PROFILES / "local")
    slurm = bundle.profile_settings(bundle.PROFILES / "slurm")
    assert bundle.profile_plugins(local) == [("logger", "ecod-jobs")]
    assert bundle.profile_plugins(slurm) == [("logger", "ecod-jobs"), ("executor", "ecod-slurm")]
    for settings in (local, slurm):  # relative to the profile, in the source tree and in the wheel
        assert (bundle.PROFILES / "local" / settings["snakefile"]).resolve() == bundle.SNAKEFILE.resolve()
    assert bundle.SNAKEFILE.is_file()


def test_snakemake_finds_our_plugins() -> None:
    assert "ecod-jobs" in bundle.registered_plugins("logger")
    assert "ecod-slurm" in bundle.registered_plugins("executor")
    bundle.check_bundle(bundle.PROFILES / "local")
    bundle.check_bundle(bundle.PROFILES / "slurm")


def test_hidden_plugins_are_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hide_plugins(monkeypatch)
    with pytest.raises(ConfigurationError) as local:
        bundle.check_bundle(bundle.PROFILES / "local")
    message = str(local.value)
    assert "\n" not in message
    assert message.startswith("Snakemake cannot find ecod-jobs' logger plugin 'ecod-jobs'")
    assert "snakemake_logger_plugin_ecod_jobs" in message and "pip install -e" in message

    executor_only = tmp_path / "executor_only"
    executor_only.mkdir()
    (executor_only / "config.yaml").write_text("executor: ecod-slurm\n")
    with pytest.raises(ConfigurationError, match="executor plugin 'ecod-slurm'"):
        bundle.check_bundle(executor_only)

    monkeypatch.undo()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("logger: [no-such-logger]\n")
    with pytest.raises(ConfigurationError, match="install snakemake-logger-plugin-no-such-logger"):
        bundle.check_bundle(foreign)


def test_run_is_refused_before_planning(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
) -> None:
    """The real CLI in this process, with the plugins hidden from Snakemake's registries."""
    cfg, batch = setup_batch(tmp_path, scratch_db, n=2, command="true")
    monkeypatch.chdir(tmp_path)
    hide_plugins(monkeypatch)
    assert main(["--config", str(cfg), "run", "--batch", str(batch)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ecod-jobs: error: Snakemake cannot find ecod-jobs' logger plugin 'ecod-jobs'")
    assert q(pg_conn, "SELECT status FROM ecod_schema.process_status ORDER BY id") == [("pending",)] * 2
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job") == [(0,)]
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_run") == [(0,)]
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_lease") == [(0,)]


def test_unfinished_counts_items_never_planned() -> None:
    never_started = BatchResult(1, "r", 2, {}, planned_items=2)
    assert never_started.unfinished == 2 and not never_started.ok
    assert BatchResult(1, "r", 1, {"success": 1, "processing": 1}, planned_items=2).unfinished == 1
    assert BatchResult(1, "r", 0, {"success": 1, "error": 1}, planned_items=2).unfinished == 0


def test_summary_of_a_workflow_that_never_started(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """Snakemake refuses the profile before its onstart: both items are unfinished, not 0."""
    cfg, batch = setup_batch(tmp_path, scratch_db, n=2, command="true")
    profile = tmp_path / "broken"
    shutil.copytree(bundle.PROFILES / "local", profile)
    with (profile / "config.yaml").open("a") as handle:
        handle.write("no-such-snakemake-option: true\n")
    run = run_cli("--config", str(cfg), "run", "--batch", str(batch), "--profile", str(profile), cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "0 succeeded, 0 failed, 2 unfinished of 2 items" in run.stdout
    assert "the workflow did not finish cleanly (exit 2)" in run.stderr
    assert q(pg_conn, "SELECT status FROM ecod_schema.process_status ORDER BY id") == [("pending",)] * 2


def test_profiles_show(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yml").write_text("not: [valid\n")  # profiles need no configuration
    shown = run_cli("profiles", "show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{bundle.PROFILES}\n"
    local = run_cli("profiles", "show", "local", cwd=tmp_path)
    assert local.stdout == f"{bundle.PROFILES / 'local'}\n"
    assert (Path(local.stdout.strip()) / "config.yaml").is_file()
    unknown = run_cli("profiles", "show", "nope", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr == (
        f"ecod-jobs: error: no shipped profile 'nope': the profiles in {bundle.PROFILES} are local, slurm\n"
    )


def test_profiles_copy_names_the_installed_snakefile(tmp_path: Path) -> None:
    copied = run_cli("profiles", "copy", "out/profiles", cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    dest = tmp_path / "out" / "profiles"
    for name in ("local", "slurm"):
        shipped = (bundle.PROFILES / name / "config.yaml").read_text().splitlines()
        copy = (dest / name / "config.yaml").read_text().splitlines()
        changed = [(a, b) for a, b in zip(shipped, copy, strict=True) if a != b]
        assert changed == [("snakefile: ../../workflow/Snakefile", f'snakefile: "{bundle.SNAKEFILE}"')]
    (dest / "local" / "config.yaml").write_text("cores: 1\n")
    again = run_cli("profiles", "copy", "out/profiles", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.startswith(
        "ecod-jobs: error: out/profiles/local and out/profiles/slurm already exist"
    )
    assert (dest / "local" / "config.yaml").read_text() == "cores: 1\n"  # untouched
    forced = run_cli("profiles", "copy", "--force", "out/profiles", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "snakefile:" in (dest / "local" / "config.yaml").read_text()


def test_make_install_runs_from_a_data_directory(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """This test run's own install (``make``'s): the console scripts, not ``python -m`` (which
    would put the working directory on sys.path), from a directory outside the source tree."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "ecod-jobs").is_file() or not (bin_dir / "snakemake").is_file():
        pytest.skip(f"no ecod-jobs and snakemake console scripts beside {sys.executable}")
    assert not tmp_path.resolve().is_relative_to(REPO.resolve())
    cfg, batch = setup_batch(tmp_path, scratch_db, n=2, batch_size=1, command="true")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ECOD_CONFIG_PATH")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    first = run(str(bin_dir / "ecod-jobs"), "--config", str(cfg), "run", "--batch", str(batch))
    assert first.returncode == 0, first.stdout + first.stderr
    other = create_batch(cfg, tmp_path / "items.tsv", "plain snakemake", tmp_path)
    assert run(str(bin_dir / "ecod-jobs"), "profiles", "copy", "profiles").returncode == 0
    (tmp_path / "config").mkdir()
    shutil.copy(cfg, tmp_path / "config" / "config.yml")
    second = run(str(bin_dir / "snakemake"), "--profile", "profiles/local", "--config", f"batch_id={other}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert q(pg_conn, "SELECT status FROM ecod_schema.process_status ORDER BY id") == [("success",)] * 4
