"""Running a batch: ``run_batch()`` starts Snakemake in a subprocess with a profile.

One workflow per subprocess: Snakemake's API changes the working directory and
uses a process-wide logger, and profiles are read only by its command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from psycopg2 import sql

from . import run_record, slurm_commands
from .bundle import PROFILES, SNAKEFILE, check_bundle, profile_settings
from .config import JobTypeSpec, job_type_spec, load_config, resolve_config_path
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
from .exceptions import (
    ConfigurationError,
    DatabaseError,
    RecordIncompleteError,
    RunConflictError,
    ValidationError,
)
from .head import HeadSpec
from .layout import BatchLayout
from .lease import acquire_all, release
from .pipelines import PipelineSpec, pipeline_spec, select_stages
from .plan import count_needing_work
from .processes import STOP_STEPS, describe_stop, is_snakemake, signal_group, stop_workflow
from .progress import ProgressSnapshot, RunProgress
from .run_record import is_alive
from .states import RunStatus
from .sync import sync_batch

SLURM_PROFILE_JOBS = 10000  # profiles/slurm: jobs and max-jobs-per-timespan

# Called about every second while the workflow runs, and once at its end, with the run's
# progress (ecod_jobs.progress); ecod-jobs run draws it.
ProgressCallback = Callable[[ProgressSnapshot], None]


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
    def unfinished(self) -> int:
        """Items planned for this run that did not end (still processing, or never planned
        because the workflow did not get that far)."""
        done = sum(self.by_status.get(s, 0) for s in ("success", "error", "skipped"))
        return max(self.planned_items - done, self.by_status.get("processing", 0), 0)

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
    return str(profile_settings(profile_dir).get("executor") or "local")


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
    pipeline: str | None = None,
    stages: Sequence[str] | None = None,
    from_stage: str | None = None,
    rerun: str | None = None,
    progress: ProgressCallback | None = None,
    detach: bool = False,
    run_id: str | None = None,
    head: bool = False,
    **snakemake_options: Any,
) -> Any:
    """Run a batch's items needing work through the workflow; see the README for an example.

    Returns a :class:`BatchResult` when the run is over. ``detach=True`` returns as
    soon as the run's head is started (a SLURM job with the SLURM profile, else a
    daemon): a :class:`~ecod_jobs.head.Head` saying where it runs and where its log
    is (README, "Running for days"), or a ``nothing_to_do`` :class:`BatchResult`.
    ``pipeline``: run that pipeline's stages instead of one job type (``stages``,
    ``from_stage`` and ``rerun`` choose among them; README, "Pipelines").
    ``run_id``: the run's id (a detached head is given the one its launcher recorded).
    ``head``: this process is a detached head (:mod:`ecod_jobs.head`): a stop signal
    (scancel of its job, its time limit) is its death, not a cancel. The workflow is
    killed at once and the run settled as a dead run is, its unfinished items pending
    again, so that rerunning the same command completes them.
    Raises ``ConfigurationError``/``ValidationError`` for bad input (unknown batch,
    job type, pipeline or stage, missing profile, SLURM profile without SLURM, a live
    run holding the batch) before anything runs.
    """
    config = load_config(config_path)
    work = _WorkSpec.resolve(config, job_type, pipeline, stages, from_stage, rerun)
    profile_dir = resolve_profile(profile)
    executor = profile_executor(profile_dir)
    if executor in SLURM_EXECUTORS and not slurm_commands.available("sbatch"):
        raise ConfigurationError(
            f"profile {profile!r} submits to SLURM, but 'sbatch' is not on PATH on {socket.gethostname()}"
        )
    # the workflow is here and Snakemake finds the profile's plugins, before anything is planned
    check_bundle(profile_dir)
    # Whatever the caller's umask, nothing a run writes (plans, manifests, Snakemake's
    # job scripts, results, logs) is writable by other users.
    os.umask(os.umask(0) | 0o002)
    db = Database(config)
    init_schema(db)
    batch = require_batch(db, batch_id)
    if detach:
        if dry_run:
            raise ConfigurationError("--detach and --dry-run do not go together: a dry run writes nothing")
        return _detach(
            db,
            config,
            work,
            executor in SLURM_EXECUTORS,
            HeadSpec(
                str(uuid.uuid4()),
                batch_id,
                profile,
                job_type,
                retry_failed,
                None if config_path is None else str(Path(config_path).resolve()),
                pipeline,
                list(stages) if stages is not None else None,
                from_stage,
                rerun,
                dict(snakemake_options),
            ),
        )
    run_id = run_id or str(uuid.uuid4())
    if not dry_run:
        from .recovery import recover_dead_runs

        # Refuse now, naming the holder, rather than deep in Snakemake's log; then settle
        # any dead run so that its unfinished items count as pending again.
        acquire_all(db, batch_id, work.lease_keys, run_id)
        recover_dead_runs(db, config, batch_id, work.key, run_id)
    pending = work.count_needing_work(db, batch_id, retry_failed)
    if pending == 0:
        if not dry_run:
            release(db, run_id)
        return BatchResult(batch_id, None, 0, status_counts(db, batch_id), nothing_to_do=True)

    chunks = work.chunks_at_most(pending)
    if executor in SLURM_EXECUTORS and chunks > SLURM_PROFILE_JOBS:
        # every chunk reaches the executor in one round, as arrays (see profiles/slurm)
        snakemake_options.setdefault("jobs", chunks)
        snakemake_options.setdefault("max_jobs_per_timespan", f"{chunks}/1s")
    smk_config = [f"batch_id={batch_id}", *work.smk_config, f"retry_failed={retry_failed}"]
    argv, env = _workflow_command(profile_dir, executor, config_path, run_id, smk_config, snakemake_options)
    if dry_run:
        argv.append("--dry-run")
    log_dir = Path(config["pipeline"]["work_root"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = (log_dir / f"run-{run_id}.log").resolve()

    source = None
    if progress is not None and not dry_run:
        source = RunProgress(
            db, batch_id, run_id, pending, name=batch.batch_name, config=config, log_path=log_path
        )

    def watch(proc: subprocess.Popen[bytes] | None = None, fresh: bool = False) -> None:
        if progress is not None and source is not None:
            # progress is cosmetic; never let it stop the run
            with contextlib.suppress(Exception):
                progress(source.read(fresh=fresh))

    def settle() -> None:
        if not dry_run:
            _settle_stopped(db, config, batch_id, work.key)

    try:
        returncode = _run_workflow(argv, env, log_path, run_id, watch=watch, on_stop=settle, die_on_stop=head)
        watch(fresh=True)  # the numbers the run ended with
    finally:
        if not dry_run:
            # the workflow released it already, unless the database is away (then the
            # next run takes the lease over from this dead process)
            with contextlib.suppress(DatabaseError):
                release(db, run_id)
    result = BatchResult(batch_id, run_id, returncode, planned_items=pending, log_path=log_path)
    if dry_run:
        return replace(result, by_status=status_counts(db, batch_id), dry_run=True)
    try:
        return replace(
            result,
            by_status=status_counts(db, batch_id, run_id),
            failed_items=failed_items(db, batch_id, run_id),
        )
    except DatabaseError as exc:
        if not is_transient(exc):
            raise
        run_dir = BatchLayout.create(config["pipeline"]["work_root"], batch_id, work.key).run(run_id).dir
        raise RecordIncompleteError(
            f"run {run_id} ended (workflow exit {returncode}) while the database was away ({exc});"
            f" its results are safe in {run_dir}. When the database is back, run:"
            f" ecod-jobs sync --batch {batch_id}",
            {"run_id": run_id, "log": str(log_path)},
        ) from None


def _detach(db: Database, config: Mapping[str, Any], work: _WorkSpec, on_slurm: bool, spec: HeadSpec) -> Any:
    """Start ``spec``'s head after the checks the head would make at once: a live run (or
    another head still to start) holding the batch is refused here, not in a log later."""
    from .head import LIVE_STATES, open_heads, start_head
    from .lease import holder

    for key in work.lease_keys:
        current = holder(db, spec.batch_id, key)
        if current and is_alive(current["host"], current["pid"], current["heartbeat_age"]):
            raise RunConflictError(
                f"batch {spec.batch_id} (job type or stage {key}) is already being run by run"
                f" {current['run_id']} on host {current['host']} (pid {current['pid']})"
            )
    for head in open_heads(db, spec.batch_id):
        if head.state() in LIVE_STATES and not run_record.has_run(db, head.run_id):
            raise RunConflictError(
                f"batch {spec.batch_id} has a detached head still to start: {head.describe()}"
                f" (ecod-jobs cancel --batch {spec.batch_id} stops it)"
            )
    if work.count_needing_work(db, spec.batch_id, spec.retry_failed) == 0:
        return BatchResult(spec.batch_id, None, 0, status_counts(db, spec.batch_id), nothing_to_do=True)
    return start_head(db, config, spec, work.key, on_slurm)


@dataclass(frozen=True)
class _WorkSpec:
    """What a run runs: one job type, or a pipeline's chosen stages."""

    key: str  # ecod_jobs_run.job_type: the job type, or pipeline.NAME
    lease_keys: list[str]
    smk_config: list[str]
    spec: JobTypeSpec | None = None
    pipeline: PipelineSpec | None = None
    stages: tuple[str, ...] = ()
    forced: tuple[str, ...] = ()

    @classmethod
    def resolve(
        cls,
        config: Mapping[str, Any],
        job_type: str | None,
        pipeline: str | None,
        stages: Sequence[str] | None,
        from_stage: str | None,
        rerun: str | None,
    ) -> _WorkSpec:
        if pipeline is None:
            if stages or from_stage or rerun:
                raise ConfigurationError("--stages, --from and --rerun choose stages of a --pipeline")
            spec = job_type_spec(config, job_type)
            return cls(spec.name, [spec.name], [f"job_type={spec.name}"], spec=spec)
        if job_type is not None:
            raise ConfigurationError("give --job-type or --pipeline, not both")
        if stages is not None and from_stage is not None:
            raise ConfigurationError("give --stages or --from, not both")
        found = pipeline_spec(config, pipeline)
        chosen, forced = select_stages(found, stages=stages, start=from_stage, rerun=rerun)
        smk = [f"pipeline={found.name}", f"stages={','.join(chosen)}"] + ([f"rerun={rerun}"] if rerun else [])
        return cls(found.run_key, chosen, smk, pipeline=found, stages=tuple(chosen), forced=tuple(forced))

    def count_needing_work(self, db: Database, batch_id: int, retry_failed: bool) -> int:
        if self.pipeline is None:
            return count_needing_work(db, batch_id, retry_failed)
        from .pipeline_plan import item_stage_states, stages_to_run

        states = item_stage_states(db, batch_id, self.pipeline)
        ids = db.query(
            sql.SQL("SELECT id FROM {} WHERE batch_id = %s").format(db.table("process_status")), (batch_id,)
        )
        return sum(
            1
            for (pid,) in ids
            if stages_to_run(self.pipeline, self.stages, self.forced, retry_failed, states.get(int(pid), {}))
        )

    def chunks_at_most(self, items: int) -> int:
        if self.pipeline is None:
            assert self.spec is not None
            return -(-items // self.spec.batch_size)
        return sum(-(-items // self.pipeline.stage(s).job.batch_size) for s in self.stages)


def _workflow_command(
    profile_dir: Path,
    executor: str,
    config_path: str | os.PathLike[str] | None,
    run_id: str,
    smk_config: list[str],
    snakemake_options: Mapping[str, Any],
) -> tuple[list[str], dict[str, str]]:
    """The Snakemake command line of run ``run_id`` and its environment."""
    from .recovery import slurm_name_prefix

    path, explicit = resolve_config_path(config_path)
    env = {**os.environ, "ECOD_JOBS_RUN_ID": run_id}
    smk_config = [*smk_config, f"run_id={run_id}"]
    if explicit or (path is not None and path.exists()):
        config_file = str(Path(path).resolve())
        env["ECOD_CONFIG_PATH"] = config_file
        smk_config.append(f"ecod_config={config_file}")
    # names its SLURM jobs, so that a later run can find and cancel them if this one dies
    prefix = (
        [f"--{executor}-jobname-prefix", slurm_name_prefix(run_id)] if executor in SLURM_EXECUTORS else []
    )
    return snakemake_command(profile_dir, smk_config, *prefix, *snakemake_args(snakemake_options)), env


def _interruptible() -> None:
    """In Snakemake's process, before it starts: SIGINT does what Ctrl-C does. A command
    started in the background by a script (``ecod-jobs run ... &``, nohup) inherits SIGINT
    ignored, and Python then never turns it into KeyboardInterrupt: a stop's first, gentle
    step (Snakemake cancelling its own jobs) would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_workflow(
    argv: list[str],
    env: Mapping[str, str],
    log_path: Path,
    run_id: str,
    *,
    watch: Callable[[subprocess.Popen[bytes]], None],
    on_stop: Callable[[], None],
    die_on_stop: bool = False,
) -> int:
    """Run Snakemake to its end, its output in ``log_path``, calling ``watch`` every second.
    Told to stop (Ctrl-C, SIGTERM, SIGHUP), it stops the workflow as Ctrl-C does, within
    bounds (``die_on_stop``: kills it at once, as a dying head would leave it), calls
    ``on_stop`` to settle what it left behind, and re-raises."""
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
            preexec_fn=_interruptible,
        )
        try:
            with _stop_signals_interrupt():
                while proc.poll() is None:
                    watch(proc)
                    time.sleep(1.0)
        except KeyboardInterrupt:
            # a timeout or a reaped login session sends SIGTERM or SIGHUP
            with _signals_ignored():
                if die_on_stop:
                    # Not Snakemake's own stop: that records the items it did not reach as
                    # failed, and it may take longer than the scheduler's grace period.
                    signal_group(proc.pid, signal.SIGKILL)
                    how = "with SIGKILL: a detached head that is stopped dies"
                else:
                    how = describe_stop(stop_workflow(proc.pid))
                proc.wait()
                print(f"ecod-jobs: run {run_id}: stopped the workflow {how}", file=sys.stderr)
                on_stop()
            raise
    return proc.returncode


class Stopped(KeyboardInterrupt):
    """``ecod-jobs run`` was told to stop by a signal other than Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a run as Ctrl-C does (only the main thread can handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM must not cut short the bounded stop and its settling."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _settle_stopped(db: Database, config: Mapping[str, Any], batch_id: int, job_type: str) -> None:
    """After a stop that Snakemake did not finish itself (it was killed, or died before its
    onerror): settle the run as any dead run is settled (:func:`ecod_jobs.recovery.settle_run`)."""
    from .recovery import recover_dead_runs

    with contextlib.suppress(DatabaseError):  # when the database is away, the next run does it
        # no run is excluded: the stopped run is one of the dead ones now
        recover_dead_runs(db, config, batch_id, job_type, None)


def batch_status(
    db: Database, batch_id: int, failed_limit: int = 100, config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``ecod-jobs status`` report (also its ``--json``); ``stages``: items per pipeline
    stage and status, the stages in the order of the ``config``'s pipelines; ``heads``: the
    detached heads with no recorded end (where they run, in what state)."""
    from .head import open_heads
    from .pipeline_sync import stage_counts
    from .pipelines import stage_order

    batch = require_batch(db, batch_id)
    counts = status_counts(db, batch_id)
    by_status = ordered_counts(counts)
    jobs = job_counts(db, batch_id)
    runs = run_record.history(db, batch_id, limit=5)
    return {
        "batch_id": batch_id,
        "name": batch.batch_name,
        "status": batch.status,
        "total": sum(counts.values()),
        "by_status": by_status,
        "jobs": {s: jobs.get(s, 0) for s in ("submitted", "running", "completed", "failed")},
        "failed_items": failed_items(db, batch_id, limit=failed_limit),
        "runs": [{k: r[k] for k in _STATUS_RUN_FIELDS} for r in runs],
        "stages": stage_counts(db, batch_id, order=stage_order(config or {}), total=sum(counts.values())),
        "heads": [
            {
                "run_id": h.run_id,
                "kind": h.kind,
                "slurm_job_id": h.slurm_job_id,
                "host": h.host,
                "pid": h.pid,
                "state": (state := h.state()),
                "log": str(h.log_path),
                "describe": f"head of run {h.run_id}: {h.where()}, {state}; log {h.log_path}",
            }
            for h in open_heads(db, batch_id)
        ],
    }


_STATUS_RUN_FIELDS = ("run_id", "job_type", "status", "host", "pid", "started_at", "ended_at", "message")


def cancel_batch(
    db: Database,
    config: Mapping[str, Any],
    batch_id: int,
    stop_steps: tuple[tuple[signal.Signals, float], ...] = STOP_STEPS,
) -> dict[str, Any]:
    """Stop the batch's live runs and everything of them, then record it.

    Each run's Snakemake (on this host) is stopped with :func:`~ecod_jobs.processes.stop_workflow`:
    SIGINT (Snakemake scancels its jobs), then SIGTERM, then SIGKILL of its whole
    process group, each after a bounded wait. Only then, so that nothing resubmits
    them, each run is settled as a dead one is (:func:`~ecod_jobs.recovery.settle_run`:
    its SLURM jobs cancelled and waited for, chunk processes stopped, results
    recorded, lease released) and closed as ``cancelled``. Live runs on other hosts
    cannot be signalled from here and are left alone (``not_stopped``).
    """
    from .head import mark_ended, open_heads
    from .head import stop as stop_heads
    from .recovery import settle_run

    require_batch(db, batch_id)
    here = socket.gethostname()
    stopped: dict[str, str] = {}  # run id -> how it was stopped
    elsewhere: list[str] = []
    to_settle = []
    heads = open_heads(db, batch_id)
    slurm_heads = {h.run_id for h in heads if h.kind == "slurm"}
    open_runs = run_record.open_runs(db, batch_id)
    for found in open_runs:
        if found.host == here and found.pid and is_snakemake(found.pid):
            if sent := stop_workflow(found.pid, stop_steps):
                stopped[found.run_id] = describe_stop(sent)
        elif found.host != here and found.alive and found.run_id not in slurm_heads:
            elsewhere.append(found.describe())
            continue
        to_settle.append(found)
    # Heads: a SLURM head job is cancelled and waited for (it stops its workflow as
    # Ctrl-C does; a head still queued just goes), a local daemon gets SIGTERM. Only then
    # is its run dead for sure, on whichever node it ran, and settled below.
    head_report = stop_heads(heads)
    for head in heads:
        mark_ended(db, head.run_id, None)
    # Jobs of no open run: submitted through the Python job managers, or left by an
    # ended run whose record missed them.
    scancelled = _cancel_stray_jobs(db, batch_id, [r.run_id for r in open_runs])
    work_root = config["pipeline"]["work_root"]
    for found in to_settle:
        how = f"; stopped {stopped[found.run_id]}" if found.run_id in stopped else ""
        settled = settle_run(
            db,
            BatchLayout.create(work_root, batch_id, found.job_type).run(found.run_id),
            batch_id,
            status=RunStatus.CANCELLED,
            message=f"cancelled with ecod-jobs cancel{how}",
        )
        scancelled += settled["scancelled"]
    report = sync_batch(db, config, batch_id)
    return {
        "heads": head_report,
        "signalled_runs": list(stopped),
        "stopped": stopped,
        "not_stopped": elsewhere,
        "scancelled": sorted(set(scancelled)),
        **report,
    }


def _cancel_stray_jobs(db: Database, batch_id: int, open_run_ids: list[str]) -> list[str]:
    """scancel the batch's jobs still recorded as submitted that belong to no open run."""
    live = sorted(
        str(r[0])
        for r in db.query(
            sql.SQL(
                "SELECT DISTINCT slurm_job_id FROM {} WHERE batch_id = %s AND status = 'submitted'"
                " AND slurm_job_id IS NOT NULL AND (run_id IS NULL OR NOT run_id::text = ANY(%s))"
            ).format(db.table("job")),
            (batch_id, open_run_ids),
        )
    )
    return slurm_commands.cancel_and_wait(live)


__all__ = ["BatchResult", "batch_status", "cancel_batch", "run_batch"]
