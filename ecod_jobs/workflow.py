"""The Python side of ``workflow/Snakefile``: run context, hooks and live recording.

Parse time (every process, including SLURM jobs): :func:`context_from_config`
only reads configuration; it never touches PostgreSQL. The hooks and the live
recorder run in the main Snakemake process on the head node only.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from . import __version__
from .config import JobTypeSpec, config_hash, job_type_spec, load_config
from .db import Database, init_schema, status_counts
from .exceptions import ConfigurationError
from .layout import BatchLayout, RunLayout
from .sync import finish_run_row, reconcile_run, record_chunks

log = logging.getLogger(__name__)

RUN_ID_ENV = "ECOD_JOBS_RUN_ID"
_heartbeat: Any = None  # the main process's lease heartbeat (set by on_start)
CHUNK_RULE = "chunk"


@dataclass(frozen=True)
class WorkflowContext:
    """Everything a run needs, resolved from Snakemake's ``config`` and ecod-jobs' config."""

    config: dict[str, Any]
    batch_id: int
    spec: JobTypeSpec
    run_id: str
    retry_failed: bool
    batch_layout: BatchLayout

    @property
    def run(self) -> RunLayout:
        return self.batch_layout.run(self.run_id)

    def db(self) -> Database:
        return Database(self.config)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def context_from_config(smk_config: Mapping[str, Any]) -> WorkflowContext:
    """Resolve the run from ``--config batch_id=.. [job_type=..] [retry_failed=..] [run_id=..]``."""
    if "batch_id" not in smk_config:
        raise ConfigurationError("no batch given: run with --config batch_id=N")
    try:
        batch_id = int(smk_config["batch_id"])
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"--config batch_id={smk_config['batch_id']!r} is not valid: expected an integer batch id"
        ) from None
    config = load_config(smk_config.get("ecod_config") or None)
    spec = job_type_spec(config, smk_config.get("job_type") or None)
    # One run id for the main process and every job it starts (they inherit the environment).
    run_id = str(smk_config.get("run_id") or os.environ.get(RUN_ID_ENV) or uuid.uuid4())
    os.environ[RUN_ID_ENV] = run_id
    layout = BatchLayout.create(config["pipeline"]["work_root"], batch_id, spec.name)
    return WorkflowContext(config, batch_id, spec, run_id, _as_bool(smk_config.get("retry_failed")), layout)


def _profile_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--profile" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--profile="):
            return arg.split("=", 1)[1]
    return os.environ.get("SNAKEMAKE_PROFILE")


def snakemake_version() -> str:
    try:
        from importlib.metadata import version

        return version("snakemake")
    except Exception:  # pragma: no cover
        return "unknown"


def plan_checkpoint(ctx: WorkflowContext, run_id: str, log_path: str) -> None:
    """The plan checkpoint's body (a job on the head node): see :func:`ecod_jobs.plan.plan_run`."""
    from .plan import plan_run

    plan = plan_run(
        ctx.db(),
        ctx.config,
        ctx.spec,
        ctx.batch_id,
        ctx.batch_layout.run(run_id),
        retry_failed=ctx.retry_failed,
    )
    with open(log_path, "w") as log_file:
        log_file.write(f"planned {plan['items']} items in {len(plan['chunks'])} chunks\n")


# --------------------------------------------------------------------------- hooks


def on_start(ctx: WorkflowContext) -> None:
    """Record the run; from now on chunks are recorded live as they end."""
    db = ctx.db()
    init_schema(db)
    db.query(
        sql.SQL(
            "INSERT INTO {} (run_id, batch_id, job_type, profile, host, username, pid, config_hash,"
            " snakemake_version, ecod_jobs_version, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " 'running') ON CONFLICT (run_id) DO UPDATE SET pid = EXCLUDED.pid, status = 'running',"
            " ended_at = NULL"
        ).format(db.table("ecod_jobs_run")),
        (
            ctx.run_id,
            ctx.batch_id,
            ctx.spec.name,
            _profile_from_argv(sys.argv),
            socket.gethostname(),
            getpass.getuser(),
            os.getpid(),
            config_hash(ctx.config),
            snakemake_version(),
            __version__,
        ),
    )
    from .lease import Heartbeat, acquire
    from .recovery import recover_dead_runs

    acquire(db, ctx.batch_id, ctx.spec.name, ctx.run_id)  # raises if a live run holds the batch
    recovered = recover_dead_runs(db, ctx.config, ctx.batch_id, ctx.spec.name, ctx.run_id)
    if recovered:
        print(f"ecod-jobs: recovered dead runs {', '.join(recovered)}", file=sys.stderr)
    global _heartbeat
    _heartbeat = Heartbeat(db, ctx.run_id).start()
    LiveRecorder.activate(ctx)
    log.info("run %s of batch %d (%s) started", ctx.run_id, ctx.batch_id, ctx.spec.name)


def on_finish(ctx: WorkflowContext, success: bool) -> None:
    """Final reconciliation from the files: every chunk, sacct detail, batch totals, run state."""
    from .lease import release

    LiveRecorder.deactivate()
    if _heartbeat is not None:
        _heartbeat.stop()
    db = ctx.db()
    try:
        _finish(ctx, db, success)
    finally:
        release(db, ctx.run_id)


def _finish(ctx: WorkflowContext, db: Database, success: bool) -> None:
    if not ctx.run.plan.exists():  # failed before planning
        finish_run_row(db, ctx.run_id, "error", "the run ended before it was planned")
        return
    summary = reconcile_run(db, ctx.run, run_over=True)
    by_status = status_counts(db, ctx.batch_id, ctx.run_id)
    failed_items = by_status.get("error", 0)
    status = "success" if success and not failed_items else "error"
    message = f"{by_status.get('success', 0)} succeeded, {failed_items} failed of {summary['settled']} items"
    finish_run_row(db, ctx.run_id, status, message)
    print(f"ecod-jobs: run {ctx.run_id}: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- live recording


class LiveRecorder:
    """Records each chunk in PostgreSQL as Snakemake reports its job's end.

    Fed by the ``ecod_jobs`` logger plugin (``snakemake_logger_plugin_ecod_jobs``),
    which runs in the main process's logging thread. Failures here only log a
    warning: the final reconciliation and ``ecod-jobs sync`` rebuild from files.
    """

    _active: LiveRecorder | None = None
    _lock = threading.Lock()

    def __init__(self, ctx: WorkflowContext) -> None:
        self.ctx = ctx
        self.db = ctx.db()
        self.chunks: dict[int, str] = {}  # Snakemake job id -> chunk id
        self._plan: dict[str, Any] | None = None

    @classmethod
    def activate(cls, ctx: WorkflowContext) -> None:
        with cls._lock:
            cls._active = cls(ctx)

    @classmethod
    def deactivate(cls) -> None:
        with cls._lock:
            cls._active = None

    @classmethod
    def current(cls) -> LiveRecorder | None:
        return cls._active

    def plan(self) -> dict[str, Any] | None:
        if self._plan is None and self.ctx.run.plan.exists():
            self._plan = self.ctx.run.read_plan()
        return self._plan

    def job_info(self, jobid: int, rule: str, wildcards: Mapping[str, Any]) -> None:
        if rule == CHUNK_RULE and wildcards.get("run") == self.ctx.run_id:
            self.chunks[jobid] = str(wildcards["chunk"])

    def job_finished(self, jobid: int) -> None:
        self._record(jobid, failed=False)

    def job_error(self, jobid: int) -> None:
        self._record(jobid, failed=True)

    def _record(self, jobid: int, failed: bool) -> None:
        chunk = self.chunks.get(jobid)
        plan = self.plan()
        if chunk is None or plan is None:
            return
        try:
            record_chunks(
                self.db, self.ctx.run, plan, [chunk], run_over=False, failed_chunks=[chunk] if failed else ()
            )
        except Exception as exc:  # the final reconciliation will catch up
            log.warning("could not record chunk %s now (will reconcile at the end): %s", chunk, exc)
