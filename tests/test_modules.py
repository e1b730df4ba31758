"""Environment modules for real: Debian's Lmod (scripts/module-system), a modulefile of the
test's own on a MODULEPATH of its own, and job types whose command needs the module."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import q, run_cli, setup_batch

from ecod_jobs.chunk_runner import MODULE_INIT_ENV, ModuleLoadError, module_environment
from ecod_jobs.launch import run_batch
from ecod_jobs.managers import LocalJobManager

# Writes what the module's tool printed: only a loaded module puts `ecodtool` on PATH.
COMMAND = "ecodtool {item_id} > {output_dir}/{item_id}.out"


@pytest.fixture
def modulepath(tmp_path: Path, module_system: None) -> Path:
    """A MODULEPATH with ``ecodtool/1.0``, a Lua modulefile that puts a small tool on PATH."""
    bin_dir = tmp_path / "tool" / "bin"
    bin_dir.mkdir(parents=True)
    tool = bin_dir / "ecodtool"
    tool.write_text('#!/bin/sh\necho "ecodtool 1.0 item $1"\n')
    tool.chmod(0o755)
    modules = tmp_path / "modulefiles"
    (modules / "ecodtool").mkdir(parents=True)
    (modules / "ecodtool" / "1.0.lua").write_text(f'prepend_path("PATH", "{bin_dir}")\n')
    return modules


def without_modules(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without a module system a login shell may have exported into it."""
    return {k: v for k, v in environ.items() if not k.startswith(("BASH_FUNC_", "BASH_ENV", "MODULESHOME"))}


def test_module_environment_loads_or_names_what_is_missing(modulepath: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my-bin"  # on the caller's PATH, where no login shell's PATH has it
    base = {
        **without_modules(dict(os.environ)),
        "MODULEPATH": str(modulepath),
        "PATH": f"{mine}:/usr/bin:/bin",
    }
    env = module_environment(("ecodtool/1.0",), base)
    # the caller's environment plus the module's: no login shell reset PATH
    assert env["PATH"] == f"{tmp_path / 'tool' / 'bin'}:{mine}:/usr/bin:/bin"
    assert env["LOADEDMODULES"] == "ecodtool/1.0"
    # a version-less name loads the default version
    assert module_environment(("ecodtool",), base)["LOADEDMODULES"] == "ecodtool/1.0"

    with pytest.raises(ModuleLoadError) as missing:
        module_environment(("ecodtool/1.0", "hhsuite/9.9"), base)
    assert str(missing.value).startswith(
        "environment module 'hhsuite/9.9' is not available (module load failed: Lmod has detected"
    )
    assert '"hhsuite/9.9"' in str(missing.value)
    with pytest.raises(ModuleLoadError, match=r"^environment modules 'hhsuite/9\.9', 'blast x' are not"):
        module_environment(("hhsuite/9.9", "ecodtool/1.0", "blast x"), base)

    # A module system whose load exits 0 after a module it cannot find (environment
    # modules 3.2 did): what is loaded is what `module is-loaded` says.
    lenient = tmp_path / "lenient-modules.sh"
    lenient.write_text(
        ". /etc/profile.d/lmod.sh\n"
        'eval "__lmod_$(declare -f module)"\n'
        'module() { __lmod_module "$@" || { [ "$1" = load ] || return 1; }; }\n'
    )
    with pytest.raises(ModuleLoadError) as lenient_error:
        module_environment(("hhsuite/9.9",), {**base, MODULE_INIT_ENV: str(lenient)})
    assert str(lenient_error.value).startswith(
        "environment module 'hhsuite/9.9' is not available (module load exited 0 but did not load it: Lmod"
    )
    loaded = module_environment(("ecodtool/1.0",), {**base, MODULE_INIT_ENV: str(lenient)})
    assert loaded["PATH"] == env["PATH"]


def test_no_module_command_is_named(tmp_path: Path) -> None:
    """A machine without environment modules: here Lmod is installed, so the run is given
    an environment that defines no ``module`` and names no file that would."""
    home = tmp_path / "home"
    home.mkdir()
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(home), MODULE_INIT_ENV: ""}
    with pytest.raises(ModuleLoadError) as error:
        module_environment(("hhsuite/3.3.0",), bare)
    assert str(error.value) == (
        "modules ['hhsuite/3.3.0'] requested but no 'module' command is available (install Lmod or"
        f" environment-modules, or name the file that defines it in {MODULE_INIT_ENV})"
    )
    # the same in an environment with no trace of Lmod, started as `env -i` would
    with pytest.raises(ModuleLoadError, match="no 'module' command is available"):
        module_environment(("hhsuite/3.3.0",), {**bare, MODULE_INIT_ENV: str(tmp_path / "absent")})


def test_a_hung_module_system_fails_the_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module command that never returns (a modulefile on a hung filesystem) is stopped."""
    hung = tmp_path / "hung-modules.sh"
    hung.write_text("module() { sleep 600; }\n")
    monkeypatch.setattr("ecod_jobs.chunk_runner.MODULE_TIMEOUT", 1)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), MODULE_INIT_ENV: str(hung)}
    with pytest.raises(
        ModuleLoadError, match=r"^loading environment modules \['hhsuite/3.3.0'\] took over 1 s$"
    ):
        module_environment(("hhsuite/3.3.0",), env)


def test_job_script_loads_the_module(modulepath: Path, tmp_path: Path) -> None:
    """The job managers' scripts find and load modules the same way."""
    manager = LocalJobManager({"job_manager": {"state_dir": str(tmp_path / "state")}})
    env = {**without_modules(dict(os.environ)), "MODULEPATH": str(modulepath)}
    try:
        good = manager.create_job_script(["ecodtool 7"], "good", tmp_path, modules=["ecodtool/1.0"])
        ran = subprocess.run(["bash", good], capture_output=True, text=True, timeout=60, env=env)
        assert (ran.returncode, ran.stdout) == (0, "ecodtool 1.0 item 7\n"), ran.stderr
        bad = manager.create_job_script(["ecodtool 7"], "bad", tmp_path, modules=["ecodtool/9.9"])
        ran = subprocess.run(["bash", bad], capture_output=True, text=True, timeout=60, env=env)
        assert (ran.returncode, ran.stdout) == (1, "")
        assert "module load ecodtool/9.9 failed" in ran.stderr
    finally:
        manager.shutdown()


def test_local_run_loads_the_module_or_fails_naming_it(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    modulepath: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    # MODULEPATH through the config's environment: set before the modules load
    extra = {"modules": ["ecodtool/1.0"], "environment": {"MODULEPATH": str(modulepath)}}
    cfg, batch = setup_batch(tmp_path, scratch_db, n=5, batch_size=2, command=COMMAND, extra=extra)
    result = run_batch(batch, profile="local", config_path=cfg, cores=2)
    assert result.by_status == {"success": 4, "error": 1}  # item 3 has no input file
    assert (tmp_path / "echo" / "4.out").read_text() == "ecodtool 1.0 item 4\n"

    # The job type asking for a version that is not there (its own `modules` replace the
    # top-level ones): every chunk fails before running an item, and the message names
    # the module everywhere.
    (tmp_path / "broken").mkdir()
    cfg, batch = setup_batch(
        tmp_path / "broken",
        scratch_db,
        n=3,
        batch_size=2,
        command=COMMAND,
        extra=extra,
        options={"modules": ["ecodtool/9.9"]},
        name="broken",
    )
    result = run_batch(batch, profile="local", config_path=cfg, cores=2)
    assert result.returncode != 0 and result.by_status == {"error": 3}
    reason = "environment module 'ecodtool/9.9' is not available (module load failed: Lmod has detected"
    assert all(item["error"].startswith(f"not run: {reason}") for item in result.failed_items)
    jobs = q(
        pg_conn,
        "SELECT chunk_id, attempt, status, error_text FROM ecod_schema.job WHERE run_id = %s"
        " ORDER BY chunk_id, attempt",
        result.run_id,
    )
    # each chunk's attempts (the local profile retries once), each failed with the reason
    assert [(j[0], j[1], j[2]) for j in jobs] == [
        ("c00000", 1, "failed"),
        ("c00000", 2, "failed"),
        ("c00001", 1, "failed"),
        ("c00001", 2, "failed"),
    ]
    assert all(j[3].startswith(reason) for j in jobs)
    errors = q(
        pg_conn,
        "SELECT DISTINCT ps.error_message, ji.error_text FROM ecod_schema.process_status ps"
        " JOIN ecod_schema.job_item ji ON ji.process_id = ps.id WHERE ps.batch_id = %s",
        batch,
    )
    assert len(errors) == 1 and errors[0][0] == errors[0][1] and errors[0][0].startswith(f"not run: {reason}")
    assert not (tmp_path / "broken" / "echo" / "1.out").exists()
    status = run_cli("--config", str(cfg), "status", "--batch", str(batch), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    failed = status.stdout[status.stdout.index("failed items:") :].splitlines()[1:]
    assert len(failed) == 3 and all(f"not run: {reason}" in line for line in failed)


@pytest.mark.slurm
def test_slurm_run_loads_the_module(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    slurm_cluster: None,
    modulepath: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    # MODULEPATH exported where the run starts: the SLURM profile submits with
    # --export=ALL, so the array tasks have it (as a user's login shell would give it)
    monkeypatch.setenv("MODULEPATH", str(modulepath))
    extra = {"modules": ["ecodtool/1.0"]}
    cfg, batch = setup_batch(tmp_path, scratch_db, n=5, batch_size=2, command=COMMAND, extra=extra)
    result = run_batch(
        batch, profile="slurm", config_path=cfg, ecod_slurm_init_seconds_before_status_checks=5
    )
    assert result.returncode == 0, result.log_path.read_text()[-3000:]
    assert result.by_status == {"success": 4, "error": 1}  # item 3 has no input file
    assert (tmp_path / "echo" / "5.out").read_text() == "ecodtool 1.0 item 5\n"
    jobs = q(pg_conn, "SELECT status, slurm_job_id FROM ecod_schema.job WHERE run_id = %s", result.run_id)
    assert len(jobs) == 3 and all(status == "completed" and slurm_id for status, slurm_id in jobs)

    # a module that is not there: the tasks fail, each attempt and item saying which module
    monkeypatch.setenv("MODULEPATH", str(modulepath))
    (tmp_path / "broken").mkdir()
    cfg, batch = setup_batch(
        tmp_path / "broken",
        scratch_db,
        n=2,
        batch_size=2,
        command=COMMAND,
        extra={"modules": ["ecodtool/9.9"]},
        name="broken",
    )
    # one attempt (the profile's retries fail the same way, as the local run shows)
    result = run_batch(
        batch, profile="slurm", config_path=cfg, ecod_slurm_init_seconds_before_status_checks=5, retries=0
    )
    assert result.by_status == {"error": 2}
    reason = "environment module 'ecodtool/9.9' is not available (module load failed: Lmod has detected"
    assert all(item["error"].startswith(f"not run: {reason}") for item in result.failed_items)
    jobs = q(
        pg_conn,
        "SELECT attempt, status, error_text FROM ecod_schema.job WHERE run_id = %s ORDER BY attempt",
        result.run_id,
    )
    # sacct's view comes first: "FAILED (exit 5:0): environment module ..."
    assert [j[:2] for j in jobs] == [(1, "failed")]
    assert jobs[0][2].startswith("FAILED (exit 5:0): " + reason)
