"""One live run per batch and job type: a lease in PostgreSQL kept alive by a heartbeat.

A run takes the lease before it plans (``run_batch`` and the workflow's
``onstart``), renews it every ``HEARTBEAT_SECONDS`` from the main Snakemake
process, and drops it at the end. A second run is refused with the holder's
host, pid, run id and times. A holder that is not alive by the one liveness
rule (:func:`ecod_jobs.run_record.is_alive`: it stopped renewing for
``LEASE_SECONDS``, or its pid is gone on this very host) is dead: the next run
takes the lease over, without anyone editing the database, and settles the
dead run (see :func:`ecod_jobs.recovery.recover_dead_runs`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from psycopg2 import sql

from .db import Database
from .exceptions import RunConflictError
from .run_record import LEASE_SECONDS, is_alive

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30
RETRY_SECONDS = 5  # heartbeat retries while the database is away


def _what(key: str) -> str:
    return f"job type or stage {key}"


def holder(db: Database, batch_id: int, job_type: str) -> dict[str, Any] | None:
    rows = db.query(
        sql.SQL(
            "SELECT run_id, host, pid, acquired_at, heartbeat_at, extract(epoch FROM now() - heartbeat_at)"
            " FROM {} WHERE batch_id = %s AND job_type = %s"
        ).format(db.table("ecod_jobs_lease")),
        (batch_id, job_type),
    )
    if not rows:
        return None
    run_id, host, pid, acquired, beat, age = rows[0]
    return {
        "run_id": str(run_id),
        "host": host,
        "pid": pid,
        "acquired_at": acquired,
        "heartbeat_at": beat,
        "heartbeat_age": float(age),
    }


def acquire(db: Database, batch_id: int, job_type: str, run_id: str, pid: int | None = None) -> str | None:
    """Take the lease for ``run_id``; returns the dead holder's run id it replaced, if any.

    Raises :class:`RunConflictError` naming the holder when a live run has it.
    """
    pid = os.getpid() if pid is None else pid
    current = holder(db, batch_id, job_type)
    replaced = None
    if current and current["run_id"] != run_id:
        if is_alive(current["host"], current["pid"], current["heartbeat_age"]):
            raise RunConflictError(
                f"batch {batch_id} ({_what(job_type)}) is already being run by run {current['run_id']}"
                f" on host {current['host']} (pid {current['pid']})"
                f" since {current['acquired_at']:%Y-%m-%d %H:%M:%S};"
                f" last heartbeat {current['heartbeat_age']:.0f} s ago (the lease expires {LEASE_SECONDS} s"
                " after the last heartbeat)",
                {"holder": {k: str(v) for k, v in current.items()}},
            )
        replaced = current["run_id"]
    # One statement decides, so two runs racing for a free or dead lease cannot both win.
    rows = db.query(
        sql.SQL(
            "INSERT INTO {t} AS l (batch_id, job_type, run_id, host, pid) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (batch_id, job_type) DO UPDATE SET run_id = EXCLUDED.run_id, host = EXCLUDED.host,"
            " pid = EXCLUDED.pid, heartbeat_at = now(),"
            " acquired_at = CASE WHEN l.run_id = EXCLUDED.run_id THEN l.acquired_at ELSE now() END"
            " WHERE l.run_id = EXCLUDED.run_id OR l.run_id::text = %s"
            " OR l.heartbeat_at < now() - make_interval(secs => %s)"
            " RETURNING run_id"
        ).format(t=db.table("ecod_jobs_lease")),
        (batch_id, job_type, run_id, socket.gethostname(), pid, replaced or "", LEASE_SECONDS),
    )
    if not rows:  # lost a race: report whoever won
        return acquire(db, batch_id, job_type, run_id, pid)
    if replaced:
        log.warning("took over the lease of dead run %s for batch %d (%s)", replaced, batch_id, job_type)
    return replaced


def acquire_all(db: Database, batch_id: int, keys: list[str], run_id: str) -> list[str]:
    """Take the lease of every key (a pipeline run's stages) or none: a live run holding
    any of them is refused, naming the holder. Returns the dead holders replaced."""
    replaced: list[str] = []
    taken: list[str] = []
    try:
        for key in sorted(set(keys)):  # one order for everyone: two runs cannot deadlock
            if (dead := acquire(db, batch_id, key, run_id)) is not None:
                replaced.append(dead)
            taken.append(key)
    except RunConflictError:
        if taken:
            db.query(
                sql.SQL("DELETE FROM {} WHERE run_id = %s AND batch_id = %s AND job_type = ANY(%s)").format(
                    db.table("ecod_jobs_lease")
                ),
                (run_id, batch_id, taken),
            )
        raise
    return sorted(set(replaced))


def release(db: Database, run_id: str) -> None:
    db.query(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(db.table("ecod_jobs_lease")), (run_id,))


class Heartbeat:
    """Renews a run's lease from a daemon thread until stopped."""

    def __init__(
        self,
        db: Database,
        run_id: str,
        interval: float = HEARTBEAT_SECONDS,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.on_lost = on_lost
        self.run_id = run_id
        self.interval = interval
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name="ecod-jobs-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            try:
                rows = self.db.query(
                    sql.SQL("UPDATE {} SET heartbeat_at = now() WHERE run_id = %s RETURNING run_id").format(
                        self.db.table("ecod_jobs_lease")
                    ),
                    (self.run_id,),
                )
            except Exception as exc:  # the database may be away for a while: keep trying, often
                log.warning("lease heartbeat failed (retrying every %d s): %s", RETRY_SECONDS, exc)
                wait = RETRY_SECONDS  # beat as soon as it is back, before the lease looks expired
                continue
            wait = self.interval
            if not rows and not self.lost:
                self.lost = True
                log.error(
                    "run %s lost its lease (the database was away past %d s and another run took the"
                    " batch over); stop this run: the other one owns the batch now",
                    self.run_id,
                    LEASE_SECONDS,
                )
                if self.on_lost is not None:
                    self.on_lost()

    def stop(self) -> None:
        self._stop.set()
