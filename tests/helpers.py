"""Helpers shared by tests (importable as ``helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
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


def start_cli(
    *args: str, cwd: Path, preexec_fn: Any = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start the real ``ecod-jobs`` entry point without waiting (for faults injected mid-run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecod_jobs.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
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

# The command's own count of how often it ran: one line per run of an item's command
# (read with commands_ran). Join it with && so that a step killed before it stops it.
RAN = "echo {item_id} >> {output_dir}/ran.log"


def commands_ran(output_dir: Path) -> Counter[int]:
    """How many times each item's command reached RAN, by process id (empty before any did)."""
    log = output_dir / "ran.log"
    return Counter(int(line) for line in log.read_text().split()) if log.exists() else Counter()


def write_items(path: Path, paths: list[str]) -> Path:
    """An items file listing ``paths`` (no other columns)."""
    path.write_text("path\n" + "".join(f"{item}\n" for item in paths))
    return path


def stage_job(script_dir: Path, stage: str, batch_size: int, **extra: Any) -> dict[str, Any]:
    """The job type of a pipeline test's stage: ``sh script_dir/stage.sh STAGE ITEM OUT`` in
    chunks of ``batch_size``, writing file type ``STAGE_result`` and reporting ``coverage``
    (100M, 5 minutes, no input check; ``extra`` overrides)."""
    return {
        "command": f"sh {script_dir}/stage.sh {stage} {{item_id}} {{out[{stage}_result]}}",
        "outputs": {f"{stage}_result": f"out/{stage}/{{stem}}.txt"},
        "metrics": ["coverage"],
        "stage": f"{stage}_complete",
        "batch_size": batch_size,
        "memory": "100M",
        "time": "00:05:00",
        "check_inputs": False,
        **extra,
    }


def add_batch(cfg: Path, tmp_path: Path, name: str, paths: list[str]) -> int:
    """Register one more batch named ``name`` (items file ``{name}.tsv`` listing ``paths``,
    base path ``tmp_path``) under the config ``cfg`` of setup_batch."""
    return create_batch(cfg, write_items(tmp_path / f"{name}.tsv", paths), name, tmp_path)


def setup_batch(
    tmp_path: Path,
    database: dict[str, Any],
    n: int = 14,
    batch_size: int = 4,
    command: str = COMMAND,
    extra: dict[str, Any] | None = None,
    *,
    paths: list[str] | None = None,
    job_type: str = "echo",
    options: dict[str, Any] | None = None,
    name: str = "wf",
    config_name: str = "config.yml",
    base_path: Path | None = None,
) -> tuple[Path, int]:
    """The one batch set-up of the tests: a config file and a registered batch.

    ``database`` is the config's ``database`` section (``scratch_db``, or another
    server's). One job type ``job_type`` runs ``command`` in chunks of ``batch_size``
    (1G, 5 minutes, stage ``{job_type}_complete``; ``options`` adds or overrides its
    keys); ``extra`` adds top-level config sections. Work and output roots are under
    ``tmp_path``; outputs go to ``{base_path}/{job_type}`` (base path: ``tmp_path``).

    Items (``tmp_path/items.tsv``): without ``paths``, n input files ``data/chain i.fa``
    (spaces: they reach the command as one argument) with protein ids, where item 3 has
    no file; with ``paths``, those paths and no files (``check_inputs`` off). In a fresh
    database the process ids are 1, 2, ... in that order.
    """
    job: dict[str, Any] = {
        "command": command,
        "batch_size": batch_size,
        "memory": "1G",
        "time": "00:05:00",
        "stage": f"{job_type}_complete",
    }
    if paths is not None:
        job["check_inputs"] = False
    cfg = write_config(
        tmp_path / config_name,
        {
            "database": database,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {job_type: {**job, **(options or {})}},
            **(extra or {}),
        },
    )
    items = tmp_path / "items.tsv"
    if paths is not None:
        write_items(items, paths)
        return cfg, create_batch(cfg, items, name, tmp_path if base_path is None else base_path)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    lines = ["path\tprotein_id"]
    for i in range(1, n + 1):
        file_name = f"chain {i}.fa"
        if i != 3:
            (data / file_name).write_text(f">p{i}\nMKV\n")
        lines.append(f"data/{file_name}\t{i}")
    items.write_text("\n".join(lines) + "\n")
    return cfg, create_batch(cfg, items, name, tmp_path if base_path is None else base_path)


def assert_each_item_once(
    conn: Any,
    items: int | Iterable[int],
    *,
    failed: Iterable[int] = (),
    run_id: str | None = None,
    ran: Path | None = None,
) -> None:
    """The one check that each item was done exactly once (``items``: process ids, or n for 1..n).

    - ``process_status``: each item ``success``, or ``error`` for those in ``failed``;
      without ``run_id``, these are all the items of their batches.
    - ``job_item``: with ``run_id``, exactly one row per item in that run (``completed``,
      or ``failed`` for those in ``failed``) and none for any other item; without it,
      exactly one ``completed`` row per succeeded item over all runs and none for others.
    - ``ran``: the output directory of a command that ends with RAN; each item's command
      ran exactly once, and no other item's.
    """
    wanted = set(range(1, items + 1)) if isinstance(items, int) else set(items)
    failing = set(failed)
    assert failing <= wanted, f"failed items {sorted(failing - wanted)} are not among the items"
    problems: list[str] = []

    expected_status = {i: "error" if i in failing else "success" for i in wanted}
    if run_id is None:
        rows = q(
            conn,
            "SELECT id, status FROM ecod_schema.process_status WHERE batch_id IN"
            " (SELECT batch_id FROM ecod_schema.process_status WHERE id = ANY(%s))",
            sorted(wanted),
        )
    else:
        rows = q(conn, "SELECT id, status FROM ecod_schema.process_status WHERE id = ANY(%s)", sorted(wanted))
    status = dict(rows)
    for i in sorted(set(status) | wanted):
        if status.get(i) != expected_status.get(i):
            problems.append(
                f"item {i}: process_status {status.get(i, 'missing')!r}, expected "
                f"{expected_status.get(i, 'not in the batch')!r}"
            )

    if run_id is not None:
        rows = q(
            conn,
            "SELECT ji.process_id, ji.status FROM ecod_schema.job_item ji JOIN ecod_schema.job j"
            " ON j.id = ji.job_id WHERE j.run_id = %s",
            run_id,
        )
        where = f"in run {run_id}"
        expected_rows = Counter({(i, "failed" if i in failing else "completed"): 1 for i in wanted})
    else:
        rows = q(conn, "SELECT process_id, status FROM ecod_schema.job_item WHERE status = 'completed'")
        where = "over all runs"
        expected_rows = Counter({(i, "completed"): 1 for i in wanted - failing})
    got_rows = Counter(rows)
    for i, row_status in sorted(set(got_rows) | set(expected_rows)):
        if got_rows[(i, row_status)] != expected_rows[(i, row_status)]:
            problems.append(
                f"item {i}: {got_rows[(i, row_status)]} {row_status} job_item rows {where},"
                f" expected {expected_rows[(i, row_status)]}"
            )

    if ran is not None:
        counts = commands_ran(ran)
        for i in sorted(set(counts) | wanted):
            if counts[i] != (1 if i in wanted else 0):
                problems.append(f"item {i}: its command ran {counts[i]} times ({ran / 'ran.log'})")

    assert not problems, "each item done exactly once, but:\n  " + "\n  ".join(problems)


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


@dataclass
class Protein:
    id: int
    sequence_path: str


class DomainAnalysisPipeline:
    """Stands in for ecod.pipelines.domain_analysis (ECOD's, not part of the jobs module) in
    the READMEs' pipeline example: the pending items of a batch, as ``(id, sequence_path)``."""

    def __init__(self, config_path: str) -> None:
        import yaml

        from ecod_jobs.db import Database

        self.db = Database(yaml.safe_load(Path(config_path).read_text()))

    def get_pending_proteins(self, batch_id: int) -> list[Protein]:
        rows = self.db.query(
            "SELECT id, relative_path FROM ecod_schema.process_status"
            " WHERE batch_id = %s AND status = 'pending' ORDER BY id",
            (batch_id,),
        )
        return [Protein(pid, path) for pid, path in rows]
