"""A work root shared between databases: each reads only the runs it made.

Batch ids are per database, so two databases (or one restored from an old backup)
can both have a batch 1 whose runs land in the same ``batch_1/`` directory. `run`,
`sync`, `cancel` and the recovery of dead runs must never import, stop or cancel
what another database's runs did there.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_each_item_once, connect_scratch, q, run_cli, setup_batch, start_cli, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def second_db(pg_admin_params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from ecod_jobs.db.scratch import scratch_database

    with scratch_database(pg_admin_params, "ecodtest") as section:
        yield section


def configure(tmp_path: Path, name: str, database: dict[str, Any], command: str, paths: list[str]) -> Path:
    """A config ``{name}.yml`` of ``database`` whose work root is the one every database of
    the test shares, and its batch 1 of ``paths`` (job type ``slow``, two items per chunk)."""
    cfg, batch = setup_batch(
        tmp_path,
        database,
        batch_size=2,
        command=command,
        paths=paths,
        job_type="slow",
        name=name,
        config_name=f"{name}.yml",
    )
    assert batch == 1
    return cfg


def counts(conn: Any) -> dict[str, Any]:
    """What a database holds: items by status, job and job_item rows, runs by status."""
    return {
        "items": dict(q(conn, "SELECT status, count(*) FROM ecod_schema.process_status GROUP BY 1")),
        "jobs": q(conn, "SELECT count(*) FROM ecod_schema.job")[0][0],
        "job_items": q(conn, "SELECT count(*) FROM ecod_schema.job_item")[0][0],
        "runs": sorted(q(conn, "SELECT run_id::text, status FROM ecod_schema.ecod_jobs_run")),
    }


def run_dir(tmp_path: Path, run_id: str) -> Path:
    return tmp_path / "work" / "batch_1" / "slow" / "runs" / run_id


def lock_held(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def start_and_kill(cfg: Path, tmp_path: Path, conn: Any) -> str:
    """Start a run and SIGKILL its head once both chunks run: a dead run whose chunk
    processes live on (they sleep until the test says otherwise)."""
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    known = {r[0] for r in q(conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run")}

    def new_run() -> tuple[str, int] | None:
        rows = q(conn, "SELECT run_id::text, pid FROM ecod_schema.ecod_jobs_run WHERE status = 'running'")
        rows = [r for r in rows if r[0] not in known]
        return rows[0] if rows else None

    run_id, pid = wait_for(new_run, what="the run row")
    results = run_dir(tmp_path, run_id) / "results"
    logs = run_dir(tmp_path, run_id) / "logs"
    # both chunks' first items sleeping (not just their runners started: an item that only
    # starts after the test has made `fast` would finish, and its chunk with it)
    wait_for(
        lambda: all(
            (results / f"c0000{i}.lock").exists()
            and lock_held(results / f"c0000{i}.lock")
            and (logs / f"c0000{i}.log").exists()
            and "sleeping" in (logs / f"c0000{i}.log").read_text()
            for i in (0, 1)
        ),
        what="both chunks' items sleeping",
    )
    os.kill(first.pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    first.wait()
    return run_id


def test_two_databases_sharing_a_work_root_never_see_each_others_runs(
    tmp_path: Path, scratch_db: dict[str, Any], second_db: dict[str, Any], pg_conn: Any
) -> None:
    fast = tmp_path / "fast"  # until it exists, every item sleeps: runs can be killed mid-way
    # long enough to outlive a slow machine: recovery, not the clock, ends these sleeps;
    # "sleeping" in the chunk's log tells start_and_kill the item took that branch
    command = f"test -e {fast} || {{{{ echo sleeping; sleep 600; }}}}"
    # the same batch id in both databases, with different items (4 against 3): any
    # import of the other's results shows in the counts, or fails on a foreign key
    cfg_a = configure(tmp_path, "a", scratch_db, command, [f"a{i}" for i in range(1, 5)])
    cfg_b = configure(tmp_path, "b", second_db, command, [f"b{i}" for i in range(1, 4)])
    conn_a, conn_b = pg_conn, connect_scratch(second_db)
    try:
        # A's run dies mid-way; B has never run: its batch directory holds only A's run
        run_a = start_and_kill(cfg_a, tmp_path, conn_a)
        before_a = counts(conn_a)
        for command_b in (("sync", "--batch", "1"), ("cancel", "--batch", "1")):
            done = run_cli("--config", str(cfg_b), *command_b, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert (
                f"ignoring run directory {run_dir(tmp_path, run_a)}: run id {run_a} is unknown" in done.stderr
            )
            assert "0/3 items done" in done.stdout, done.stdout
            assert counts(conn_b) == {"items": {"pending": 3}, "jobs": 0, "job_items": 0, "runs": []}
        assert counts(conn_a) == before_a, "B's sync and cancel left A's dead run alone"
        assert lock_held(run_dir(tmp_path, run_a) / "results" / "c00000.lock"), "A's processes live on"

        # B's run dies too; then A recovers its dead run and finishes, leaving B's alone
        run_b = start_and_kill(cfg_b, tmp_path, conn_b)
        before_b = counts(conn_b)
        fast.touch()
        done = run_cli("--config", str(cfg_a), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert counts(conn_b) == before_b, "A's recovery and run left B's dead run alone"
        assert lock_held(run_dir(tmp_path, run_b) / "results" / "c00000.lock"), "B's processes live on"
        done = run_cli("--config", str(cfg_b), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr

        # each database: its own items done, one job row per chunk of its two runs,
        # one job_item row per item and run, and only its own runs in the job rows
        after = {"a": counts(conn_a), "b": counts(conn_b)}
        for name, conn, n in (("a", conn_a, 4), ("b", conn_b, 3)):
            assert after[name]["items"] == {"success": n}, after
            assert_each_item_once(conn, n)
            assert after[name]["jobs"] == 4 and after[name]["job_items"] == 2 * n, after
            assert [s for _r, s in after[name]["runs"]] in (
                ["interrupted", "success"],
                ["success", "interrupted"],
            )
            own = {r for r, _s in after[name]["runs"]}
            assert {r[0] for r in q(conn, "SELECT DISTINCT run_id::text FROM ecod_schema.job")} == own
        assert run_a in {r for r, _ in after["a"]["runs"]} and run_b in {r for r, _ in after["b"]["runs"]}

        # sync and cancel on each, with the other's two runs beside its own: nothing changes
        for cfg, other, n in ((cfg_a, after["b"], 4), (cfg_b, after["a"], 3)):
            for command_x in (("sync", "--batch", "1"), ("cancel", "--batch", "1")):
                done = run_cli("--config", str(cfg), *command_x, cwd=tmp_path)
                assert done.returncode == 0, done.stderr
                assert f"{n}/{n} items done" in done.stdout, done.stdout
                for foreign, _status in other["runs"]:
                    assert (
                        f"ignoring run directory {run_dir(tmp_path, foreign)}: run id {foreign}"
                        in done.stderr
                    )
        assert {"a": counts(conn_a), "b": counts(conn_b)} == after
    finally:
        conn_b.close()


def test_run_files_are_checked_against_the_database_identity(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """A known run id whose plan.json names another database is not read (by sync, nor by
    the recovery that hands its items back); a plan from before identities is still read."""
    cfg = configure(tmp_path, "a", scratch_db, "true", ["a1", "a2", "a3"])
    done = run_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_id,) = q(pg_conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run")[0]
    plan_path = run_dir(tmp_path, run_id) / "plan.json"
    plan = json.loads(plan_path.read_text())
    ours = q(pg_conn, "SELECT database_id::text FROM ecod_schema.ecod_jobs_database")[0][0]
    assert plan["database_id"] == ours
    synced = counts(pg_conn)
    assert synced["items"] == {"success": 3} and synced["jobs"] == 2 and synced["job_items"] == 3

    def forget_results() -> None:
        """The run's job rows deleted, its items back in processing, as after a lost record."""
        q(pg_conn, "DELETE FROM ecod_schema.job_item RETURNING id")
        q(pg_conn, "DELETE FROM ecod_schema.job RETURNING id")
        q(pg_conn, "UPDATE ecod_schema.process_status SET status = 'processing' RETURNING id")

    # a plan written before schema version 7 (no database_id) is still this database's
    del plan["database_id"]
    plan_path.write_text(json.dumps(plan))
    forget_results()
    done = run_cli("--config", str(cfg), "sync", "--batch", "1", cwd=tmp_path)
    assert done.returncode == 0 and "ignoring" not in done.stderr, done.stderr
    assert counts(pg_conn) == synced

    # the same run id, but the plan names another database: not read
    other = str(uuid.uuid4())
    plan_path.write_text(json.dumps({**plan, "database_id": other}))
    forget_results()
    done = run_cli("--config", str(cfg), "sync", "--batch", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        f"ignoring run directory {run_dir(tmp_path, run_id)}: its plan.json was written by another"
        f" database ({other}); this database is {ours}"
    ) in done.stderr
    assert counts(pg_conn)["jobs"] == 0 and counts(pg_conn)["items"] == {"processing": 3}

    # that run, dead as far as this database knows: recovery reads none of its files,
    # hands its items back from the database's own rows, and the next run does them
    q(
        pg_conn,
        "INSERT INTO ecod_schema.job (batch_id, job_type, run_id, chunk_id) VALUES (1, 'slow', %s, 'c00000')"
        " RETURNING id",
        run_id,
    )
    q(
        pg_conn,
        "INSERT INTO ecod_schema.job_item (job_id, process_id) SELECT j.id, ps.id FROM ecod_schema.job j,"
        " ecod_schema.process_status ps RETURNING id",
    )
    gone = subprocess.Popen(["true"])
    gone.wait()
    q(
        pg_conn,
        "UPDATE ecod_schema.ecod_jobs_run SET status = 'running', ended_at = NULL, pid = %s RETURNING 1",
        gone.pid,
    )
    done = run_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"ignoring run directory {run_dir(tmp_path, run_id)}: its plan.json was written by another"
        in done.stderr
    )
    runs = dict(q(pg_conn, "SELECT run_id::text, status FROM ecod_schema.ecod_jobs_run"))
    assert runs.pop(run_id) == "interrupted" and list(runs.values()) == ["success"]
    assert counts(pg_conn)["items"] == {"success": 3}
