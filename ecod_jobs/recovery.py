"""Recovering from a run that died (head node crash, SIGKILL, reboot).

When a new run takes the lease over from a dead one, it first settles the
dead run: its SLURM jobs still queued or running are cancelled (not adopted:
Snakemake cannot re-attach to them, and their chunks will be planned again),
the chunks it finished are recorded from their result files (so they are not
rerun), and the items it never finished go back to ``pending``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psycopg2 import sql

from .db import Database
from .layout import BatchLayout, RunLayout
from .sync import close_dead_run, reconcile_run, run_state

log = logging.getLogger(__name__)


def slurm_name_prefix(run_id: str) -> str:
    """The SLURM job-name prefix of a run's jobs (``--slurm-jobname-prefix``)."""
    return "ecod" + run_id.replace("-", "")[:24]


def _live_slurm_jobs(db: Database, run: RunLayout) -> list[str]:
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
    if run.plan.exists():
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
        ids.update(
            i for i, _, name in (line.partition("|") for line in out.splitlines()) if name.startswith(prefix)
        )
    return sorted(ids)


def _stop_local_runners(run: RunLayout) -> int:
    """Stop chunk runners a dead run left on this host (local profile): they would race the next run."""
    import os
    import signal
    import socket
    import time

    stopped = 0
    if not run.plan.exists():
        return 0
    for chunk in run.read_plan()["chunks"]:
        cid = chunk["chunk_id"]
        if run.result(cid).exists():
            continue
        for meta in run.attempts(cid).values():
            pid = meta.get("pid")
            if not pid or meta.get("slurm_job_id") or meta.get("node") != socket.gethostname():
                continue
            try:  # the pid must still be this run's runner, not a reused pid
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "ecod_jobs.runner" not in cmdline or run.run_id not in cmdline or cid not in cmdline:
                continue
            os.kill(int(pid), signal.SIGTERM)  # its handler takes the running item down with it
            for _ in range(50):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.1)
            stopped += 1
    return stopped


def _wait_gone(job_ids: list[str], timeout: float = 120) -> None:
    """Wait until squeue lists none of the jobs as pending or running (scancel is asynchronous)."""
    import time

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
    from . import slurm_cli

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
        if _stop_local_runners(run):
            log.warning("stopped local chunk runners left by dead run %s", run_id)
        stray = _live_slurm_jobs(db, run)
        if stray and slurm_cli.available("scancel"):
            log.warning("cancelling %d SLURM jobs left by dead run %s", len(stray), run_id)
            slurm_cli.scancel(stray)
            _wait_gone(stray)  # read the files only once nothing can write them any more
        if run.plan.exists():
            reconcile_run(db, run, run_over=True, interrupted=True)
        close_dead_run(db, run_id)
        recovered.append(run_id)
    return recovered
