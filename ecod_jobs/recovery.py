"""Recovering from a run that died (head node crash, SIGKILL, reboot).

When a new run takes the lease over from a dead one, it first settles the
dead run: its SLURM jobs still queued or running are cancelled (not adopted:
Snakemake cannot re-attach to them, and their chunks will be planned again),
every process still holding one of its chunk locks on this host is stopped,
the chunks it finished are recorded from their result files (so they are not
rerun), and the items it never finished go back to ``pending``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psycopg2 import sql

from .db import Database
from .exceptions import RunConflictError
from .layout import BatchLayout, RunLayout
from .ownership import check_run, warn_foreign
from .sync import close_dead_run, finish_run, reconcile_run, release_unstarted_items, run_state

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
    if run.plan.exists() and check_run(db, run) is None:  # never another database's jobs
        for chunk in run.read_plan()["chunks"]:
            if not run.result(chunk["chunk_id"]).exists():
                ids.update(
                    m["slurm_job_id"]
                    for m in run.attempts(chunk["chunk_id"]).values()
                    if m.get("slurm_job_id")
                )
    if shutil.which("squeue"):  # tasks still queued have written nothing yet: find them by name
        prefix = slurm_name_prefix(run.run_id) + "_"
        out = subprocess.run(
            ["squeue", "--me", "-h", "-o", "%i|%j"], capture_output=True, text=True, check=False
        ).stdout
        # pending array tasks are listed as one entry, "123_[4-9%2]", which scancel does not
        # take: cancel the array (all of its tasks are this run's)
        ids.update(
            i.split("_")[0] if "[" in i else i
            for i, _, name in (line.partition("|") for line in out.splitlines())
            if name.startswith(prefix)
        )
    return sorted(ids)


def _lock_free(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # no locking on this filesystem: nothing can be holding it either
        return True
    finally:
        os.close(fd)  # closing drops our lock again


def _local_holders(path: Path) -> list[int]:
    """Processes on this host with the lock file open (runner and item processes)."""
    target = os.path.realpath(path)
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    holders.append(int(proc.name))
                    break
            except OSError:
                continue
    return holders


def stop_chunk_processes(run: RunLayout, grace: float = 10, timeout: float = 30) -> int:
    """Make sure nothing of a dead run still works on its unfinished chunks.

    Every runner and item process holds its chunk's lock (see
    :func:`ecod_jobs.chunk_runner.hold_chunk_lock`). Holders on this host are sent
    SIGTERM, then SIGKILL after ``grace`` seconds; a lock still held after
    ``timeout`` (a process on another host) is an error, because resetting its
    items now would let them run twice. Returns the number of processes stopped.
    """
    if not run.plan.exists():
        return 0
    held = [
        run.lock(c["chunk_id"])
        for c in run.read_plan()["chunks"]
        if not run.result(c["chunk_id"]).exists() and not _lock_free(run.lock(c["chunk_id"]))
    ]
    stopped: set[int] = set()
    start = time.monotonic()
    for sig, until in ((signal.SIGTERM, grace), (signal.SIGKILL, timeout)):
        for path in held:
            for pid in _local_holders(path):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
                    stopped.add(pid)
        while held and time.monotonic() - start < until:
            held = [p for p in held if not _lock_free(p)]
            if held:
                time.sleep(0.2)
    if held:
        raise RunConflictError(
            f"processes of dead run {run.run_id} still hold {', '.join(p.name for p in held)}"
            f" (not on this host, {socket.gethostname()}); their items would run twice."
            " Wait for them to end (or kill them), then run again"
        )
    return len(stopped)


def wait_gone(job_ids: list[str], timeout: float = 120) -> None:
    """Wait until squeue lists none of the jobs as pending or running (scancel is asynchronous)."""
    bases = {j.split("_")[0] for j in job_ids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "--me", "-h", "-t", "PD,R,CG,CF,S", "-o", "%i"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if not any(line.split("_")[0] in bases for line in out.split()):
            return
        time.sleep(1)
    log.warning("cancelled jobs %s still listed by squeue after %.0f s", job_ids, timeout)


def recover_dead_runs(
    db: Database, config: Mapping[str, Any], batch_id: int, job_type: str, current_run_id: str
) -> list[str]:
    """Settle every dead run of this batch and job type; returns their run ids."""
    from . import slurm_commands

    rows = db.query(
        sql.SQL(
            "SELECT run_id FROM {} WHERE batch_id = %s AND job_type = %s AND status = 'running'"
            " AND run_id <> %s"
        ).format(db.table("ecod_jobs_run")),
        (batch_id, job_type, current_run_id),
    )
    recovered = []
    layout = BatchLayout.create(config["pipeline"]["work_root"], batch_id, job_type)
    for (run_uuid,) in rows:
        run_id = str(run_uuid)
        if run_state(db, run_id) == "alive":
            continue
        run = layout.run(run_id)
        if (reason := check_run(db, run)) is not None:
            # The directory at its path holds another database's run: read, stop and
            # cancel nothing of it. Our run's jobs are still found by row and name.
            warn_foreign(run, reason)
            if (stray := live_slurm_jobs(db, run)) and slurm_commands.available("scancel"):
                slurm_commands.scancel(stray)
            release_unstarted_items(db, run_id)
            close_dead_run(db, run_id)
            recovered.append(run_id)
            continue
        ended = run.read_ended()
        if ended is not None:  # it ended while the database was away: finish its record
            finish_run(db, run, batch_id, bool(ended.get("success")))
            recovered.append(run_id)
            continue
        stray = live_slurm_jobs(db, run)
        if stray and slurm_commands.available("scancel"):
            log.warning("cancelling %d SLURM jobs left by dead run %s", len(stray), run_id)
            slurm_commands.scancel(stray)
            wait_gone(stray)
        # read the files only once nothing can write them any more
        if stopped := stop_chunk_processes(run):
            log.warning("stopped %d processes left by dead run %s", stopped, run_id)
        if run.plan.exists():
            reconcile_run(db, run, run_over=True, interrupted=True)
        else:  # died between committing its plan and keeping plan.json
            release_unstarted_items(db, run_id)
        close_dead_run(db, run_id)
        recovered.append(run_id)
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
