"""Two runs of one batch and job type: the second is refused; other batches run side by side."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from helpers import RAN, add_batch, assert_each_item_once, q, run_cli, setup_batch, start_cli

from ecod_jobs.launch import run_batch


def make_batch(tmp_path: Path, scratch_db: dict[str, Any], command: str, n: int) -> tuple[Path, int]:
    """A config of job type ``t`` (two items per chunk) and batch ``b`` of n items."""
    return setup_batch(
        tmp_path, scratch_db, batch_size=2, command=command, paths=items("b", n), job_type="t", name="b"
    )


def items(name: str, n: int) -> list[str]:
    return [f"{name}_{i}" for i in range(n)]


def test_second_run_of_same_batch_is_refused_naming_the_holder(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    cfg, batch = make_batch(tmp_path, scratch_db, "sleep 2 && " + RAN, 4)
    first = start_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not q(pg_conn, "SELECT 1 FROM ecod_schema.ecod_jobs_lease"):
        time.sleep(0.2)
    holder = q(pg_conn, "SELECT run_id, pid FROM ecod_schema.ecod_jobs_lease")[0]
    second = run_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path)
    assert second.returncode == 2
    message = second.stderr.strip()
    assert f"already being run by run {holder[0]} on host {socket.gethostname()} (pid" in message
    assert "since" in message and "Traceback" not in message
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    # no item was processed twice, and the lease is gone once the run ended
    assert_each_item_once(pg_conn, 4, ran=tmp_path / "t")
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job_item") == [(4,)], "one job_item per item"
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_lease") == [(0,)]


def test_dead_holder_on_another_host_is_taken_over(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, batch = make_batch(tmp_path, scratch_db, "true", 3)
    run_cli("--config", str(cfg), "db", "init")
    with pg_conn.cursor() as cur:  # a run on a head node that vanished 10 minutes ago
        cur.execute(
            "INSERT INTO ecod_schema.ecod_jobs_lease (batch_id, job_type, run_id, host, pid, heartbeat_at)"
            " VALUES (%s, 't', gen_random_uuid(), 'gone-host', 1, now() - interval '10 minutes')",
            (batch,),
        )
    result = run_batch(batch, config_path=cfg, cores=2)
    assert result.ok and result.by_status == {"success": 3}


def test_two_batches_run_side_by_side(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, first = make_batch(tmp_path, scratch_db, "sleep 1", 4)
    batches = [first, add_batch(cfg, tmp_path, "a", items("a", 4))]
    results: dict[int, Any] = {}
    threads = [
        threading.Thread(target=lambda b=b: results.__setitem__(b, run_batch(b, config_path=cfg, cores=1)))
        for b in batches
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[b].ok and results[b].by_status == {"success": 4} for b in batches)
    overlap = q(pg_conn, "SELECT max(started_at) < min(ended_at) FROM ecod_schema.ecod_jobs_run")
    assert overlap == [(True,)], "the two runs overlapped in time"


def test_heartbeat_notices_a_lost_lease(tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any) -> None:
    from ecod_jobs.config import from_mapping
    from ecod_jobs.db import Database, init_schema
    from ecod_jobs.lease import Heartbeat, acquire

    make_batch(tmp_path, scratch_db, "true", 1)
    db = Database(from_mapping({"database": scratch_db}))
    init_schema(db)
    run_a, run_b = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    acquire(db, 1, "t", run_a)
    stopped = threading.Event()
    beat = Heartbeat(db, run_a, interval=0.1, on_lost=stopped.set).start()
    try:
        time.sleep(0.3)
        assert not beat.lost
        # as if the database had been away past the lease and another run took over
        q(pg_conn, "UPDATE ecod_schema.ecod_jobs_lease SET run_id = %s RETURNING run_id", run_b)
        deadline = time.monotonic() + 5
        while not beat.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert beat.lost and stopped.is_set()  # the workflow's callback stops the run
    finally:
        beat.stop()
