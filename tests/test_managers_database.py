"""DatabaseJobManager end to end against real PostgreSQL (local backend; SLURM where marked)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecod_jobs import DatabaseJobManager, LocalJobManager, SlurmJobManager
from ecod_jobs.db import Database, create_batch
from ecod_jobs.exceptions import DatabaseError, ValidationError
from ecod_jobs.items import ItemRow

SMALL = {"memory": "100M", "time": "00:05:00"}


def q(conn: Any, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def new_batch(config: dict[str, Any], n: int, name: str = "b") -> tuple[int, list[int]]:
    db = Database(config)
    batch_id = create_batch(db, name, [ItemRow(path=f"chain{i}.fa", protein_id=i) for i in range(n)])
    ids = [
        r[0]
        for r in db.query(
            "SELECT id FROM ecod_schema.process_status WHERE batch_id = %s ORDER BY id", (batch_id,)
        )
    ]
    return batch_id, ids


@pytest.fixture
def dbm(db_config: dict[str, Any], tmp_path: Path) -> Iterator[DatabaseJobManager]:
    config = {
        **db_config,
        "job_manager": {"type": "local", "state_dir": str(tmp_path / "state"), "max_workers": 2},
    }
    manager = DatabaseJobManager(config)
    assert isinstance(manager.job_manager, LocalJobManager)
    yield manager
    inner = manager.job_manager
    for job_id in list(inner._submitted):
        inner.cancel_job(job_id)
    inner.shutdown()


def poll_until_done(manager: DatabaseJobManager, batch_id: int, timeout: float = 60) -> tuple[int, int, int]:
    deadline = time.monotonic() + timeout
    while True:
        totals = manager.check_all_jobs(batch_id)
        if totals[2] == 0:
            return totals
        assert time.monotonic() < deadline, f"batch {batch_id} still running: {totals}"
        time.sleep(0.2)


def test_end_to_end_rows(dbm: DatabaseJobManager, pg_conn: Any, tmp_path: Path) -> None:
    batch_id, pids = new_batch(dbm.config, 7)
    other_batch, _ = new_batch(dbm.config, 2, "other")
    items = [(pid, f"chain{pid}.fa") for pid in pids]
    jobs = dbm.create_batch_jobs(
        items,
        3,
        {
            "name": "scan",
            "output_dir": str(tmp_path / "jobs"),
            # the item of the last chunk fails with exit status 4
            "command_template": lambda pid, path: (
                f"echo {pid} {path}" + ("; exit 4" if pid == pids[-1] else "")
            ),
            **SMALL,
        },
    )
    assert [len(j["items"]) for j in jobs] == [3, 3, 1]
    ids = [
        dbm.submit_job(
            j["script_path"], batch_id=batch_id, job_type="scan", process_ids=[p for p, _ in j["items"]]
        )
        for j in jobs
    ]
    # right after submission: rows written, items pending, processes processing
    rows = q(
        pg_conn,
        "SELECT slurm_job_id, batch_id, job_type, status, items_count FROM ecod_schema.job ORDER BY id",
    )
    assert rows == [(ids[0], batch_id, "scan", "submitted", 3), (ids[1], batch_id, "scan", "submitted", 3),
                    (ids[2], batch_id, "scan", "submitted", 1)]  # fmt: skip
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job_item WHERE status = 'pending'") == [(7,)]
    statuses = q(
        pg_conn, "SELECT DISTINCT status FROM ecod_schema.process_status WHERE batch_id = %s", (batch_id,)
    )
    assert statuses == [("processing",)]
    untouched = q(
        pg_conn, "SELECT DISTINCT status FROM ecod_schema.process_status WHERE batch_id = %s", (other_batch,)
    )
    assert untouched == [("pending",)]

    assert poll_until_done(dbm, batch_id) == (2, 1, 0)
    assert dbm.check_all_jobs(other_batch) == (0, 0, 0)
    jobs_rows = q(
        pg_conn,
        "SELECT slurm_job_id, status, scheduler_state, exit_code, completion_time IS NOT NULL, error_text,"
        " node IS NOT NULL, req_mem_mb, req_time_seconds FROM ecod_schema.job ORDER BY id",
    )
    assert jobs_rows[0] == (ids[0], "completed", "COMPLETED", 0, True, None, True, 100, 300)
    assert jobs_rows[2][:5] == (ids[2], "failed", "FAILED", 4, True)
    assert jobs_rows[2][5] == f"job {ids[2]} FAILED: exit status 4"
    items_rows = q(
        pg_conn,
        "SELECT ji.process_id, ji.status, ji.exit_code, ps.status, ps.error_message"
        " FROM ecod_schema.job_item ji JOIN ecod_schema.process_status ps ON ps.id = ji.process_id"
        " ORDER BY ji.id",
    )
    assert [r[:4] for r in items_rows[:6]] == [(p, "completed", 0, "success") for p in pids[:6]]
    assert items_rows[6] == (pids[6], "failed", 4, "error", f"job {ids[2]} FAILED: exit status 4")
    # idempotent: nothing left to poll, totals stay
    assert dbm.check_all_jobs(batch_id) == (2, 1, 0)
    assert dbm.check_all_jobs() == (2, 1, 0)
    output = dbm.get_job_output(ids[0], tmp_path / "jobs", "scan_0")
    assert output["stdout"] == "".join(f"{p} chain{p}.fa\n" for p in pids[:3])
    assert dbm.check_job_status(ids[2]) == "FAILED"


def test_running_totals_and_cancel_is_recorded(dbm: DatabaseJobManager, pg_conn: Any, tmp_path: Path) -> None:
    batch_id, pids = new_batch(dbm.config, 2)
    long = dbm.create_job_script(["sleep 300"], "long", tmp_path)
    short = dbm.create_job_script(["true"], "short", tmp_path)
    slow_id = dbm.submit_job(long, batch_id=batch_id, job_type="t", process_ids=[pids[0]])
    fast_id = dbm.submit_job(short, batch_id=batch_id, job_type="t", process_ids=[pids[1]])
    dbm.job_manager.wait(fast_id, timeout=10)
    assert dbm.check_all_jobs(batch_id) == (1, 0, 1)
    state = q(pg_conn, "SELECT scheduler_state FROM ecod_schema.job WHERE slurm_job_id = %s", (slow_id,))
    assert state == [("RUNNING",)]
    assert dbm.cancel_job(slow_id) is True
    row = q(
        pg_conn,
        "SELECT status, scheduler_state, error_text, completion_time IS NOT NULL FROM ecod_schema.job"
        " WHERE slurm_job_id = %s",
        (slow_id,),
    )
    assert row == [("failed", "CANCELLED", f"job {slow_id} CANCELLED: cancelled by user", True)]
    assert q(
        pg_conn, "SELECT status, error_message FROM ecod_schema.process_status WHERE id = %s", (pids[0],)
    ) == [("error", f"job {slow_id} CANCELLED: cancelled by user")]
    assert dbm.check_job_status(slow_id) == "CANCELLED"
    assert dbm.check_all_jobs(batch_id) == (1, 1, 0)


def test_database_failure_after_submission_cancels_the_job(
    db_config: dict[str, Any], pg_conn: Any, tmp_path: Path
) -> None:
    """The connection dies after the scheduler accepted the job: the job must not run untracked."""
    submitted: list[str] = []

    class DropsTheConnection(LocalJobManager):
        def submit_job(self, script_path: Any, batch_id: int | None = None) -> str:
            job_id = super().submit_job(script_path, batch_id)
            submitted.append(job_id)
            q(
                pg_conn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            return job_id

    inner = DropsTheConnection({**db_config, "job_manager": {"state_dir": str(tmp_path / "state")}})
    manager = DatabaseJobManager(db_config, job_manager=inner)
    batch_id, pids = new_batch(db_config, 3)
    marker = tmp_path / "ran"
    script = manager.create_job_script([f"sleep 2; touch {marker}"], "untracked", tmp_path)
    try:
        with pytest.raises(DatabaseError, match="so it was cancelled") as caught:
            manager.submit_job(script, batch_id=batch_id, job_type="t", process_ids=pids)
        assert caught.value.details == {"job_id": submitted[0], "cancelled": True}
        assert inner.check_job_status(submitted[0]) == "CANCELLED"
        # nothing was recorded: the transaction rolled back as a whole
        assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job") == [(0,)]
        assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job_item") == [(0,)]
        assert q(pg_conn, "SELECT DISTINCT status FROM ecod_schema.process_status") == [("pending",)]
        time.sleep(2.5)
        assert not marker.exists()
    finally:
        inner.shutdown()


def test_bad_references_submit_nothing(dbm: DatabaseJobManager, pg_conn: Any, tmp_path: Path) -> None:
    batch_id, pids = new_batch(dbm.config, 2)
    _, other_pids = new_batch(dbm.config, 1, "other")
    script = dbm.create_job_script(["true"], "x", tmp_path)
    with pytest.raises(ValidationError, match="batch 999 does not exist"):
        dbm.submit_job(script, batch_id=999, process_ids=pids)
    with pytest.raises(ValidationError, match="do not exist"):
        dbm.submit_job(script, batch_id=batch_id, process_ids=[*pids, 12345])
    with pytest.raises(ValidationError, match="another batch"):
        dbm.submit_job(script, batch_id=batch_id, process_ids=[*pids, *other_pids])
    with pytest.raises(ValidationError, match="job_type"):
        dbm.submit_job(script, batch_id=batch_id, job_type="x" * 51)
    assert dbm.job_manager._submitted == {}  # the scheduler never saw any of these
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job") == [(0,)]
    # no batch and no items is allowed (the seed's defaults)
    job_id = dbm.submit_job(script)
    assert q(pg_conn, "SELECT batch_id, job_type, items_count, slurm_job_id FROM ecod_schema.job") == [
        (None, "generic", 0, job_id)
    ]


def test_many_items_in_one_job_use_bulk_writes(dbm: DatabaseJobManager, pg_conn: Any, tmp_path: Path) -> None:
    batch_id, pids = new_batch(dbm.config, 5000)
    script = dbm.create_job_script(["true"], "bulk", tmp_path)
    started = time.monotonic()
    job_id = dbm.submit_job(script, batch_id=batch_id, job_type="bulk", process_ids=pids)
    assert time.monotonic() - started < 5
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job_item") == [(5000,)]
    dbm.job_manager.wait(job_id, timeout=10)
    assert poll_until_done(dbm, batch_id) == (1, 0, 0)
    assert q(pg_conn, "SELECT status, count(*) FROM ecod_schema.process_status GROUP BY status") == [
        ("success", 5000)
    ]


def test_config_path_and_keyword(
    db_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    body = {"database": {k: v for k, v in db_config["database"].items()}, "job_manager": {"type": "local"}}
    (tmp_path / "config" / "config.yml").write_text(yaml.safe_dump(body))
    for manager in (
        DatabaseJobManager("config/config.yml"),
        DatabaseJobManager(config_path="config/config.yml"),
    ):
        assert isinstance(manager.job_manager, LocalJobManager)
        assert manager.check_all_jobs() == (0, 0, 0)
        manager.job_manager.shutdown()


@pytest.mark.slurm
def test_slurm_backend_end_to_end(
    db_config: dict[str, Any], pg_conn: Any, tmp_path: Path, slurm_cluster: None
) -> None:
    manager = DatabaseJobManager({**db_config, "job_manager": {"type": "slurm"}})
    assert isinstance(manager.job_manager, SlurmJobManager)
    batch_id, pids = new_batch(db_config, 4)
    ok = manager.create_job_script(["echo ok"], "ok", tmp_path, **SMALL)
    bad = manager.create_job_script(["exit 9"], "bad", tmp_path, **SMALL)
    long = manager.create_job_script(["sleep 300"], "long", tmp_path, **SMALL)
    ok_id = manager.submit_job(ok, batch_id=batch_id, job_type="slurm_test", process_ids=pids[:2])
    bad_id = manager.submit_job(bad, batch_id=batch_id, job_type="slurm_test", process_ids=[pids[2]])
    long_id = manager.submit_job(long, batch_id=batch_id, job_type="slurm_test", process_ids=[pids[3]])
    assert q(pg_conn, "SELECT slurm_job_id FROM ecod_schema.job ORDER BY id") == [
        (ok_id,),
        (bad_id,),
        (long_id,),
    ]
    manager.job_manager.wait([ok_id, bad_id], timeout=120)
    deadline = time.monotonic() + 60
    while manager.check_all_jobs(batch_id) != (1, 1, 1):
        assert time.monotonic() < deadline, manager.check_all_jobs(batch_id)
        time.sleep(1)
    assert manager.cancel_job(long_id)
    assert manager.check_all_jobs(batch_id) == (1, 2, 0)
    rows = dict(
        (r[0], r[1:])
        for r in q(
            pg_conn, "SELECT slurm_job_id, status, scheduler_state, exit_code, node FROM ecod_schema.job"
        )
    )
    assert rows[ok_id][:3] == ("completed", "COMPLETED", 0) and rows[ok_id][3]  # node from sacct
    assert rows[bad_id][:3] == ("failed", "FAILED", 9)
    assert rows[long_id][:2] == ("failed", "CANCELLED")
    statuses = dict(q(pg_conn, "SELECT id, status FROM ecod_schema.process_status"))
    assert [statuses[p] for p in pids] == ["success", "success", "error", "error"]
    # squeue says COMPLETING while slurmd still kills the job's processes (KillWait)
    deadline = time.monotonic() + 60
    while (state := manager.check_job_status(long_id)) == "COMPLETING" and time.monotonic() < deadline:
        time.sleep(1)
    assert state == "CANCELLED"


def test_connection_refused_is_a_database_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatabaseError, match="cannot connect"):
        DatabaseJobManager({"database": {"host": "127.0.0.1", "port": 1, "connect_timeout": 2}})
    assert not (tmp_path / ".ecod_jobs").exists()  # no backend was started for nothing
