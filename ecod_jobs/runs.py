"""Running a batch: ``run_batch()`` starts Snakemake in a subprocess with a profile.

One workflow per subprocess: Snakemake's API changes the working directory and
uses a process-wide logger, and profiles are read only by its command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg2 import sql

from .config import job_type_spec, load_config, resolve_config_path
from .db import (
    Database,
    failed_items,
    init_schema,
    is_transient,
    job_counts,
    ordered_counts,
    require_batch,
    status_counts,
)
from .exceptions import ConfigurationError, DatabaseError, RecordIncompleteError, ValidationError
from .layout import BatchLayout
from .plan import count_needing_work
from .sync import sync_batch

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SNAKEFILE = PACKAGE_ROOT / "workflow" / "Snakefile"
PROFILES = PACKAGE_ROOT / "profiles"
SLURM_PROFILE_JOBS = 10000  # profiles/slurm: jobs and max-jobs-per-timespan

ProgressCallback = Callable[[dict[str, int], int], None]


@dataclass
class BatchResult:
    """What a run did: counts by process status for the batch, and the items that failed."""

    batch_id: int
    run_id: str | None
    returncode: int
    by_status: dict[str, int] = field(default_factory=dict)
    failed_items: list[dict[str, Any]] = field(default_factory=list)
    planned_items: int = 0
    log_path: Path | None = None
    nothing_to_do: bool = False
    dry_run: bool = False

    @property
    def failed(self) -> int:
        return len(self.failed_items)

    @property
    def ok(self) -> bool:
        """Snakemake succeeded and no item of this run failed."""
        return self.returncode == 0 and not self.failed_items


def resolve_profile(profile: str) -> Path:
    """``local``/``slurm`` name the shipped profiles; anything else is a directory."""
    candidate = PROFILES / profile if "/" not in profile else Path(profile)
    if not (candidate / "config.yaml").is_file():
        candidate = Path(profile)
    if not (candidate / "config.yaml").is_file():
        raise ValidationError(
            f"profile {profile!r} not found: expected 'local', 'slurm' or a directory with config.yaml"
        )
    return candidate.resolve()


SLURM_EXECUTORS = ("ecod-slurm", "slurm")


def profile_executor(profile_dir: Path) -> str:
    """The profile's ``executor`` (``local`` when it names none)."""
    import yaml

    try:
        settings = yaml.safe_load((profile_dir / "config.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(f"profile {profile_dir / 'config.yaml'} is not valid YAML: {exc}") from None
    return str(settings.get("executor") or "local") if isinstance(settings, dict) else "local"


def snakemake_args(options: Mapping[str, Any]) -> list[str]:
    """``cores=2, keep_going=True`` -> ``--cores 2 --keep-going``."""
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def snakemake_command(profile_dir: Path, smk_config: list[str], *options: str) -> list[str]:
    """The workflow's Snakemake command line: ``--config`` items like ``batch_id=7``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--profile",
        str(profile_dir),
        *options,
        "--config",
        *smk_config,
    ]


def run_batch(
    batch_id: int,
    profile: str = "local",
    job_type: str | None = None,
    retry_failed: bool = False,
    config_path: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    *,
    progress: ProgressCallback | None = None,
    **snakemake_options: Any,
) -> BatchResult:
    """Run a batch's items needing work through the workflow; see the README for an example.

    Raises ``ConfigurationError``/``ValidationError`` for bad input (unknown batch or
    job type, missing profile, SLURM profile without SLURM) before anything runs.
    """
    config = load_config(config_path)
    spec = job_type_spec(config, job_type)
    profile_dir = resolve_profile(profile)
    executor = profile_executor(profile_dir)
    if executor in SLURM_EXECUTORS and not shutil.which("sbatch"):
        raise ConfigurationError(
            f"profile {profile!r} submits to SLURM, but 'sbatch' is not on PATH on {socket.gethostname()}"
        )
    if not SNAKEFILE.exists():
        raise ConfigurationError(f"workflow not found at {SNAKEFILE}: install ecod-jobs from its source tree")
    # Whatever the caller's umask, nothing a run writes (plans, manifests, Snakemake's
    # job scripts, results, logs) is writable by other users.
    os.umask(os.umask(0) | 0o002)
    db = Database(config)
    init_schema(db)
    require_batch(db, batch_id)
    run_id = str(uuid.uuid4())
    if not dry_run:
        from .lease import acquire, release
        from .recovery import recover_dead_runs

        # Refuse now, naming the holder, rather than deep in Snakemake's log; then settle
        # any dead run so that its unfinished items count as pending again.
        acquire(db, batch_id, spec.name, run_id)
        recover_dead_runs(db, config, batch_id, spec.name, run_id)
    pending = count_needing_work(db, batch_id, retry_failed)
    if pending == 0:
        if not dry_run:
            release(db, run_id)
        return BatchResult(batch_id, None, 0, status_counts(db, batch_id), nothing_to_do=True)

    from .recovery import slurm_name_prefix

    chunks = -(-pending // spec.batch_size)
    if executor in SLURM_EXECUTORS and chunks > SLURM_PROFILE_JOBS:
        # every chunk reaches the executor in one round, as arrays (see profiles/slurm)
        snakemake_options.setdefault("jobs", chunks)
        snakemake_options.setdefault("max_jobs_per_timespan", f"{chunks}/1s")

    path, explicit = resolve_config_path(config_path)
    env = {**os.environ, "ECOD_JOBS_RUN_ID": run_id}
    smk_config = [
        f"batch_id={batch_id}",
        f"job_type={spec.name}",
        f"retry_failed={retry_failed}",
        f"run_id={run_id}",
    ]
    if explicit or (path is not None and path.exists()):
        config_file = str(Path(path).resolve())
        env["ECOD_CONFIG_PATH"] = config_file
        smk_config.append(f"ecod_config={config_file}")
    # names its SLURM jobs, so that a later run can find and cancel them if this one dies
    prefix = (
        [f"--{executor}-jobname-prefix", slurm_name_prefix(run_id)] if executor in SLURM_EXECUTORS else []
    )
    argv = snakemake_command(profile_dir, smk_config, *prefix, *snakemake_args(snakemake_options))
    if dry_run:
        argv.append("--dry-run")
    log_dir = Path(config["pipeline"]["work_root"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = (log_dir / f"run-{run_id}.log").resolve()
    with log_path.open("wb") as log:
        # Its own process group, so that a cancel can interrupt Snakemake and its local
        # jobs together, as Ctrl-C in a terminal does.
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while proc.poll() is None:
                if progress is not None and not dry_run:
                    # progress is cosmetic; never let it stop the run
                    with contextlib.suppress(Exception):
                        progress(status_counts(db, batch_id, run_id), pending)
                time.sleep(1.0)
        except KeyboardInterrupt:
            interrupt(proc.pid)  # Snakemake cancels its SLURM jobs on SIGINT
            proc.wait()
            raise
        finally:
            if not dry_run:
                # the workflow released it already, unless the database is away (then the
                # next run takes the lease over from this dead process)
                with contextlib.suppress(DatabaseError):
                    release(db, run_id)
    if dry_run:
        return BatchResult(
            batch_id,
            run_id,
            proc.returncode,
            status_counts(db, batch_id),
            planned_items=pending,
            log_path=log_path,
            dry_run=True,
        )
    try:
        by_status, failed = status_counts(db, batch_id, run_id), failed_items(db, batch_id, run_id)
    except DatabaseError as exc:
        if not is_transient(exc):
            raise
        run_dir = BatchLayout.create(config["pipeline"]["work_root"], batch_id, spec.name).run(run_id).dir
        raise RecordIncompleteError(
            f"run {run_id} ended (workflow exit {proc.returncode}) while the database was away ({exc});"
            f" its results are safe in {run_dir}. When the database is back, run:"
            f" ecod-jobs sync --batch {batch_id}",
            {"run_id": run_id, "log": str(log_path)},
        ) from None
    return BatchResult(
        batch_id,
        run_id,
        proc.returncode,
        by_status,
        failed,
        planned_items=pending,
        log_path=log_path,
    )


def interrupt(pid: int) -> bool:
    """Ctrl-C for a Snakemake process: SIGINT to its process group when it leads one.

    Local jobs only stop when they get the signal too; SLURM jobs are cancelled by
    Snakemake itself. Returns False when the process is gone.
    """
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGINT)
        else:
            os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True


def batch_status(db: Database, batch_id: int, failed_limit: int = 100) -> dict[str, Any]:
    """The ``ecod-jobs status`` report (also its ``--json``)."""
    batch = require_batch(db, batch_id)
    counts = status_counts(db, batch_id)
    by_status = ordered_counts(counts)
    jobs = job_counts(db, batch_id)
    runs = db.query(
        sql.SQL(
            "SELECT run_id, job_type, status, host, started_at, ended_at, message FROM {}"
            " WHERE batch_id = %s ORDER BY started_at DESC LIMIT 5"
        ).format(db.table("ecod_jobs_run")),
        (batch_id,),
    )
    return {
        "batch_id": batch_id,
        "name": batch.batch_name,
        "status": batch.status,
        "total": sum(counts.values()),
        "by_status": by_status,
        "jobs": {s: jobs.get(s, 0) for s in ("submitted", "completed", "failed")},
        "failed_items": failed_items(db, batch_id, limit=failed_limit),
        "runs": [
            {
                "run_id": str(r[0]),
                "job_type": r[1],
                "status": r[2],
                "host": r[3],
                "started_at": r[4].isoformat() if r[4] else None,
                "ended_at": r[5].isoformat() if r[5] else None,
                "message": r[6],
            }
            for r in runs
        ],
    }


def cancel_batch(
    db: Database, config: Mapping[str, Any], batch_id: int, wait_seconds: float = 60
) -> dict[str, Any]:
    """Stop the batch's live runs (SIGINT: Snakemake scancels its jobs), cancel stray jobs, record it."""
    from . import slurm_cli
    from .recovery import live_slurm_jobs

    require_batch(db, batch_id)
    runs = db.query(
        sql.SQL(
            "SELECT run_id, host, pid, job_type FROM {} WHERE batch_id = %s AND status = 'running'"
        ).format(db.table("ecod_jobs_run")),
        (batch_id,),
    )
    here = socket.gethostname()
    signalled = []
    for run_id, host, pid, _job_type in runs:
        if host == here and pid and interrupt(int(pid)):
            signalled.append((str(run_id), int(pid)))
    deadline = time.monotonic() + wait_seconds
    for _run_id, pid in signalled:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
    # Jobs still queued or running: a run whose head node died cancelled nothing, and
    # Snakemake's Ctrl-C can miss array tasks it was still submitting. Found by job
    # row, attempt file and, for tasks that have not started, the run's job names.
    found = {
        str(r[0])
        for r in db.query(
            sql.SQL(
                "SELECT DISTINCT slurm_job_id FROM {} WHERE batch_id = %s AND status = 'submitted'"
                " AND slurm_job_id IS NOT NULL"
            ).format(db.table("job")),
            (batch_id,),
        )
    }
    work_root = config["pipeline"]["work_root"]
    for run_id, _host, _pid, job_type in runs:
        found.update(live_slurm_jobs(db, BatchLayout.create(work_root, batch_id, job_type).run(str(run_id))))
    live = sorted(found)
    scancelled = []
    if live and slurm_cli.available("scancel"):
        slurm_cli.scancel(live)
        scancelled = live
    db.query(
        sql.SQL(
            "UPDATE {} SET status = 'cancelled', ended_at = coalesce(ended_at, now()),"
            " message = 'cancelled with ecod-jobs cancel'"
            " WHERE batch_id = %s AND (status = 'running' OR run_id::text = ANY(%s))"
        ).format(db.table("ecod_jobs_run")),
        (batch_id, [r for r, _ in signalled]),
    )
    report = sync_batch(db, config, batch_id)
    return {"signalled_runs": [r for r, _ in signalled], "scancelled": scancelled, **report}


__all__ = ["BatchResult", "batch_status", "cancel_batch", "run_batch"]
