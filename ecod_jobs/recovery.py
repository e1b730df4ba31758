"""Settling a run that will not end by itself: the one way, used by everyone.

A run is settled when it died (head node crash, SIGKILL, reboot, its lease
taken over), when ``ecod-jobs cancel`` stops it, and when ``ecod-jobs run`` was
told to stop and its Snakemake did not finish the record itself.
:func:`settle_run` does it, in this order: its SLURM jobs still queued or
running are cancelled and waited for (not adopted: Snakemake cannot re-attach
to them, and their chunks will be planned again), every process still holding
one of its chunk locks on this host is stopped, the chunks it finished are
recorded from their result files (so they are not rerun), the items it never
finished go back to ``pending``, and its record is closed. Who is dead is
decided by the one liveness rule, :func:`ecod_jobs.run_record.is_alive`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from . import run_record, slurm_commands
from .db import Database
from .exceptions import RunConflictError
from .layout import BatchLayout, RunLayout
from .lease import release
from .ownership import check_run, warn_foreign
from .plan_file import Plan
from .processes import stop_lock_holders
from .states import RunStatus
from .sync import finish_run, reconcile_run, release_unstarted_items

log = logging.getLogger(__name__)


def slurm_name_prefix(run_id: str) -> str:
    """The SLURM job-name prefix of a run's jobs (``--ecod-slurm-jobname-prefix``)."""
    return "ecod" + run_id.replace("-", "")[:24]


def live_slurm_jobs(db: Database, run: RunLayout) -> list[str]:
    """SLURM ids of a run's jobs that may still be queued or running: unfinished job rows,
    attempt files of unfinished chunks, and squeue entries with the run's name prefix
    (tasks still queued have written nothing anywhere yet)."""
    ids = {
        str(r[0])
        for r in db.query(
            sql.SQL(
                "SELECT slurm_job_id FROM {} WHERE run_id = %s AND status = 'submitted'"
                " AND slurm_job_id IS NOT NULL"
            ).format(db.table("job")),
            (run.run_id,),
        )
    }
    if check_run(db, run) is None:  # never another database's jobs
        for unit in run.planned_units():  # the run, or each stage window of a pipeline run
            for chunk in Plan.read(unit).chunk_ids():
                if not unit.result(chunk).exists():
                    ids.update(
                        m["slurm_job_id"] for m in unit.attempts(chunk).values() if m.get("slurm_job_id")
                    )
    # tasks still queued have written nothing yet: find them by their name
    ids.update(slurm_commands.jobs_named(slurm_name_prefix(run.run_id) + "_"))
    return sorted(ids)


def stop_chunk_processes(run: RunLayout, grace: float = 10, timeout: float = 30) -> int:
    """Make sure nothing of a dead run still works on its unfinished chunks.

    Every runner and item process holds its chunk's lock (see
    :func:`ecod_jobs.chunk_runner.hold_chunk_lock`). Holders on this host are sent
    SIGTERM, then SIGKILL after ``grace`` seconds; a lock still held after
    ``timeout`` (a process on another host) is an error, because resetting its
    items now would let them run twice. Returns the number of processes stopped.
    """
    unfinished = [
        unit.lock(c)
        for unit in run.planned_units()
        for c in Plan.read(unit).chunk_ids()
        if not unit.result(c).exists()
    ]
    if not unfinished:
        return 0
    stopped, held = stop_lock_holders(unfinished, grace, timeout)
    if held:
        raise RunConflictError(
            f"processes of dead run {run.run_id} still hold {', '.join(p.name for p in held)}"
            f" (not on this host, {socket.gethostname()}); their items would run twice."
            " Wait for them to end (or kill them), then run again"
        )
    return stopped


def cancel_slurm_jobs(db: Database, run: RunLayout) -> list[str]:
    """Cancel whatever SLURM still holds of ``run`` and wait until it is gone; returns the ids."""
    return slurm_commands.cancel_and_wait(live_slurm_jobs(db, run))


_DIED = "interrupted: its process died before the run ended"


def settle_run(
    db: Database,
    run: RunLayout,
    batch_id: int,
    *,
    status: RunStatus = RunStatus.INTERRUPTED,
    message: str = _DIED,
) -> dict[str, Any]:
    """Settle a run that is not alive (or was just stopped) and close it with ``status``.

    ``INTERRUPTED`` (it died) hands the items it never finished back to ``pending``;
    ``CANCELLED`` records them failed, as a run that ended would. Returns what
    :func:`~ecod_jobs.sync.reconcile_run` reports, with the SLURM jobs it cancelled
    (``scancelled``) and whether the run had recorded its own end (``ended``).
    """
    scancelled: list[str] = []
    summary: dict[str, Any] = {"chunks": 0, "settled": 0}
    ended = None
    if (reason := check_run(db, run)) is not None:
        # The directory at its path holds another database's run: read, stop and cancel
        # nothing of it. Our run's jobs are still found by row and name.
        warn_foreign(run, reason)
        if (stray := live_slurm_jobs(db, run)) and slurm_commands.available("scancel"):
            slurm_commands.scancel(stray)
            scancelled = stray
        release_unstarted_items(db, run.run_id)
    elif (ended := run.read_ended()) is not None:
        # It ended, but the database did not hear of it (away, or the head was killed
        # between ended.json and its record): finish the record as the run would have.
        scancelled = cancel_slurm_jobs(db, run)
        summary = finish_run(db, run, batch_id, bool(ended.get("success")))
    else:
        if scancelled := cancel_slurm_jobs(db, run):
            log.warning("cancelled %d SLURM jobs left by run %s", len(scancelled), run.run_id)
        # read the files only once nothing can write them any more
        if stopped := stop_chunk_processes(run):
            log.warning("stopped %d processes left by run %s", stopped, run.run_id)
        if run.plan.exists() or run.is_pipeline:
            summary = reconcile_run(db, run, run_over=True, interrupted=status is RunStatus.INTERRUPTED)
        else:  # died between committing its plan and keeping plan.json
            release_unstarted_items(db, run.run_id)
    run_record.close_settled(db, run.run_id, status, message)
    release(db, run.run_id)  # a no-op when another run has taken its lease over
    return {**summary, "scancelled": scancelled, "ended": ended is not None}


def recover_dead_runs(
    db: Database, config: Mapping[str, Any], batch_id: int, job_type: str | None, current_run_id: str | None
) -> list[str]:
    """Settle every dead run of this batch (never ``current_run_id``), of any job type or
    pipeline: a pipeline's stages may overlap another run's; ``job_type`` is kept for
    callers. Returns their run ids. Then hands back items that ended runs left in
    'processing'."""
    recovered = []
    for found in run_record.open_runs(db, batch_id):
        if found.run_id == current_run_id or found.alive:
            continue
        layout = BatchLayout.create(config["pipeline"]["work_root"], batch_id, found.job_type)
        settle_run(db, layout.run(found.run_id), batch_id)
        recovered.append(found.run_id)
    if stranded := release_stranded_items(db, batch_id):
        log.warning(
            "batch %d: %d items left in 'processing' by ended runs are pending again", batch_id, stranded
        )
    return recovered


def release_stranded_items(db: Database, batch_id: int) -> int:
    """Items in 'processing' that no run can finish any more go back to 'pending'.

    Such an item was planned by a run of ecod-jobs (a job row with a run id) that
    has ended, and nothing else holds it: no job item of a run still 'running'
    (of any job type), and none of a job submitted through the Python job managers
    (no run id), which their own ``check_all_jobs`` settles. Older versions left
    items so when a plan failed after its commit.
    """
    rows = db.query(
        sql.SQL(
            "UPDATE {ps} ps SET status = 'pending', updated_at = now(),"
            " error_message = 'interrupted: its run ended without settling it'"
            " WHERE ps.batch_id = %(batch)s AND ps.status = 'processing'"
            " AND EXISTS (SELECT 1 FROM {ji} ji JOIN {job} j ON j.id = ji.job_id"
            "   WHERE ji.process_id = ps.id AND j.run_id IS NOT NULL)"
            " AND NOT EXISTS (SELECT 1 FROM {ji} ji JOIN {job} j ON j.id = ji.job_id"
            "   LEFT JOIN {run} r ON r.run_id = j.run_id WHERE ji.process_id = ps.id"
            "   AND (r.status = 'running' OR (j.run_id IS NULL AND j.status = 'submitted')))"
            " RETURNING ps.id"
        ).format(
            ps=db.table("process_status"),
            ji=db.table("job_item"),
            job=db.table("job"),
            run=db.table("ecod_jobs_run"),
        ),
        {"batch": batch_id},
    )
    return len(rows)
