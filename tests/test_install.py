"""The README's installs, made as a new user makes them (issue 13).

Fresh virtualenvs get ``pip install -e .`` and ``pip install .`` from a clean copy of
the source tree (so no build artifact or venv of the checkout counts); then, from a data
directory outside the source tree, every entry point runs a real batch: ``ecod-jobs
run``, ``run_batch()``, and plain ``snakemake --profile ... --config batch_id=N`` with the
profiles copied out (``ecod-jobs profiles copy``) and with the installed ones
(``ecod-jobs profiles show``); on SLURM too when the cluster is up. An install whose
logger plugin Snakemake cannot see fails before planning, with one line. ``make``'s
install is the test suite's own venv (tests/test_bundle.py runs its entry points).

pip's cache makes each install about 20 s; the two are made side by side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, connect_scratch, q, setup_batch

pytestmark = pytest.mark.slow

INSTALLS = {"editable": ["-e", "."], "wheel": ["."]}
# left out of a copy that is not a git checkout (an unpacked sdist, say)
NOT_SOURCE = (".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache")
NOT_SOURCE += (".ecod_jobs", ".snakemake", "results", "test-artifacts")


def source_files(root: Path) -> list[str]:
    """The source tree's files: git's tracked and untracked-but-not-ignored ones in a checkout."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
    )
    if listed.returncode != 0:
        return []
    return [name for name in listed.stdout.decode().split("\0") if name and (root / name).is_file()]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("source") / "ecod-jobs"
    files = source_files(REPO)
    if not files:
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        return copy
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    return copy


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user of ``venv``: its bin first on PATH, nothing of this test run's Python."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ECOD_CONFIG_PATH", "ECOD_JOBS_RUN_ID"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture(scope="module")
def installs(source_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Each install in its own fresh virtualenv, exactly as the README says (``pip install [-e] .``)."""
    root = tmp_path_factory.mktemp("installs")
    procs = {}
    for name, args in INSTALLS.items():
        venv = root / name
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        procs[name] = subprocess.Popen(
            [str(venv / "bin" / "pip"), "install", "--quiet", *args],
            cwd=source_copy,
            env=clean_env(venv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"pip install {' '.join(INSTALLS[name])} failed:\n{out[-3000:]}"
    yield {name: root / name for name in INSTALLS}
    shutil.rmtree(root, ignore_errors=True)  # about 430 MB each


@pytest.fixture(params=sorted(INSTALLS))
def venv(request: pytest.FixtureRequest, installs: dict[str, Path]) -> Path:
    return installs[request.param]


def run_in(venv: Path, program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One of the venv's commands, as its user would run it, from ``cwd``."""
    return subprocess.run(
        [str(venv / "bin" / program), *args],
        cwd=cwd,
        env=clean_env(venv),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def batch(tmp_path: Path, scratch_db: dict[str, Any]) -> tuple[Path, int]:
    """A data directory outside the source tree (its config also at config/config.yml, where
    plain ``snakemake`` finds it) and a batch of two items whose command is ``true``."""
    cfg, batch_id = setup_batch(tmp_path, scratch_db, n=2, batch_size=1, command="true")
    assert not tmp_path.resolve().is_relative_to(REPO.resolve())
    (tmp_path / "config").mkdir()
    shutil.copy(cfg, tmp_path / "config" / "config.yml")
    return cfg, batch_id


RUN_BATCH = """
import sys
from ecod_jobs import run_batch
r = run_batch(int(sys.argv[1]), profile="local", config_path=sys.argv[2])
print(r.returncode, r.ok, r.by_status)
"""


def statuses(scratch_db: dict[str, Any], batch_id: int) -> list[str]:
    conn = connect_scratch(scratch_db)
    try:
        rows = q(
            conn, "SELECT status FROM ecod_schema.process_status WHERE batch_id = %s ORDER BY id", batch_id
        )
    finally:
        conn.close()
    return [r[0] for r in rows]


def test_wheel_carries_what_a_run_needs(installs: dict[str, Path], tmp_path: Path) -> None:
    """The regular install has its own workflow, profiles, plugins and package data."""
    venv = installs["wheel"]
    code = "import ecod_jobs, sys; print(ecod_jobs.__file__)"
    found = run_in(venv, "python", "-c", code, cwd=tmp_path)
    package = Path(found.stdout.strip()).parent
    assert package.is_relative_to(venv), found.stdout + found.stderr
    for name in (
        "_bundled/workflow/Snakefile",
        "_bundled/workflow/rules/chunk.smk",
        "_bundled/workflow/schemas/run.schema.yaml",
        "_bundled/profiles/local/config.yaml",
        "_bundled/profiles/slurm/config.yaml",
        "schemas/config.schema.yaml",
        "insight/templates/report.html.j2",
        "insight/static/view.js",
        "py.typed",
    ):
        assert (package / name).is_file(), name
    for plugin in ("snakemake_logger_plugin_ecod_jobs", "snakemake_executor_plugin_ecod_slurm"):
        assert (package.parent / plugin / "__init__.py").is_file(), plugin
    shown = run_in(venv, "ecod-jobs", "profiles", "show", cwd=tmp_path)
    assert shown.stdout.strip() == str(package / "_bundled" / "profiles")


def test_ecod_jobs_run(
    venv: Path, batch: tuple[Path, int], tmp_path: Path, scratch_db: dict[str, Any]
) -> None:
    cfg, batch_id = batch
    run = run_in(venv, "ecod-jobs", "--config", str(cfg), "run", "--batch", str(batch_id), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 succeeded, 0 failed, 0 unfinished of 2 items" in run.stdout
    assert statuses(scratch_db, batch_id) == ["success", "success"]


def test_run_batch(venv: Path, batch: tuple[Path, int], tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch_id = batch
    run = run_in(venv, "python", "-c", RUN_BATCH, str(batch_id), str(cfg), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "0 True {'success': 2}"
    assert statuses(scratch_db, batch_id) == ["success", "success"]


@pytest.mark.parametrize("profiles", ["copied", "installed"])
def test_plain_snakemake(
    venv: Path,
    source_copy: Path,
    profiles: str,
    batch: tuple[Path, int],
    tmp_path: Path,
    scratch_db: dict[str, Any],
) -> None:
    """``snakemake --profile profiles/local --config batch_id=N`` as the README documents it: with
    the profiles copied into the data directory, or pointing at the installed ones."""
    _, batch_id = batch
    if profiles == "copied":
        copied = run_in(venv, "ecod-jobs", "profiles", "copy", "profiles", cwd=tmp_path)
        assert copied.returncode == 0, copied.stderr
        local, slurm = "profiles/local", "profiles/slurm"
    else:
        shown = [
            run_in(venv, "ecod-jobs", "profiles", "show", name, cwd=tmp_path) for name in ("local", "slurm")
        ]
        assert all(s.returncode == 0 for s in shown), [s.stderr for s in shown]
        local, slurm = (s.stdout.strip() for s in shown)
        # the wheel's own copy; an editable install's source tree
        assert Path(local).is_relative_to(venv if venv.name == "wheel" else source_copy), local
    # the slurm profile parses, and its ecod-slurm executor is found (a dry run needs no cluster)
    dry = run_in(
        venv, "snakemake", "--profile", slurm, "--config", f"batch_id={batch_id}", "-n", cwd=tmp_path
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    run = run_in(venv, "snakemake", "--profile", local, "--config", f"batch_id={batch_id}", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert statuses(scratch_db, batch_id) == ["success", "success"]


@pytest.mark.slurm
def test_plain_snakemake_on_slurm(
    venv: Path, slurm_cluster: None, batch: tuple[Path, int], tmp_path: Path, scratch_db: dict[str, Any]
) -> None:
    """The slurm profile for real: the install's ecod-slurm executor submits the chunks as an
    array whose tasks run the install's own chunk runner."""
    _, batch_id = batch
    copied = run_in(venv, "ecod-jobs", "profiles", "copy", "profiles", cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    argv = ["--profile", "profiles/slurm", "--config", f"batch_id={batch_id}"]
    run = run_in(
        venv, "snakemake", *argv, "--ecod-slurm-init-seconds-before-status-checks", "5", cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "Submitted array job" in run.stdout + run.stderr
    assert statuses(scratch_db, batch_id) == ["success", "success"]


def test_hidden_plugin_fails_before_planning(
    venv: Path, batch: tuple[Path, int], tmp_path: Path, scratch_db: dict[str, Any]
) -> None:
    """An install where Snakemake cannot see the logger plugin: one line, exit 2, nothing planned."""
    cfg, batch_id = batch
    where = run_in(
        venv,
        "python",
        "-c",
        "import snakemake_logger_plugin_ecod_jobs as m; print(m.__path__[0])",
        cwd=tmp_path,
    )
    plugin = Path(where.stdout.strip())
    assert where.returncode == 0 and plugin.is_dir(), where.stderr
    hidden = plugin.with_name(plugin.name + ".hidden")
    plugin.rename(hidden)
    try:
        run = run_in(venv, "ecod-jobs", "--config", str(cfg), "run", "--batch", str(batch_id), cwd=tmp_path)
        api = run_in(
            venv,
            "python",
            "-c",
            RUN_BATCH,
            str(batch_id),
            str(cfg),
            cwd=tmp_path,
        )
    finally:
        hidden.rename(plugin)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("ecod-jobs: error: Snakemake cannot find ecod-jobs' logger plugin 'ecod-jobs'")
    assert "snakemake_logger_plugin_ecod_jobs" in lines[0] and "pip install" in lines[0]
    assert api.returncode == 1 and "ConfigurationError: Snakemake cannot find" in api.stderr, api.stderr
    assert statuses(scratch_db, batch_id) == ["pending", "pending"]
    conn = connect_scratch(scratch_db)
    try:
        assert q(conn, "SELECT count(*) FROM ecod_schema.job") == [(0,)]
        assert q(conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_run") == [(0,)]
    finally:
        conn.close()
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").rglob("plan.json"))
