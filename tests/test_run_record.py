"""The run record and the one liveness rule that the lease, recovery, sync and cancel share."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from typing import Any

import pytest

from ecod_jobs import lease, run_record
from ecod_jobs.db import Database, create_batch, init_schema
from ecod_jobs.exceptions import RunConflictError
from ecod_jobs.items import ItemRow
from ecod_jobs.run_record import LEASE_SECONDS, is_alive
from ecod_jobs.states import Liveness, RunStatus

HERE = socket.gethostname()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("host", "pid", "age", "alive"),
    [
        (HERE, os.getpid(), 1.0, True),  # fresh heartbeat, process here
        (HERE, None, 1.0, False),  # no pid to check on its own host
        ("elsewhere", 1, 1.0, True),  # another host: the heartbeat is all there is
        ("elsewhere", 1, LEASE_SECONDS + 1, False),  # a stale lease may be taken over: dead
        (HERE, os.getpid(), LEASE_SECONDS + 1, False),  # stale even though its pid lives
        (HERE, os.getpid(), None, False),  # holds no lease
        ("elsewhere", 1, None, False),
    ],
)
def test_is_alive(host: str, pid: int | None, age: float | None, alive: bool) -> None:
    assert is_alive(host, pid, age) is alive


def test_a_dead_pid_on_this_host_is_dead_at_once() -> None:
    assert not is_alive(HERE, dead_pid(), 1.0)


@pytest.fixture
def db(db_config: dict[str, Any]) -> Database:
    database = Database(db_config)
    init_schema(database)
    create_batch(database, "b", [ItemRow("p1")])
    return database


def start(db: Database, pid: int | None = None) -> str:
    run_id = str(uuid.uuid4())
    run_record.start(
        db, run_id, 1, "echo", profile="local", config_hash="x", snakemake_version="9", ecod_jobs_version="0"
    )
    lease.acquire(db, 1, "echo", run_id, pid)
    return run_id


def test_liveness_follows_the_lease_and_the_record(db: Database, pg_conn: Any) -> None:
    run_id = start(db)
    assert run_record.liveness(db, run_id) is Liveness.ALIVE
    assert [r.run_id for r in run_record.open_runs(db, 1)] == [run_id]
    with pg_conn.cursor() as cur:  # its heartbeat went stale: the lease is up for grabs
        cur.execute(
            "UPDATE ecod_schema.ecod_jobs_lease SET heartbeat_at = now() - make_interval(secs => %s)",
            (LEASE_SECONDS + 5,),
        )
    assert run_record.liveness(db, run_id) is Liveness.DEAD
    run_record.close(db, run_id, RunStatus.SUCCESS, "done")
    assert run_record.liveness(db, run_id) is Liveness.ENDED
    assert run_record.open_runs(db, 1) == []


def test_the_lease_refuses_a_live_holder_and_takes_over_a_dead_one(db: Database) -> None:
    holder = start(db)
    with pytest.raises(RunConflictError, match=f"already being run by run {holder}"):
        lease.acquire(db, 1, "echo", str(uuid.uuid4()))
    # the same rule says the holder is dead once its process is gone on this host
    db.query("UPDATE ecod_schema.ecod_jobs_lease SET pid = %s RETURNING pid", (dead_pid(),))
    successor = str(uuid.uuid4())
    assert lease.acquire(db, 1, "echo", successor) == holder


def test_closing_a_settled_run_keeps_what_the_run_recorded(db: Database) -> None:
    run_id = start(db)
    run_record.close(db, run_id, RunStatus.ERROR, "1 failed")
    run_record.close_settled(db, run_id, RunStatus.INTERRUPTED, "interrupted: ...")
    (history,) = run_record.history(db, 1)
    assert (history["status"], history["message"]) == ("error", "1 failed")
    run_record.close_settled(db, run_id, RunStatus.CANCELLED, "cancelled with ecod-jobs cancel")
    (history,) = run_record.history(db, 1)
    assert (history["status"], history["message"]) == ("cancelled", "cancelled with ecod-jobs cancel")
