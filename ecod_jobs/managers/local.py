"""LocalJobManager: job scripts run on this machine by a bounded pool of workers.

Job state lives on disk, one JSON file per job in the state directory
(``job_manager.state_dir``, default ``.ecod_jobs/local``), written atomically
and changed only under that job's file lock. So:

* another process, or a new manager after a restart, can check a job's status,
  fetch its output and cancel it by id;
* a cancel can never be overwritten by the worker that sees the killed process
  exit (the worker re-reads the state under the lock and keeps CANCELLED).

Each job runs as ``bash script`` in its own session (process group), so
cancelling ends the whole group: the script and everything it started. A tiny
bash wrapper writes the script's exit status to a file beside the state, so a
job that outlives its manager (the manager crashed; the job keeps running)
still gets its real exit status recorded by whichever manager looks next.

When the manager that owns a job has ended (checked by pid and process start
time), a job it left RUNNING whose process is gone becomes COMPLETED/FAILED
from that exit-status file, or FAILED ("exit status lost") without one; a job
it left PENDING never started and becomes FAILED with that reason. Nothing is
re-run behind the user's back.

The ``#SBATCH`` lines of the script give the local job its name, output files
(``%j``, ``%A``, ``%a``, ``%x`` expanded as sbatch does), array tasks (run one
after another; ``SLURM_ARRAY_TASK_ID`` is set) and time limit (enforced: the
job ends TIMEOUT). ``--mem`` and ``--cpus-per-task`` are recorded, not enforced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..exceptions import JobSubmissionError
from ..processes import KILL_WAIT, kill_group, process_alive, start_ticks
from ..states import STATES, Phase
from .base import ConfigLike, JobInfo, JobManager, script_file
from .script import expand_array, expand_pattern, read_script_header

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = ".ecod_jobs/local"
_JOB_ID_RE = re.compile(r"^(local-[0-9a-f]{12})(?:_(\d+))?$")
_SINGLE = ""  # task key of a job without an array

# Runs the script and leaves its exit status in a file, even if the manager is gone.
_WRAPPER = '"$BASH" "$1"; rc=$?; printf "%d\\n" "$rc" > "$2.tmp" && mv -f "$2.tmp" "$2"; exit "$rc"'


def _self_start() -> int | None:
    # per call, not at import: a forked child is another process with another start time
    return start_ticks(os.getpid())


def _now() -> float:
    return time.time()


# --------------------------------------------------------------------------- persisted state


@dataclass
class TaskState:
    """One run of the script: the whole job, or one array task."""

    stdout: str
    stderr: str
    status: str = "PENDING"
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None


@dataclass
class LocalJob:
    """The state file of one local job."""

    job_id: str
    job_name: str
    script: str
    cwd: str
    host: str
    owner_pid: int
    owner_start: int | None
    submitted_at: float
    tasks: dict[str, TaskState]
    batch_id: int | None = None
    status: str = "PENDING"
    exit_code: int | None = None
    reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    time_limit: int | None = None
    mem_mb: int | None = None
    threads: int | None = None
    # the process running now (the wrapper; it leads its own process group)
    pid: int | None = None
    proc_start: int | None = None
    current_task: str | None = None
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return STATES[self.status].phase.finished

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LocalJob:
        data = json.loads(text)
        data["tasks"] = {k: TaskState(**v) for k, v in data.get("tasks", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class StateStore:
    """``{dir}/{job_id}.json`` (+ ``.lock`` for flock, ``.exit`` files from the wrapper)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobSubmissionError(
                f"cannot create the local job state directory {directory}: {exc}"
            ) from None

    def path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.json"

    def exit_path(self, job_id: str, task: str) -> Path:
        return self.directory / (f"{job_id}_{task}.exit" if task else f"{job_id}.exit")

    def load(self, job_id: str) -> LocalJob | None:
        try:
            return LocalJob.from_json(self.path(job_id).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            log.error("local job state %s is unreadable: %s", self.path(job_id), exc)
            return None

    def save(self, job: LocalJob) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{job.job_id}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(job.to_json())
            os.replace(tmp, self.path(job.job_id))  # readers see the old or the new file, never half
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def locked(self, job_id: str) -> Iterator[LocalJob | None]:
        """The job's state under its exclusive file lock (threads and processes alike); saved on exit."""
        with open(self.directory / f"{job_id}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                job = self.load(job_id)
                yield job
                if job is not None:
                    self.save(job)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def all(self) -> Iterator[LocalJob]:
        for path in sorted(self.directory.glob("local-*.json")):
            job = self.load(path.stem)
            if job is not None:
                yield job


def _split(job_id: str) -> tuple[str, str | None] | None:
    match = _JOB_ID_RE.match(str(job_id))
    return (match.group(1), match.group(2)) if match else None


def _aggregate(job: LocalJob) -> tuple[str, int | None, str | None]:
    """A finished job's state from its tasks: the first failure decides, else COMPLETED."""
    tasks = list(job.tasks.values())
    if any(not STATES[t.status].phase.finished for t in tasks):
        return "RUNNING", None, None
    for task in tasks:
        if STATES[task.status].phase is Phase.FAILED:
            return task.status, task.exit_code, task.reason
    return "COMPLETED", 0, None


def _dt(stamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(stamp) if stamp is not None else None


# --------------------------------------------------------------------------- the manager


class LocalJobManager(JobManager):
    """Runs job scripts on this machine, at most ``job_manager.max_workers`` at a time."""

    backend = "local"

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        settings = self.config.get("job_manager") or {}
        self.max_workers = int(settings.get("max_workers") or os.cpu_count() or 1)
        state_dir = Path(settings.get("state_dir") or DEFAULT_STATE_DIR).expanduser()
        self.state = StateStore(state_dir.absolute())
        self.host = socket.gethostname()
        self.kill_wait = KILL_WAIT
        self._bash = shutil.which("bash") or "/bin/bash"
        self._executor = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="ecod-local")
        self._futures: dict[str, Future[None]] = {}

    # ----------------------------------------------------------------- lifecycle

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop accepting jobs; with ``wait``, block until queued and running jobs end.

        Queued jobs still run unless ``cancel_pending`` (they are then CANCELLED).
        The interpreter waits at exit for this manager's jobs, as for any thread pool.
        """
        if cancel_pending:
            with self._lock:
                queued = list(self._futures)
            for job_id in queued:
                if self.check_job_status(job_id) == "PENDING":
                    self.cancel_job(job_id)
        self._executor.shutdown(wait=wait)

    def __enter__(self) -> LocalJobManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    # ----------------------------------------------------------------- submit

    def submit_job(self, script_path: str | os.PathLike[str], batch_id: int | None = None) -> str:
        script = script_file(script_path)
        try:
            header = read_script_header(script)
        except OSError as exc:
            raise JobSubmissionError(f"cannot read job script {script}: {exc}") from None
        job_id = f"local-{uuid.uuid4().hex[:12]}"
        name = header.job_name or script.stem
        array = header.array is not None
        default_out = f"{script.parent}/{name}-{'%A_%a' if array else '%j'}.out"
        out_pattern = header.output or default_out
        err_pattern = header.error or out_pattern  # sbatch's rule: no --error, stderr joins stdout
        task_ids: Sequence[int | None] = expand_array(header.array) if header.array else [None]
        if not task_ids:
            raise JobSubmissionError(f"job script {script}: empty --array={header.array}")
        tasks: dict[str, TaskState] = {}
        for task in task_ids:
            values = {
                "job_id": job_id if task is None else f"{job_id}_{task}",
                "job_name": name,
                "array_job_id": job_id,
                "task_id": task,
            }
            out = os.path.abspath(expand_pattern(out_pattern, **values))
            err = os.path.abspath(expand_pattern(err_pattern, **values))
            tasks[_SINGLE if task is None else str(task)] = TaskState(stdout=out, stderr=err)
        job = LocalJob(
            job_id=job_id,
            job_name=name,
            script=str(script),
            cwd=os.getcwd(),
            host=self.host,
            owner_pid=os.getpid(),
            owner_start=_self_start(),
            submitted_at=_now(),
            tasks=tasks,
            batch_id=batch_id,
            time_limit=header.time_seconds,
            mem_mb=header.mem_mb,
            threads=header.threads,
        )
        with self._lock:
            self.state.save(job)
            try:
                self._futures[job_id] = self._executor.submit(self._run, job_id)
            except RuntimeError as exc:  # the pool was shut down
                self.state.path(job_id).unlink(missing_ok=True)
                raise JobSubmissionError(f"cannot submit {script}: {exc}") from None
        self._record_submission(job_id, batch_id)
        with self._lock:
            self._last_state[job_id] = "PENDING"
        log.info(
            "submitted local job %s (%s, %s%s)",
            job_id,
            name,
            script,
            f", batch {batch_id}" if batch_id is not None else "",
        )
        return job_id

    # ----------------------------------------------------------------- running (worker threads)

    def _run(self, job_id: str) -> None:
        try:
            job = self.state.load(job_id)
            for task in list(job.tasks) if job else []:
                if not self._run_task(job_id, task):
                    break
        except Exception as exc:  # never let a job end without a final state
            log.exception("local job %s: the runner failed", job_id)
            with self.state.locked(job_id) as job:
                if job is not None and not job.finished:
                    for task in job.tasks.values():
                        if not STATES[task.status].phase.finished:
                            task.status, task.reason = "FAILED", f"ecod-jobs runner error: {exc}"
        finally:
            self._finish(job_id)

    def _task_env(self, job: LocalJob, task: str) -> dict[str, str]:
        env = dict(os.environ)
        env["ECOD_JOB_ID"] = f"{job.job_id}_{task}" if task else job.job_id
        env["ECOD_JOB_NAME"] = job.job_name
        if task:
            numbers = [int(t) for t in job.tasks]
            env.update(
                SLURM_ARRAY_JOB_ID=job.job_id,
                SLURM_ARRAY_TASK_ID=task,
                SLURM_ARRAY_TASK_COUNT=str(len(numbers)),
                SLURM_ARRAY_TASK_MIN=str(min(numbers)),
                SLURM_ARRAY_TASK_MAX=str(max(numbers)),
            )
        return env

    def _run_task(self, job_id: str, key: str) -> bool:
        """Run one task to its end; False when the whole job was cancelled."""
        with self.state.locked(job_id) as job:
            if job is None or job.status == "CANCELLED":
                return False
            task = job.tasks[key]
            if task.status != "PENDING":  # this task alone was cancelled
                return True
            exit_file = self.state.exit_path(job_id, key)
            exit_file.unlink(missing_ok=True)
            try:
                Path(task.stdout).parent.mkdir(parents=True, exist_ok=True)
                Path(task.stderr).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.ExitStack() as files:
                    out = files.enter_context(open(task.stdout, "ab"))
                    err = out if task.stderr == task.stdout else files.enter_context(open(task.stderr, "ab"))
                    proc = subprocess.Popen(
                        [self._bash, "-c", _WRAPPER, "ecod-job", job.script, str(exit_file)],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        cwd=job.cwd,
                        env=self._task_env(job, key),
                        start_new_session=True,  # its own process group: cancel ends all of it
                    )
            except OSError as exc:
                task.status, task.reason, task.ended_at = "FAILED", f"could not start: {exc}", _now()
                log.error("local job %s: could not start %s: %s", job_id, job.script, exc)
                return True
            now = _now()
            task.status, task.started_at = "RUNNING", now
            job.status, job.started_at = "RUNNING", job.started_at or now
            job.pid, job.proc_start, job.current_task = proc.pid, start_ticks(proc.pid), key
            limit = job.time_limit
        log.info("local job %s%s started (pid %d)", job_id, f"_{key}" if key else "", proc.pid)
        try:
            returncode = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            with self.state.locked(job_id) as job:
                timed_out = job is not None and job.tasks[key].status == "RUNNING"
                if timed_out:
                    job.tasks[key].status = "TIMEOUT"
                    job.tasks[key].reason = f"killed at its time limit of {limit} s"
            if timed_out:
                log.warning("local job %s reached its time limit (%s s): killing it", job_id, limit)
                kill_group(proc.pid, self.kill_wait)
            returncode = proc.wait()
        with self.state.locked(job_id) as job:
            if job is None:
                return False
            task = job.tasks[key]
            task.exit_code = returncode if returncode >= 0 else 128 - returncode
            task.ended_at = _now()
            if task.status == "RUNNING":  # not cancelled or timed out meanwhile: the exit status decides
                task.status = "COMPLETED" if returncode == 0 else "FAILED"
                if returncode != 0:
                    task.reason = f"exit status {task.exit_code}"
            job.pid = job.proc_start = job.current_task = None
            return job.status != "CANCELLED"

    def _finish(self, job_id: str) -> None:
        with self.state.locked(job_id) as job:
            if job is None:
                return
            job.pid = job.proc_start = job.current_task = None
            job.ended_at = job.ended_at or _now()
            if job.status != "CANCELLED":
                job.status, job.exit_code, job.reason = _aggregate(job)
            else:
                job.exit_code = next((t.exit_code for t in job.tasks.values() if t.exit_code), None)
            status, code = job.status, job.exit_code
        with self._lock:
            self._futures.pop(job_id, None)
        level = logging.INFO if status == "COMPLETED" else logging.WARNING
        log.log(
            level, "local job %s finished: %s%s", job_id, status, f" (exit status {code})" if code else ""
        )

    # ----------------------------------------------------------------- status

    def _owner_alive(self, job: LocalJob) -> bool:
        if job.host != self.host:
            return True  # another machine's job: we cannot tell, so believe its state file
        return process_alive(job.owner_pid, job.owner_start)

    def _reconcile(self, job_id: str) -> LocalJob | None:
        """Settle a job whose manager process ended while it was PENDING or RUNNING."""
        with self.state.locked(job_id) as job:
            if job is None or job.finished or self._owner_alive(job):
                return job
            if job.status == "RUNNING" and process_alive(job.pid, job.proc_start):
                return job  # the job outlived its manager and is still running
            gone = f"the manager process {job.owner_pid} on {job.host} ended"
            for key, task in job.tasks.items():
                if task.status == "RUNNING":
                    exit_file = self.state.exit_path(job_id, key)
                    try:
                        code = int(exit_file.read_text().strip())
                    except (OSError, ValueError):
                        task.status = "FAILED"
                        task.reason = (
                            f"exit status lost: {gone} and the job's process ended without recording it"
                        )
                    else:
                        task.exit_code = code
                        task.status = "COMPLETED" if code == 0 else "FAILED"
                        task.reason = None if code == 0 else f"exit status {code}"
                    task.ended_at = task.ended_at or _now()
                elif task.status == "PENDING":
                    task.status, task.reason = "FAILED", f"never started: {gone} before running it"
            job.status, job.exit_code, job.reason = _aggregate(job)
            job.pid = job.proc_start = job.current_task = None
            job.ended_at = job.ended_at or _now()
            log.warning("local job %s settled as %s: %s", job_id, job.status, job.reason)
            return job

    def _info(self, job_id: str) -> JobInfo:
        split = _split(job_id)
        job = self.state.load(split[0]) if split else None
        if job is not None and not job.finished and not self._owner_alive(job):
            job = self._reconcile(job.job_id)
        if job is None or split is None:
            return JobInfo(job_id, "UNKNOWN", reason="no such local job in " + str(self.state.directory))
        task_key = split[1]
        common = {
            "node": job.host,
            "req_mem_mb": job.mem_mb,
            "req_time_seconds": job.time_limit,
        }
        if task_key is not None:
            task = job.tasks.get(task_key)
            if task is None:
                return JobInfo(job_id, "UNKNOWN", reason=f"job {job.job_id} has no array task {task_key}")
            state = (
                task.status if not (job.status == "CANCELLED" and task.status == "PENDING") else "CANCELLED"
            )
            started, ended, code, reason = task.started_at, task.ended_at, task.exit_code, task.reason
        else:
            state, started, ended = job.status, job.started_at, job.ended_at
            code, reason = job.exit_code, job.reason
        elapsed = (ended or _now()) - started if started is not None else None
        return JobInfo(
            job_id,
            state,
            exit_code=code,
            start_time=_dt(started),
            end_time=_dt(ended),
            elapsed_seconds=elapsed,
            reason=reason,
            **common,
        )

    def _poll(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        return {job_id: self._info(job_id) for job_id in job_ids}

    def _jobs_for(self, batch_id: int | None) -> list[str]:
        """Without a batch: this manager's jobs. With one: every job of that batch in the state
        directory, whichever manager (or process) submitted it."""
        if batch_id is None:
            return super()._jobs_for(None)
        return [job.job_id for job in self.state.all() if job.batch_id == batch_id]

    # ----------------------------------------------------------------- cancel

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a job (or one array task): it ends CANCELLED and its whole process group is ended.

        True when it is not running any more (also when it had already finished);
        False for an id no local job has.
        """
        split = _split(str(job_id))
        if split is None:
            log.warning("cancel: %r is not a local job id", job_id)
            return False
        base, task_key = split
        pgid = None
        with self.state.locked(base) as job:
            if job is None or (task_key is not None and task_key not in job.tasks):
                log.warning("cancel: no local job %s in %s", job_id, self.state.directory)
                return False
            if job.finished:
                return True
            targets = [task_key] if task_key is not None else list(job.tasks)
            for key in targets:
                task = job.tasks[key]
                if STATES[task.status].phase.finished:
                    continue
                if task.status == "RUNNING" and job.current_task == key and job.pid:
                    pgid = job.pid
                task.status, task.reason = "CANCELLED", "cancelled by user"
                task.ended_at = _now()
            if task_key is None:
                job.status, job.reason, job.ended_at = "CANCELLED", "cancelled by user", _now()
            elif not any(not STATES[t.status].phase.finished for t in job.tasks.values()):
                job.status, job.exit_code, job.reason = _aggregate(job)
                job.ended_at = _now()
            if pgid is None and not self._owner_alive(job):
                job.pid = job.current_task = None
        log.info("cancelled local job %s%s", job_id, f" (ending process group {pgid})" if pgid else "")
        if pgid is not None:
            kill_group(pgid, self.kill_wait)
        return True


__all__ = ["DEFAULT_STATE_DIR", "LocalJob", "LocalJobManager", "StateStore", "TaskState"]
