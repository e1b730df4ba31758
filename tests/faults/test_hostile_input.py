"""Hostile and bad input: literal treatment or a clear error, never execution or half-writes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import connect_scratch, create_batch, free_port, q, run_cli, start_cli, write_config

from ecod_jobs.items import escape_field

HOSTILE_NAMES = [
    "with space.fa",
    "quote'single.fa",
    'quote"double.fa',
    "semi;colon.fa",
    "$(touch PWNED).fa",
    "`touch PWNED2`.fa",
    "star*.fa",
    "-leading-dash.fa",
    "new\nline.fa",
    "tab\there.fa",
    "back\\slash.fa",
    "ünïcödé 蛋白.fa",
]
HOSTILE_TEXT = "x'); DROP TABLE ecod_schema.batch; --"
ARGV_COMMAND = (
    "python -c 'import json, sys; print(json.dumps(sys.argv[1:]))' {path} >> {output_dir}/argv.jsonl"
)


def test_hostile_paths_reach_the_command_as_single_literal_arguments(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = []
    for name in HOSTILE_NAMES:
        (inputs / name).write_text(">seq\nMK\n")
        paths.append(str(inputs / name))
    (tmp_path / "items.tsv").write_text("path\n" + "".join(escape_field(p) + "\n" for p in paths))
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work"), "ref_version": "v'1\"; --"},
            "job_types": {"argv": {"command": ARGV_COMMAND, "batch_size": 100, "description": HOSTILE_TEXT}},
        },
    )
    create_batch(cfg, tmp_path / "items.tsv", HOSTILE_TEXT, None, cwd=tmp_path)
    result = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    argvs = [
        json.loads(line)
        for line in (tmp_path / "results" / "batch_1" / "argv" / "argv.jsonl").read_text().splitlines()
    ]
    assert all(len(argv) == 1 for argv in argvs), argvs  # one argument each, never split or globbed
    assert sorted(a[0] for a in argvs) == sorted(paths)  # byte for byte
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*")), "nothing was executed"
    assert q(pg_conn, "SELECT batch_name, ref_version FROM ecod_schema.batch") == [
        (HOSTILE_TEXT, "v'1\"; --")
    ]
    stored = q(pg_conn, "SELECT relative_path, status FROM ecod_schema.process_status ORDER BY id")
    assert sorted(r[0] for r in stored) == sorted(paths) and {r[1] for r in stored} == {"success"}


BAD_CONFIGS: dict[str, tuple[str | None, str]] = {
    "unknown placeholder": (
        "job_types:\n  x:\n    command: echo {nope}\n",
        "unknown placeholder {nope}",
    ),
    "invalid memory": (
        "job_types:\n  x:\n    command: echo {path}\n    memory: 12 parsecs\n",
        "job_types.x.memory: value '12 parsecs' is not valid",
    ),
    "invalid time": (
        "job_types:\n  x:\n    command: echo {path}\n    time: forever\n",
        "job_types.x.time: value 'forever' is not valid",
    ),
    "not YAML": ("job_types: [unclosed\n", "line 2, column 1: not valid YAML"),
    "not a mapping": ("- a\n- b\n", "expected a mapping of sections at the top level, got list"),
    "missing file": (None, "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configuration_exits_2_naming_the_problem_and_writes_nothing(tmp_path: Path, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    cfg = tmp_path / "config.yml"
    if text is not None:
        cfg.write_text(text)
    result = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and str(cfg) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["config.yml"] if text else [])


def test_unreachable_database_is_one_line_with_host_port_and_cause(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": {
                "host": "127.0.0.1",
                "port": port,
                "password": "pw-Secr3t-xyz",
                "connect_timeout": 2,
            },
            "job_types": {"x": {"command": "echo {path}"}},
        },
    )
    result = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "refused" in lines[0].lower(), lines
    assert "pw-Secr3t-xyz" not in result.stderr
    debug = run_cli("--config", str(cfg), "--debug", "run", "--batch", "1", cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr  # --debug shows where


def test_unknown_batch_type_and_nothing_to_do(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    (tmp_path / "items.tsv").write_text("path\na\n")
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work")},
            "job_types": {"x": {"command": "true", "check_inputs": False}},
        },
    )
    create_batch(cfg, tmp_path / "items.tsv", "b", tmp_path)
    hostile_type = run_cli(
        "--config", str(cfg), "run", "--batch", "1", "--job-type", HOSTILE_TEXT, cwd=tmp_path
    )
    assert hostile_type.returncode == 2 and f"unknown job type {HOSTILE_TEXT!r}" in hostile_type.stderr
    assert run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path).returncode == 0
    again = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


def test_password_never_shown_and_nothing_world_writable(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    # The server trusts local connections, so any password works; it must still never show.
    secret = "pw-Secr3t-xyz"
    (tmp_path / "items.tsv").write_text("path\n" + "".join(f"i{n}\n" for n in range(6)))
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": {**scratch_db, "password": secret},
            "pipeline": {"work_root": str(tmp_path / "work")},
            "job_types": {"x": {"command": "sleep 1; echo {path}", "batch_size": 2, "check_inputs": False}},
        },
    )
    create_batch(cfg, tmp_path / "items.tsv", "pw", tmp_path)
    # a careless caller's umask: ecod-jobs must not inherit it
    run = start_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path, preexec_fn=lambda: os.umask(0))
    listings = []
    while run.poll() is None:
        listings.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
        time.sleep(0.3)
    out, err = run.communicate()
    assert run.returncode == 0, out + err
    assert any("ecod_jobs.chunk_runner" in listing for listing in listings), "listing missed the commands"
    assert not any(secret in listing for listing in listings), "password in a process listing"
    assert secret not in out + err
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "config.yml":
            assert secret.encode() not in path.read_bytes(), f"password written to {path}"
    for row in q(pg_conn, "SELECT * FROM ecod_schema.ecod_jobs_run"):
        assert secret not in " ".join(map(str, row))
    conn = connect_scratch(scratch_db)
    conn.close()
    writable = [
        str(p)
        for root in (tmp_path / "work", tmp_path / "x", tmp_path / ".snakemake")
        for p in [root, *root.rglob("*")]
        if p.exists() and not p.is_symlink() and p.stat().st_mode & stat.S_IWOTH
    ]
    assert (tmp_path / "work").exists() and (tmp_path / "x").exists()
    assert not writable, f"world-writable: {writable[:10]}"
