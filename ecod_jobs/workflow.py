"""The Python side of ``workflow/Snakefile``: run context, hooks and live recording.

Parse time (every process, including SLURM jobs): :func:`context_from_config`
only reads configuration; it never touches PostgreSQL. The hooks and the live
recorder run in the main Snakemake process on the head node only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, run_record
from .config import JobTypeSpec, config_hash, job_type_spec, load_config
from .db import Database, init_schema, is_transient, retry_while_away
from .exceptions import ConfigurationError, DatabaseError
from .layout import BatchLayout, RunLayout, write_atomic
from .pipelines import PipelineSpec, pipeline_spec, select_stages
from .plan_file import Plan
from .sync import finish_run, record_chunks

log = logging.getLogger(__name__)

RUN_ID_ENV = "ECOD_JOBS_RUN_ID"
_heartbeat: Any = None  # the main process's lease heartbeat (set by on_start)
CHUNK_RULE = "chunk"
STAGE_CHUNK_RULE = "stage_chunk"  # a pipeline stage's chunk (workflow/rules/pipeline.smk)


@dataclass(frozen=True)
class WorkflowContext:
    """Everything a run needs, resolved from Snakemake's ``config`` and ecod-jobs' config."""

    config: dict[str, Any]
    batch_id: int
    spec: JobTypeSpec | None  # a run of one job type; None for a pipeline run
    run_id: str
    retry_failed: bool
    batch_layout: BatchLayout
    pipeline: PipelineSpec | None = None
    stages: tuple[str, ...] = ()  # a pipeline run's stages, in pipeline order
    forced: tuple[str, ...] = ()  # --rerun: these run even where done

    @property
    def key(self) -> str:
        """The run's job type in ecod_jobs_run (``pipeline.NAME`` for a pipeline)."""
        if self.pipeline is not None:
            return self.pipeline.run_key
        assert self.spec is not None
        return self.spec.name

    @property
    def lease_keys(self) -> list[str]:
        """What the run leases on its batch: its job type, or its stages (runs whose
        stages overlap exclude each other)."""
        return list(self.stages) if self.pipeline is not None else [self.key]

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
    # One run id for the main process and every job it starts (they inherit the environment).
    run_id = str(smk_config.get("run_id") or os.environ.get(RUN_ID_ENV) or uuid.uuid4())
    os.environ[RUN_ID_ENV] = run_id
    retry = _as_bool(smk_config.get("retry_failed"))
    work_root = config["pipeline"]["work_root"]
    if smk_config.get("pipeline"):
        if smk_config.get("job_type"):
            raise ConfigurationError("--config pipeline=.. and job_type=.. exclude each other: give one")
        pipeline = pipeline_spec(config, str(smk_config["pipeline"]))
        stages, forced = select_stages(
            pipeline,
            stages=_as_list(smk_config.get("stages")),
            start=smk_config.get("from_stage") or None,
            rerun=smk_config.get("rerun") or None,
        )
        layout = BatchLayout.create(work_root, batch_id, pipeline.run_key)
        return WorkflowContext(
            config, batch_id, None, run_id, retry, layout, pipeline, tuple(stages), tuple(forced)
        )
    spec = job_type_spec(config, smk_config.get("job_type") or None)
    layout = BatchLayout.create(work_root, batch_id, spec.name)
    return WorkflowContext(config, batch_id, spec, run_id, retry, layout)


def _as_list(value: Any) -> list[str] | None:
    if value in (None, ""):
        return None
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


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

    db = ctx.db()
    run = ctx.batch_layout.run(run_id)
    assert ctx.spec is not None
    spec = ctx.spec
    plan = retry_while_away(
        lambda: plan_run(db, ctx.config, spec, ctx.batch_id, run, retry_failed=ctx.retry_failed),
        db.retry_seconds,
        "planning",
    )
    with open(log_path, "w") as log_file:
        log_file.write(f"planned {plan.items} items in {len(plan.chunks)} chunks\n")


def pipeline_plan_checkpoint(ctx: WorkflowContext, run_id: str, log_path: str) -> None:
    """The ``pipeline_plan`` checkpoint: see :func:`ecod_jobs.pipeline_plan.plan_pipeline`."""
    from .pipeline_plan import plan_pipeline

    assert ctx.pipeline is not None
    pipeline = ctx.pipeline
    db = ctx.db()
    plan = retry_while_away(
        lambda: plan_pipeline(
            db,
            ctx.config,
            pipeline,
            ctx.stages,
            ctx.forced,
            ctx.batch_id,
            ctx.batch_layout.run(run_id),
            retry_failed=ctx.retry_failed,
        ),
        db.retry_seconds,
        "planning",
    )
    with open(log_path, "w") as log_file:
        log_file.write(
            f"planned {plan.items} items, {plan.item_stages} item-stages in {len(plan.windows)} windows\n"
        )


def select_checkpoint(ctx: WorkflowContext, run_id: str, stage: str, window: str, log_path: str) -> None:
    """The ``select`` checkpoint of one stage and window: :func:`ecod_jobs.pipeline_plan.select_window`."""
    from .pipeline_plan import select_window

    assert ctx.pipeline is not None
    pipeline = ctx.pipeline
    db = ctx.db()
    run = ctx.batch_layout.run(run_id)
    plan = retry_while_away(
        lambda: select_window(db, ctx.config, pipeline, run, stage, window), db.retry_seconds, "selecting"
    )
    with open(log_path, "w") as log_file:
        log_file.write(f"{stage} {window}: {plan.items} items in {len(plan.chunks)} chunks\n")


# --------------------------------------------------------------------------- hooks


def on_start(ctx: WorkflowContext) -> None:
    """Record the run; from now on chunks are recorded live as they end."""
    db = ctx.db()
    init_schema(db)
    run_record.start(
        db,
        ctx.run_id,
        ctx.batch_id,
        ctx.key,
        profile=_profile_from_argv(sys.argv),
        config_hash=config_hash(ctx.config),
        snakemake_version=snakemake_version(),
        ecod_jobs_version=__version__,
    )
    from .lease import Heartbeat, acquire_all
    from .recovery import recover_dead_runs

    acquire_all(db, ctx.batch_id, ctx.lease_keys, ctx.run_id)  # raises if a live run holds the batch
    recovered = recover_dead_runs(db, ctx.config, ctx.batch_id, ctx.key, ctx.run_id)
    if recovered:
        print(f"ecod-jobs: recovered dead runs {', '.join(recovered)}", file=sys.stderr)
    global _heartbeat
    _heartbeat = Heartbeat(db, ctx.run_id, on_lost=_lease_lost).start()
    LiveRecorder.activate(ctx)
    log.info("run %s of batch %d (%s) started", ctx.run_id, ctx.batch_id, ctx.key)


def _lease_lost() -> None:
    print("ecod-jobs: this run lost its lease to another run; stopping", file=sys.stderr)
    _interrupt_self()


def _interrupt_self() -> None:
    """Stop this run as Ctrl-C would (Snakemake cancels its jobs, then onerror records it)."""
    import signal

    os.kill(os.getpid(), signal.SIGINT)


def on_finish(ctx: WorkflowContext, success: bool) -> None:
    """Final reconciliation from the files: every chunk, sacct detail, batch totals, run state.

    The run's end is written to ``ended.json`` first, so that if the database is
    away (and stays away past ``database.retry_seconds``) ``ecod-jobs sync`` can
    finish the record later exactly as this would have.
    """
    from .lease import release

    LiveRecorder.deactivate()
    if _heartbeat is not None:
        _heartbeat.stop()
    write_atomic(
        ctx.run.ended,
        json.dumps({"success": success, "ended_at": datetime.now(UTC).isoformat(), "pid": os.getpid()}),
    )
    db = ctx.db()

    def finish() -> str:
        try:
            return str(finish_run(db, ctx.run, ctx.batch_id, success)["message"])
        finally:
            with contextlib.suppress(DatabaseError):
                release(db, ctx.run_id)

    try:
        message = retry_while_away(finish, db.retry_seconds, f"recording the end of run {ctx.run_id}")
    except DatabaseError as exc:
        if not is_transient(exc):
            raise
        print(
            f"ecod-jobs: run {ctx.run_id} ended while the database was away ({exc}); its results are"
            f" in {ctx.run.dir}. When the database is back, run: ecod-jobs sync --batch {ctx.batch_id}",
            file=sys.stderr,
        )
        raise
    print(f"ecod-jobs: run {ctx.run_id}: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- live recording


class LiveRecorder:
    """Records each chunk in PostgreSQL as it runs and as Snakemake reports its job's end.

    Fed by the ``ecod_jobs`` logger plugin (``snakemake_logger_plugin_ecod_jobs``),
    which runs in the main process's logging thread. A chunk that runs for hours is
    not a black box meanwhile: every ``LIVE_SECONDS`` a thread looks at the files of
    the chunks Snakemake has scheduled and not yet reported ended, and records any
    that changed: an attempt that started (its SLURM id, node and start time) and
    the items it finished so far (its ``partial`` file). Compute nodes stay off the
    database; the head reads what they write. One lock orders these writes with the
    end-of-chunk ones, so an older partial view never overwrites a chunk's end.
    While the database is away,
    ended chunks wait in a backlog that a background thread retries with backoff
    (1 s doubling to 60 s); the chunk result files are the journal, so replaying
    a chunk is just recording it again from its files, and nothing is lost if
    the head dies meanwhile (the next run or ``ecod-jobs sync`` records it).
    """

    _active: LiveRecorder | None = None
    _lock = threading.Lock()
    MAX_BACKOFF = 60.0
    LIVE_SECONDS = 10.0  # items reach the database within this (plus a write) of finishing

    def __init__(self, ctx: WorkflowContext) -> None:
        self.ctx = ctx
        self.db = ctx.db()
        # Snakemake job id -> (where the chunk's files are, chunk id): the run itself, or
        # for a pipeline run the stage window that planned the chunk
        self.chunks: dict[int, tuple[RunLayout, str]] = {}
        self._plans: dict[Path, Plan] = {}
        self.backlog: dict[tuple[RunLayout, str], bool] = {}  # (unit, chunk) -> its job failed
        self._backlog_lock = threading.Lock()
        self._stop = threading.Event()
        self._retry_thread: threading.Thread | None = None
        self.stopping = False  # a misrouted chunk was seen and the run told to stop
        self._write_lock = threading.Lock()  # one writer of chunk rows at a time (see above)
        self.ended: set[tuple[RunLayout, str]] = set()  # chunks whose job end was reported
        self._seen: dict[tuple[RunLayout, str], tuple[int, tuple[str, ...]]] = {}
        self._poll_thread: threading.Thread | None = None

    @classmethod
    def activate(cls, ctx: WorkflowContext) -> None:
        with cls._lock:
            cls._active = cls(ctx)
            cls._active._poll_thread = threading.Thread(
                target=cls._active._poll_loop, name="ecod-jobs-live-poll", daemon=True
            )
            cls._active._poll_thread.start()

    @classmethod
    def deactivate(cls) -> None:
        with cls._lock:
            active, cls._active = cls._active, None
        if active is not None:
            active._stop.set()  # the end-of-run reconciliation covers the backlog
            if active._poll_thread is not None:
                # its write must not land after the end-of-run reconciliation
                active._poll_thread.join(timeout=60)

    @classmethod
    def current(cls) -> LiveRecorder | None:
        return cls._active

    def plan(self, unit: RunLayout | None = None) -> Plan | None:
        unit = unit or self.ctx.run
        if unit.dir not in self._plans and unit.plan.exists():
            self._plans[unit.dir] = Plan.read(unit)
        return self._plans.get(unit.dir)

    def job_info(self, jobid: int, rule: str, wildcards: Mapping[str, Any]) -> None:
        if wildcards.get("run") != self.ctx.run_id:
            return
        if rule == CHUNK_RULE:
            found = (self.ctx.run, str(wildcards["chunk"]))
        elif rule == STAGE_CHUNK_RULE:
            unit = self.ctx.run.stage_run(str(wildcards["stage"]), str(wildcards["window"]))
            found = (unit, str(wildcards["chunk"]))
        else:
            return
        self.chunks[jobid] = found
        self.ended.discard(found)  # scheduled again: Snakemake retries it

    def job_finished(self, jobid: int) -> None:
        self._record(jobid, failed=False)

    def job_error(self, jobid: int) -> None:
        self._record(jobid, failed=True)

    def _record(self, jobid: int, failed: bool) -> None:
        found = self.chunks.get(jobid)
        if found is None:
            return
        unit, chunk = found
        if self.plan(unit) is None:
            return
        # A refusing runner exits non-zero and leaves its record under the chunk its task
        # was submitted for, which need not be the chunk whose job failed: look at all.
        misrouted = unit.misrouted_reason(chunk) or (
            next(iter(unit.misrouted_reasons()), None) if failed else None
        )
        if misrouted is not None and not self.stopping:
            if not unit.misrouted(chunk).exists() and not failed:
                # its result file names another chunk: keep that on record for the run's end
                write_atomic(unit.misrouted(chunk), json.dumps({"error": misrouted}))
            # Never wait on it (its items would sit in 'processing' while Snakemake retries
            # a broken submission): stop the run; its end records the chunk's items failed.
            self.stopping = True
            log.error("ecod-jobs: chunk %s: %s; stopping the run", chunk, misrouted)
            print(f"ecod-jobs: chunk {chunk}: {misrouted}; stopping the run", file=sys.stderr)
            _interrupt_self()
        with self._backlog_lock:
            self.backlog[(unit, chunk)] = failed
            self.ended.add((unit, chunk))
        if self._retry_thread is None or not self._retry_thread.is_alive():
            self.flush()  # the usual case: record at once, in the logging thread

    def flush(self) -> bool:
        """Record every chunk waiting in the backlog; False if the database is still away."""
        with self._backlog_lock:
            pending = dict(self.backlog)
        if not pending:
            return True
        by_unit: dict[RunLayout, dict[str, bool]] = {}
        for (unit, chunk), failed in pending.items():
            by_unit.setdefault(unit, {})[chunk] = failed
        try:
            with self._write_lock:
                for unit, chunks in by_unit.items():
                    plan = self.plan(unit)
                    if plan is None:
                        continue
                    record_chunks(
                        self.db,
                        unit,
                        plan,
                        sorted(chunks),
                        run_over=False,
                        failed_chunks=[c for c, failed in chunks.items() if failed],
                    )
        except Exception as exc:
            if self._retry_thread is None or not self._retry_thread.is_alive():
                log.warning(
                    "database away: %d ended chunks wait to be recorded; retrying in the background (%s)",
                    len(pending),
                    exc,
                )
                self._retry_thread = threading.Thread(
                    target=self._retry_loop, name="ecod-jobs-live-retry", daemon=True
                )
                self._retry_thread.start()
            return False
        with self._backlog_lock:
            for key, failed in pending.items():
                if self.backlog.get(key) == failed:
                    del self.backlog[key]
        return True

    def _retry_loop(self) -> None:
        delay = 1.0
        while not self._stop.wait(delay):
            if self.flush() and not self.backlog:
                log.warning("database back: recorded the chunks that ended while it was away")
                return
            delay = min(delay * 2, self.MAX_BACKOFF)

    # ----------------------------------------------------------------------- inside chunks

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.LIVE_SECONDS):
            try:
                self.poll()
            except Exception as exc:  # the database may be away: the next poll tries again
                log.warning("recording running chunks failed, trying again: %s", exc)

    def poll(self) -> int:
        """Record the running chunks whose files changed since the last look (an attempt
        started, items finished); returns how many were recorded. One directory listing
        per run (or stage window), whatever its number of chunks."""
        with self._backlog_lock:
            running = {found for found in self.chunks.values() if found not in self.ended}
        by_unit: dict[RunLayout, list[str]] = {}
        for unit, chunk in running:
            by_unit.setdefault(unit, []).append(chunk)
        recorded = 0
        for unit, chunks in by_unit.items():
            files = _result_files(unit)
            changed: dict[str, tuple[int, tuple[str, ...]]] = {}
            for chunk in chunks:
                attempts = tuple(sorted(n for n in files if n.startswith(f"{chunk}.attempt-")))
                if not attempts or f"{chunk}.jsonl" in files:
                    continue  # not started yet, or ended: its job's end records it
                signature = (files.get(f"{chunk}.partial.jsonl", -1), attempts)
                if self._seen.get((unit, chunk)) != signature:
                    changed[chunk] = signature
            plan = self.plan(unit) if changed else None
            if plan is None:
                continue
            with self._write_lock:
                with self._backlog_lock:  # the job may have ended meanwhile: its end wins
                    live = sorted(c for c in changed if (unit, c) not in self.ended)
                if not live or self._stop.is_set():
                    continue
                record_chunks(self.db, unit, plan, live, run_over=False)
            for chunk in live:
                self._seen[(unit, chunk)] = changed[chunk]
            recorded += len(live)
        return recorded


def _result_files(unit: RunLayout) -> dict[str, int]:
    """The names and sizes of a run's (or stage window's) result files, from one listing."""
    found: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(unit.dir / "results"):
            with contextlib.suppress(FileNotFoundError):
                found[entry.name] = entry.stat().st_size
    return found
