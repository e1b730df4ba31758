"""Job scripts: commands run exactly as given, real exit statuses, options, headers.

The scripts are run with bash directly here; the backends run the same text.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ecod_jobs.exceptions import ValidationError
from ecod_jobs.managers import LocalJobManager
from ecod_jobs.managers.script import (
    ScriptOptions,
    expand_array,
    expand_pattern,
    read_script_header,
)

TRICKY = [
    "echo 'single quoted $HOME'",
    'echo "double quoted $HOME"',
    "echo `echo backticks` $(echo dollar-paren)",
    "printf '%s\\n' \"it's\" 'say \"hi\"' 'back\\\\slash'",
    "x=two\necho lines $x",
    "echo '%j %A literal percent'",
]
EXPECTED = (
    "single quoted $HOME\n"
    f"double quoted {os.environ['HOME']}\n"
    "backticks dollar-paren\n"
    "it's\n"
    'say "hi"\n'
    "back\\\\slash\n"
    "lines two\n"
    "%j %A literal percent\n"
)


@pytest.fixture
def manager(tmp_path: Path) -> LocalJobManager:
    manager = LocalJobManager({"job_manager": {"state_dir": str(tmp_path / "state")}})
    yield manager
    manager.shutdown()


def run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", script], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


def test_commands_run_exactly_as_written(manager: LocalJobManager, tmp_path: Path) -> None:
    script = manager.create_job_script(TRICKY, "tricky", tmp_path / "out")
    assert script == str(tmp_path / "out" / "tricky.sh")
    result = run(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED
    # the bookkeeping echoes each command verbatim to stderr, never through the shell again
    assert "[ecod-jobs]" in result.stderr and "echo 'single quoted $HOME'" in result.stderr
    assert "all 6 commands succeeded" in result.stderr


def test_stops_at_first_failure_with_its_exit_status(manager: LocalJobManager, tmp_path: Path) -> None:
    marker = tmp_path / "never"
    script = manager.create_job_script(
        ["echo one", "cd /", "test $(pwd) = /", "(exit 42)", f"touch {marker}"], "fails", tmp_path
    )
    result = run(script)
    assert result.returncode == 42
    assert result.stdout == "one\n"
    assert "command 4/5 failed with exit status 42" in result.stderr
    assert not marker.exists()


def test_exit_inside_a_command_and_false(manager: LocalJobManager, tmp_path: Path) -> None:
    assert run(manager.create_job_script(["exit 3", "echo no"], "exit3", tmp_path)).returncode == 3
    assert run(manager.create_job_script(["false"], "false", tmp_path)).returncode == 1
    # a command's own `set -e` does not hide the failing status either
    assert run(manager.create_job_script(["set -e; false; echo no"], "sete", tmp_path)).returncode == 1


def test_script_is_not_world_writable(manager: LocalJobManager, tmp_path: Path) -> None:
    mode = stat.S_IMODE(os.stat(manager.create_job_script(["true"], "perm", tmp_path)).st_mode)
    assert mode == 0o750
    assert not mode & stat.S_IWOTH


def test_headers_options_and_defaults(tmp_path: Path) -> None:
    manager = LocalJobManager(
        {
            "job_manager": {"state_dir": str(tmp_path / "state")},
            "pipeline": {"default_threads": 2, "default_memory": "3G", "default_time": "00:20:00"},
            "slurm": {"partition": "debug", "account": "ecod"},
            "environment": {"ECOD_FROM_CONFIG": "yes"},
        }
    )
    try:
        default = Path(manager.create_job_script(["true"], "defaults", tmp_path)).read_text()
        assert "#SBATCH --cpus-per-task=2\n" in default and "#SBATCH --mem=3G\n" in default
        assert "#SBATCH --time=00:20:00\n" in default and "#SBATCH --partition=debug\n" in default
        assert "#SBATCH --account=ecod\n" in default and "export ECOD_FROM_CONFIG=yes\n" in default
        assert f"#SBATCH --output={tmp_path}/defaults-%j.out\n" in default
        assert f"#SBATCH --error={tmp_path}/defaults-%j.err\n" in default
        assert "module " not in default  # no modules configured

        path = manager.create_job_script(
            ["echo $GREETING"],
            "opts",
            tmp_path,
            threads=4,
            memory="1.5G",
            time="1-00:00:00",
            partition="other",
            array="1-10%2",
            env={"GREETING": "it's $HOME"},
        )
        text = Path(path).read_text()
        assert "#SBATCH --mem=1536M\n" in text and "#SBATCH --array=1-10%2\n" in text
        assert f"#SBATCH --output={tmp_path}/opts-%A_%a.out\n" in text
        header = read_script_header(Path(path))
        assert (header.job_name, header.threads, header.mem_mb, header.time_seconds) == (
            "opts",
            4,
            1536,
            86400,
        )
        assert header.array == "1-10%2" and header.output == f"{tmp_path}/opts-%A_%a.out"
        assert run(path).stdout == "it's $HOME\n"
    finally:
        manager.shutdown()


def test_modules_are_loaded_or_the_job_stops(tmp_path: Path) -> None:
    # No module system of the machine's: neither one exported by a login shell, nor the
    # files that define one (Lmod is installed here: scripts/module-system).
    bare = {
        k: v for k, v in os.environ.items() if not k.startswith(("BASH_FUNC_", "BASH_ENV", "MODULESHOME"))
    }
    bare["ECOD_JOBS_MODULE_INIT"] = ""

    def run_bare(script: str, path: str) -> subprocess.CompletedProcess[str]:
        env = {**bare, "PATH": path}
        return subprocess.run(["bash", script], capture_output=True, text=True, timeout=30, env=env)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "module.log"
    fake = bin_dir / "module"
    fake.write_text(f'#!/bin/bash\necho "$*" >> {log}\n[ "$2" != broken ]\n')
    fake.chmod(0o755)
    manager = LocalJobManager(
        {"job_manager": {"state_dir": str(tmp_path / "state")}, "modules": ["blast/2.13.0", "hh suite"]}
    )
    try:
        script = manager.create_job_script(["echo ran"], "mods", tmp_path)
        result = run_bare(script, f"{bin_dir}:{os.environ['PATH']}")
        assert result.returncode == 0 and result.stdout == "ran\n"
        assert log.read_text().splitlines() == ["purge", "load blast/2.13.0", "load hh suite"]
        # per-job modules replace the configured ones
        broken = manager.create_job_script(["echo ran"], "broken", tmp_path, modules=["broken"])
        result = run_bare(broken, f"{bin_dir}:{os.environ['PATH']}")
        assert result.returncode == 1 and "module load broken failed" in result.stderr
        assert result.stdout == ""
        # modules configured but no module command: stop, do not run with the wrong software
        result = run_bare(script, "/usr/bin:/bin")
        assert result.returncode == 127 and result.stdout == ""
        assert "module command is missing" in result.stderr
        none = Path(manager.create_job_script(["true"], "none", tmp_path, modules=[])).read_text()
        assert "module " not in none
    finally:
        manager.shutdown()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threads": 0}, "threads"),
        ({"memory": "16GiB"}, "memory"),
        ({"time": "2 hours"}, "time"),
        ({"array": "1-x"}, "array"),
        ({"env": {"BAD-NAME": "x"}}, "BAD-NAME"),
        ({"mem": "4G"}, "unknown job script option 'mem'"),
        ({"partition": "two words"}, "partition"),
        ({"modules": "blast"}, "modules"),
    ],
)
def test_bad_options_are_validation_errors(
    manager: LocalJobManager, tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        manager.create_job_script(["true"], "bad", tmp_path, **options)


@pytest.mark.parametrize("name", ["", "a/b", "../up", "with space", "-dash", "new\nline"])
def test_bad_job_names(manager: LocalJobManager, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="job name"):
        manager.create_job_script(["true"], name, tmp_path)


def test_commands_must_be_strings(manager: LocalJobManager, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least one command"):
        manager.create_job_script([], "empty", tmp_path)
    with pytest.raises(ValidationError, match="must be strings"):
        manager.create_job_script(["echo", 3], "num", tmp_path)  # type: ignore[list-item]
    # a single string is one command, not one per character
    assert run(manager.create_job_script("echo one", "single", tmp_path)).stdout == "one\n"


def test_int_memory_and_time_follow_sbatch_units() -> None:
    options = ScriptOptions(memory=500, time=90)
    assert (options.memory, options.time, options.mem_mb, options.time_seconds) == (
        "500M",
        "01:30:00",
        500,
        5400,
    )


def test_expand_array_and_patterns() -> None:
    assert expand_array("1-5:2,8,10-11%2") == [1, 3, 5, 8, 10, 11]
    assert expand_pattern("/o/%x-%j.out", job_id="local-1", job_name="n") == "/o/n-local-1.out"
    assert (
        expand_pattern("/o/%x-%A_%a.err", job_id="local-1_3", job_name="n", array_job_id="local-1", task_id=3)
        == "/o/n-local-1_3.err"
    )
    assert expand_pattern("/o/100%%", job_id="j", job_name="n") == "/o/100%"
