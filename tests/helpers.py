"""Helpers shared by tests (importable as ``helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``ecod-jobs`` entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ecod_jobs.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        input=input_text,
        timeout=300,
    )


def start_cli(*args: str, cwd: Path, preexec_fn: Any = None) -> subprocess.Popen[str]:
    """Start the real ``ecod-jobs`` entry point without waiting (for faults injected mid-run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecod_jobs.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def wait_for(condition: Any, timeout: float = 90, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something true (returned), or fail after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (yet)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, config: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def connect_scratch(section: dict[str, Any]) -> Any:
    """An autocommit connection to a scratch database given its ``database`` config section."""
    import psycopg2

    conn = psycopg2.connect(
        host=section["host"],
        port=section["port"],
        dbname=section["database"],
        user=section["user"],
        password=section.get("password"),
    )
    conn.autocommit = True
    return conn


def q(conn: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query on a test connection."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def create_batch(cfg: Path, items: Path, name: str, base_path: Path | None, cwd: Path | None = None) -> int:
    """Register a batch through the real CLI and return its id (no base path: paths as given)."""
    base = ["--base-path", str(base_path)] if base_path is not None else []
    created = run_cli(
        "--config", str(cfg), "batch", "create", "--name", name, "--items", str(items), *base, cwd=cwd
    )
    assert created.returncode == 0, created.stderr
    return int(created.stdout.split()[-1])


# Fails for items whose marker file exists: lets a test "fix" items between runs.
COMMAND = (
    "test ! -e {output_dir}/fail_{item_id} || {{ echo 'marked to fail' >&2; exit 7; }};"
    " echo done {item_id} > {output_dir}/{item_id}.out"
)


def setup_batch(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    n: int = 14,
    batch_size: int = 4,
    command: str = COMMAND,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, int]:
    """A config file, n input files (item 3 has no input file) and a registered batch."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    lines = ["path\tprotein_id"]
    for i in range(1, n + 1):
        name = f"chain {i}.fa"  # spaces: reach the command as one argument
        if i != 3:
            (data / name).write_text(f">p{i}\nMKV\n")
        lines.append(f"data/{name}\t{i}")
    (tmp_path / "items.tsv").write_text("\n".join(lines) + "\n")
    cfg = {
        "database": scratch_db,
        "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
        "job_types": {
            "echo": {
                "command": command,
                "batch_size": batch_size,
                "memory": "1G",
                "time": "00:05:00",
                "stage": "echo_complete",
            }
        },
        **(extra or {}),
    }
    path = write_config(tmp_path / "config.yml", cfg)
    return path, create_batch(path, tmp_path / "items.tsv", "wf", tmp_path)


def assert_each_item_once(conn: Any, run_id: str, expected: set[int]) -> None:
    rows = q(
        conn,
        "SELECT ji.process_id FROM ecod_schema.job_item ji JOIN ecod_schema.job j"
        " ON j.id = ji.job_id WHERE j.run_id = %s",
        run_id,
    )
    ids = [r[0] for r in rows]
    assert sorted(ids) == sorted(expected), "every planned item has exactly one job_item in the run"


def squeue_tasks_of_run(conn: Any, *, completing: bool = True) -> list[str]:
    """``id|name|state`` of every SLURM task squeue lists for the batch's (only) run, found by
    the run's job-name prefix; ``completing=False`` leaves out tasks in COMPLETING."""
    from ecod_jobs.recovery import slurm_name_prefix

    rows = q(conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run")
    if not rows:
        return []
    prefix = slurm_name_prefix(rows[0][0]) + "_"
    out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i|%j|%T"], capture_output=True, text=True)
    return [
        line
        for line in out.stdout.splitlines()
        if line.split("|")[1].startswith(prefix) and (completing or line.split("|")[2] != "COMPLETING")
    ]


def write_plan(run: Any, command: str, output_dir: str, chunks: int, items_per_chunk: int = 1) -> None:
    """A plan (batch 1, job type t) of ``chunks`` chunks, written as the plan checkpoint writes it;
    the manifests are the caller's."""
    from ecod_jobs.plan_file import Plan, PlannedChunk

    Plan(
        run_id=run.run_id,
        database_id=None,
        batch_id=1,
        job_type="t",
        retry_failed=False,
        output_dir=output_dir,
        base_path=None,
        command=command,
        threads=1,
        stage="t",
        item_timeout=None,
        check_inputs=False,
        modules=(),
        environment={},
        spec={},
        items=chunks * items_per_chunk,
        chunks=tuple(PlannedChunk(f"c{i:05d}", items_per_chunk, i + 1) for i in range(chunks)),
    ).write(run)
