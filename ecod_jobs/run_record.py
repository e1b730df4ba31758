"""The run record: one ``ecod_jobs_run`` row per workflow run, and the one liveness rule.

Every statement on ``ecod_jobs_run`` is here. A run's row is written when its
Snakemake starts (``onstart``), given its size by the plan (in the plan's own
transaction), and closed with a final :class:`~ecod_jobs.states.RunStatus`:
by the run itself (``onsuccess``/``onerror``), by whoever settles it once it
died (:func:`ecod_jobs.recovery.settle_run`), or by ``ecod-jobs cancel``.

**Is a run alive?** One rule, :func:`is_alive`, asked by the lease (may a new
run take the batch over?), recovery and sync (settle it?) and cancel (signal
it, or leave it to its own host?). A run is alive while its lease's heartbeat
is fresh (renewed within ``LEASE_SECONDS``) and, when it runs on this host, its
process still exists. So a run is dead as soon as another run may take its
lease: whoever takes the lease settles the run it replaced. A pid can only be
checked on its own host; elsewhere the heartbeat is all there is. The
dashboard, which may run on any host, shows "live" by the heartbeat alone.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql

from .db import Database
from .processes import pid_alive
from .states import Liveness, RunStatus

LEASE_SECONDS = 120  # a lease whose heartbeat is older than this may be taken over


def is_alive(host: str | None, pid: int | None, heartbeat_age: float | None) -> bool:
    """The one liveness rule (see the module docstring). ``heartbeat_age``: seconds since
    the run's lease was renewed, None when it holds no lease."""
    if heartbeat_age is None or heartbeat_age > LEASE_SECONDS:
        return False
    if host == socket.gethostname():
        return bool(pid) and pid_alive(int(pid))  # type: ignore[arg-type]
    return True


@dataclass(frozen=True)
class OpenRun:
    """A run recorded as running, with what the liveness rule needs."""

    run_id: str
    batch_id: int
    job_type: str
    host: str | None
    pid: int | None
    heartbeat_age: float | None  # None: it holds no lease

    @property
    def alive(self) -> bool:
        return is_alive(self.host, self.pid, self.heartbeat_age)

    def describe(self) -> str:
        return f"{self.run_id} on {self.host} (pid {self.pid})"


_OPEN_RUNS = (
    "SELECT r.run_id::text, r.batch_id, r.job_type, r.host, r.pid,"
    " extract(epoch FROM now() - l.heartbeat_at)"
    " FROM {run} r LEFT JOIN {lease} l ON l.run_id = r.run_id WHERE r.status = 'running'"
)


def _open_runs(db: Database, where: str, params: tuple[Any, ...]) -> list[OpenRun]:
    rows = db.query(
        sql.SQL(_OPEN_RUNS + where + " ORDER BY r.started_at").format(
            run=db.table("ecod_jobs_run"), lease=db.table("ecod_jobs_lease")
        ),
        params,
    )
    return [
        OpenRun(str(r), int(b), str(t), h, None if p is None else int(p), None if a is None else float(a))
        for r, b, t, h, p, a in rows
    ]


def open_runs(db: Database, batch_id: int, job_type: str | None = None) -> list[OpenRun]:
    """The batch's runs recorded as running (of one job type, or all), oldest first."""
    if job_type is None:
        return _open_runs(db, " AND r.batch_id = %s", (batch_id,))
    return _open_runs(db, " AND r.batch_id = %s AND r.job_type = %s", (batch_id, job_type))


def liveness(db: Database, run_id: str) -> Liveness:
    """ALIVE, DEAD (recorded as running, its process gone) or ENDED."""
    found = _open_runs(db, " AND r.run_id = %s", (run_id,))
    if not found:
        return Liveness.ENDED
    return Liveness.ALIVE if found[0].alive else Liveness.DEAD


# --------------------------------------------------------------------------- writing


def start(
    db: Database,
    run_id: str,
    batch_id: int,
    job_type: str,
    *,
    profile: str | None,
    config_hash: str,
    snakemake_version: str,
    ecod_jobs_version: str,
) -> None:
    """Record this process's run as running (again, if Snakemake restarted it)."""
    db.query(
        sql.SQL(
            "INSERT INTO {} (run_id, batch_id, job_type, profile, host, username, pid, config_hash,"
            " snakemake_version, ecod_jobs_version, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s) ON CONFLICT (run_id) DO UPDATE SET pid = EXCLUDED.pid, status = EXCLUDED.status,"
            " ended_at = NULL"
        ).format(db.table("ecod_jobs_run")),
        (
            run_id,
            batch_id,
            job_type,
            profile,
            socket.gethostname(),
            getpass.getuser(),
            os.getpid(),
            config_hash,
            snakemake_version,
            ecod_jobs_version,
            RunStatus.RUNNING.value,
        ),
    )


def has_run(db: Database, run_id: str) -> bool:
    """Whether the run has started (its Snakemake recorded it)."""
    return bool(
        db.query(sql.SQL("SELECT 1 FROM {} WHERE run_id = %s").format(db.table("ecod_jobs_run")), (run_id,))
    )


def record_planned(cur: Any, db: Database, run_id: str, items: int, chunks: int) -> None:
    """The run's planned size, on the plan's own cursor (its transaction)."""
    cur.execute(
        sql.SQL("UPDATE {} SET planned_items = %s, planned_chunks = %s WHERE run_id = %s").format(
            db.table("ecod_jobs_run")
        ),
        (items, chunks, run_id),
    )


def add_planned_chunks(cur: Any, db: Database, run_id: str, chunks: int) -> None:
    """A pipeline stage planned more chunks of the run (its windows are planned as they come)."""
    cur.execute(
        sql.SQL("UPDATE {} SET planned_chunks = coalesce(planned_chunks, 0) + %s WHERE run_id = %s").format(
            db.table("ecod_jobs_run")
        ),
        (chunks, run_id),
    )


def close(db: Database, run_id: str, status: RunStatus, message: str | None = None) -> None:
    """The run's final status, message and end time, as its own end records them."""
    db.query(
        sql.SQL("UPDATE {} SET status = %s, message = %s, ended_at = now() WHERE run_id = %s").format(
            db.table("ecod_jobs_run")
        ),
        (status.value, message, run_id),
    )


def close_settled(db: Database, run_id: str, status: RunStatus, message: str) -> None:
    """Close a run that someone else settled (it died, or was cancelled). Keeps an end time
    the run recorded itself; ``INTERRUPTED`` keeps its own message too and never replaces
    a status the run wrote before it died."""
    if status is RunStatus.INTERRUPTED:
        query = (
            "UPDATE {} SET status = %s, ended_at = coalesce(ended_at, now()),"
            " message = coalesce(message, %s) WHERE run_id = %s AND status = 'running'"
        )
    else:
        query = (
            "UPDATE {} SET status = %s, ended_at = coalesce(ended_at, now()), message = %s WHERE run_id = %s"
        )
    db.query(sql.SQL(query).format(db.table("ecod_jobs_run")), (status.value, message, run_id))


# --------------------------------------------------------------------------- reading


def owner(db: Database, run_id: str) -> tuple[int, str] | None:
    """The (batch id, job type) a run id was recorded for in this database, if any."""
    rows = db.query(
        sql.SQL("SELECT batch_id, job_type FROM {} WHERE run_id = %s").format(db.table("ecod_jobs_run")),
        (run_id,),
    )
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def run_ids(db: Database, batch_id: int, job_type: str) -> set[str]:
    """Every run id this database recorded for the batch and job type."""
    rows = db.query(
        sql.SQL("SELECT run_id::text FROM {} WHERE batch_id = %s AND job_type = %s").format(
            db.table("ecod_jobs_run")
        ),
        (batch_id, job_type),
    )
    return {str(r[0]) for r in rows}


HISTORY_FIELDS = (
    "run_id",
    "job_type",
    "profile",
    "host",
    "username",
    "pid",
    "config_hash",
    "snakemake_version",
    "ecod_jobs_version",
    "planned_items",
    "planned_chunks",
    "status",
    "message",
    "started_at",
    "ended_at",
    "live",
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def history(db: Database, batch_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The batch's runs, newest first, with their provenance (:data:`HISTORY_FIELDS`);
    ``live`` is the heartbeat half of the liveness rule (any host can read it)."""
    rows = db.query(
        sql.SQL(
            "SELECT r.run_id, r.job_type, r.profile, r.host, r.username, r.pid, r.config_hash,"
            " r.snakemake_version, r.ecod_jobs_version, r.planned_items, r.planned_chunks, r.status,"
            " r.message, r.started_at, r.ended_at,"
            " coalesce(l.heartbeat_at > now() - make_interval(secs => %s), false) AS live"
            " FROM {} r LEFT JOIN {} l ON l.run_id = r.run_id"
            " WHERE r.batch_id = %s ORDER BY r.started_at DESC LIMIT %s"
        ).format(db.table("ecod_jobs_run"), db.table("ecod_jobs_lease")),
        (LEASE_SECONDS, batch_id, limit),
    )
    out = []
    for row in rows:
        run = dict(zip(HISTORY_FIELDS, row, strict=True))
        run["run_id"] = str(run["run_id"])
        run["started_at"], run["ended_at"] = _iso(run["started_at"]), _iso(run["ended_at"])
        run["live"] = bool(run["live"])
        out.append(run)
    return out
