"""No item is ever stranded in 'processing': a failure at each step of planning, or a
run that dies between committing its plan and starting its chunks, leaves every item
either untouched or handed back, and the next run runs them."""

from __future__ import annotations

import errno
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import RAN, assert_each_item_once, q, run_cli, setup_batch

from ecod_jobs import plan as plan_module
from ecod_jobs import plan_file
from ecod_jobs.config import job_type_spec, load_config
from ecod_jobs.db import Database
from ecod_jobs.layout import BatchLayout, RunLayout
from ecod_jobs.plan import plan_run
from ecod_jobs.recovery import recover_dead_runs
from ecod_jobs.sync import finish_run

N = 5


def setup(tmp_path: Path, scratch_db: dict[str, Any]) -> tuple[Path, dict[str, Any], Database]:
    """Batch 1 of N items of job type ``t``, two per chunk, outputs in tmp_path/base/t."""
    base = tmp_path / "base"
    base.mkdir()
    cfg, batch = setup_batch(
        tmp_path,
        scratch_db,
        batch_size=2,
        command=RAN,
        paths=[f"item{i}" for i in range(N)],
        job_type="t",
        name="plan-faults",
        base_path=base,
    )
    assert batch == 1
    config = load_config(cfg)
    return cfg, config, Database(config)


def new_run(db: Database, config: dict[str, Any], pid: int | None = None) -> RunLayout:
    """A run row as the workflow's onstart writes it (pid: the Snakemake process)."""
    run_id = str(uuid.uuid4())
    db.query(
        "INSERT INTO ecod_schema.ecod_jobs_run (run_id, batch_id, job_type, host, pid, status)"
        " VALUES (%s, 1, 't', %s, %s, 'running')",
        (run_id, socket.gethostname(), pid or os.getpid()),
    )
    return BatchLayout.create(config["pipeline"]["work_root"], 1, "t").run(run_id)


def statuses(pg_conn: Any) -> dict[str, int]:
    return dict(q(pg_conn, "SELECT status, count(*) FROM ecod_schema.process_status GROUP BY status"))


def execute(conn: Any, statement: str, *params: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(statement, params)


def fail_trigger(table: str, when: str) -> Callable[[Any], None]:
    """A real PostgreSQL error in the plan's transaction: a trigger that raises."""

    def install(pg_conn: Any) -> None:
        execute(
            pg_conn,
            "CREATE OR REPLACE FUNCTION ecod_schema.injected_failure() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
        )
        execute(
            pg_conn,
            f"CREATE TRIGGER injected BEFORE {when} ON ecod_schema.{table}"
            " FOR EACH ROW EXECUTE FUNCTION ecod_schema.injected_failure()",
        )

    return install


def no_space(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device (injected)")


# step -> how to make it fail
STEPS: dict[str, Callable[..., None]] = {
    "UPDATE of the items": lambda pg, mp, tmp: fail_trigger("process_status", "UPDATE")(pg),
    "INSERT of the job rows": lambda pg, mp, tmp: fail_trigger("job", "INSERT")(pg),
    "COPY of the job items": lambda pg, mp, tmp: fail_trigger("job_item", "INSERT")(pg),
    "UPDATE of the batch": lambda pg, mp, tmp: fail_trigger("batch", "UPDATE")(pg),
    "writing the manifests": lambda pg, mp, tmp: mp.setattr(plan_module, "write_unsynced", no_space),
    "writing plan.json": lambda pg, mp, tmp: mp.setattr(plan_file, "write_atomic", no_space),
    "creating the output directory": lambda pg, mp, tmp: q(
        pg, "UPDATE ecod_schema.batch SET base_path = %s RETURNING id", str(tmp / "items.tsv")
    ),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_failing_plan_step_leaves_the_items_untouched(
    step: str, tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cfg, config, db = setup(tmp_path, scratch_db)
    run = new_run(db, config)
    STEPS[step](pg_conn, monkeypatch, tmp_path)
    with pytest.raises(Exception) as failure:
        plan_run(db, config, job_type_spec(config, "t"), 1, run)
    if step == "creating the output directory":
        assert "cannot create the output directory" in str(failure.value)
    assert statuses(pg_conn) == {"pending": N}, "nothing committed"
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job") == [(0,)]
    assert not run.plan.exists(), "no plan without its commit"
    # the workflow's onerror, as after any failed plan
    finish_run(db, run, 1, success=False)
    assert statuses(pg_conn) == {"pending": N}
    # the fault goes away; the next run runs every item
    for table in ("process_status", "job", "job_item", "batch"):
        execute(pg_conn, f"DROP TRIGGER IF EXISTS injected ON ecod_schema.{table}")
    execute(pg_conn, "UPDATE ecod_schema.batch SET base_path = %s", str(tmp_path / "base"))
    monkeypatch.undo()
    again = plan_run(db, config, job_type_spec(config, "t"), 1, new_run(db, config))
    assert again.items == N


def committed_plan(db: Database, config: dict[str, Any], pg_conn: Any, pid: int | None = None) -> RunLayout:
    run = new_run(db, config, pid)
    plan_run(db, config, job_type_spec(config, "t"), 1, run)
    assert statuses(pg_conn) == {"processing": N}
    return run


def test_workflow_failing_after_the_plan_commit_hands_the_items_back(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """Snakemake fails after the checkpoint (before any chunk started): onerror settles."""
    _cfg, config, db = setup(tmp_path, scratch_db)
    run = committed_plan(db, config, pg_conn)
    result = finish_run(db, run, 1, success=False)
    assert "before any chunk started" in result["message"]
    assert statuses(pg_conn) == {"pending": N}, "back to pending, not error: nothing ran"
    assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("error",)]


def test_checkpoint_output_deleted_after_the_commit_hands_the_items_back(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """Snakemake deletes a failed checkpoint's plan.json: the database says what the run took."""
    _cfg, config, db = setup(tmp_path, scratch_db)
    run = committed_plan(db, config, pg_conn)
    run.plan.unlink()
    result = finish_run(db, run, 1, success=False)
    assert result["message"] == f"the run ended before it was planned; its {N} items are pending again"
    assert statuses(pg_conn) == {"pending": N}
    assert q(pg_conn, "SELECT DISTINCT status FROM ecod_schema.job") == [("failed",)]
    assert q(pg_conn, "SELECT DISTINCT status FROM ecod_schema.job_item") == [("failed",)]


@pytest.mark.parametrize("keep_plan", [True, False], ids=["plan.json kept", "plan.json gone"])
def test_head_dying_right_after_the_commit_is_recovered(
    keep_plan: bool, tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """The head dies between the commit and the first chunk: the next run's recovery
    hands the items back (the run row says 'running', its pid is gone)."""
    _cfg, config, db = setup(tmp_path, scratch_db)
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    run = committed_plan(db, config, pg_conn, pid=gone)
    if not keep_plan:
        run.plan.unlink()
    assert recover_dead_runs(db, config, 1, "t", str(uuid.uuid4())) == [run.run_id]
    assert statuses(pg_conn) == {"pending": N}
    assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("interrupted",)]


def test_run_with_a_regular_file_as_base_path_strands_nothing(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """End to end through `ecod-jobs run`: the plan refuses before moving any item, and
    the next run, once the base path is fixed, runs every item."""
    cfg, _config, _db = setup(tmp_path, scratch_db)
    # `batch create` rejects this now; a batch made before (or by hand) may still have it
    q(pg_conn, "UPDATE ecod_schema.batch SET base_path = %s RETURNING id", str(tmp_path / "items.tsv"))
    first = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert statuses(pg_conn) == {"pending": N}
    assert q(pg_conn, "SELECT status, message FROM ecod_schema.ecod_jobs_run") == [
        ("error", "the run ended before it was planned")
    ]
    log = next((tmp_path / "work" / "logs").glob("run-*.log")).read_text()
    assert "cannot create the output directory" in log and "must be a writable directory" in log
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_lease") == [(0,)]

    q(pg_conn, "UPDATE ecod_schema.batch SET base_path = %s RETURNING id", str(tmp_path / "base"))
    second = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert statuses(pg_conn) == {"success": N}
    assert_each_item_once(pg_conn, N, ran=tmp_path / "base" / "t")


def test_items_stranded_by_an_ended_run_are_run_again(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """The state older versions left (a run closed as 'ended before it was planned' with
    its items in 'processing'): the next `run` hands them back and runs them, where it
    said 'nothing to do'."""
    cfg, config, db = setup(tmp_path, scratch_db)
    run = committed_plan(db, config, pg_conn)
    run.plan.unlink()
    q(
        pg_conn,
        "UPDATE ecod_schema.ecod_jobs_run SET status = 'error', ended_at = now(),"
        " message = 'the run ended before it was planned' RETURNING run_id",
    )
    second = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to do" not in second.stdout
    assert statuses(pg_conn) == {"success": N}
