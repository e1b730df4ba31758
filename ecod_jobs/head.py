"""A run's head outside the login shell: ``ecod-jobs run --detach``.

A batch runs for days; login nodes kill long processes and curators log out.
``run_batch(..., detach=True)`` checks everything a run checks before it starts,
then starts the head (``python -m ecod_jobs.head SPEC``, which runs the same
``run_batch`` in the foreground with the run id chosen here) and returns:

- **SLURM profile:** the head is its own SLURM job (``slurm.head_*`` keys: a long
  time limit, one core, little memory). The head strips the job's ``SLURM_*``
  variables from the workflow's environment, so the chunk jobs it submits do not
  inherit its allocation (the SLURM plugin does the same, with a warning).
- **Local profile:** a daemon: forked twice, in a session of its own, with no
  terminal, its output in the head log.

The head is recorded in ``ecod_jobs_head`` before it starts (a head job may wait in
the queue): ``status`` shows where it runs, ``cancel`` stops it, and a head that
died (scancel, node failure, time limit) is settled by the next run as any dead run
is. The lease and heartbeat are the run's own, as in the foreground.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psycopg2 import sql

from . import slurm_commands
from .config import memory_to_mb, seconds_to_time, time_to_seconds
from .db import Database
from .exceptions import ConfigurationError, ECODError, JobSubmissionError
from .processes import pid_alive

HEAD_DEFAULTS = {"head_time": "7-00:00:00", "head_memory": "2G", "head_cpus": 1}
HEAD_JOB_ENV = "ECOD_JOBS_HEAD_JOB"  # the head's SLURM job id, in the workflow's environment
# Head.state() of a head that is queued or running: it may still start (or be) its run
LIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "running")


@dataclass(frozen=True)
class HeadSpec:
    """What the head runs: ``run_batch``'s arguments, and the run id chosen at launch."""

    run_id: str
    batch_id: int
    profile: str
    job_type: str | None
    retry_failed: bool
    config_path: str | None
    pipeline: str | None
    stages: list[str] | None
    from_stage: str | None
    rerun: str | None
    snakemake_options: dict[str, Any]

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def read(cls, path: Path) -> HeadSpec:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class Head:
    """A detached head: where it runs and where its log is."""

    run_id: str
    batch_id: int
    job_type: str  # the run's key (job type, or pipeline.NAME)
    kind: str  # slurm | local
    log_path: Path
    slurm_job_id: str | None = None
    host: str | None = None
    pid: int | None = None
    started_at: Any = None
    ended_at: Any = None
    exit_code: int | None = None

    def where(self) -> str:
        if self.kind == "slurm":
            return f"SLURM job {self.slurm_job_id}" + (f" on {self.host}" if self.host else "")
        return f"pid {self.pid} on {self.host}"

    def state(self) -> str:
        """``ended`` (recorded), or what the scheduler or the host says now: PENDING,
        RUNNING, ..., ``gone`` (the job or process vanished without recording an end),
        ``unknown`` (a local head on another host)."""
        if self.ended_at is not None:
            return "ended"
        if self.kind == "slurm":
            try:
                entries = slurm_commands.squeue([str(self.slurm_job_id)])
            except ECODError:
                return "unknown"
            return entries[0].state if entries else "gone"
        if self.host != socket.gethostname():
            return "unknown"
        return "running" if self.pid and pid_alive(self.pid) else "gone"

    def describe(self) -> str:
        return f"head of run {self.run_id}: {self.where()}, {self.state()}; log {self.log_path}"


# --------------------------------------------------------------------------- records


_COLUMNS = (
    "run_id::text, batch_id, job_type, kind, log_path, slurm_job_id, host, pid,"
    " started_at, ended_at, exit_code"
)


def _heads(db: Database, where: str, params: Sequence[Any]) -> list[Head]:
    rows = db.query(
        sql.SQL(f"SELECT {_COLUMNS} FROM {{}} WHERE {where} ORDER BY submitted_at").format(
            db.table("ecod_jobs_head")
        ),
        tuple(params),
    )
    return [
        Head(str(r), int(b), str(t), str(k), Path(lp), sj, h, p, s, e, x)
        for r, b, t, k, lp, sj, h, p, s, e, x in rows
    ]


def open_heads(db: Database, batch_id: int) -> list[Head]:
    """The batch's detached heads with no recorded end, oldest first."""
    return _heads(db, "batch_id = %s AND ended_at IS NULL", (batch_id,))


def head_of(db: Database, run_id: str) -> Head | None:
    found = _heads(db, "run_id = %s", (run_id,))
    return found[0] if found else None


def record(db: Database, head: Head) -> None:
    db.query(
        sql.SQL(
            "INSERT INTO {} (run_id, batch_id, job_type, kind, slurm_job_id, host, pid, log_path)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(db.table("ecod_jobs_head")),
        (
            head.run_id,
            head.batch_id,
            head.job_type,
            head.kind,
            head.slurm_job_id,
            head.host,
            head.pid,
            str(head.log_path),
        ),
    )


def _mark_started(db: Database, run_id: str) -> None:
    db.query(
        sql.SQL("UPDATE {} SET started_at = now(), host = %s, pid = %s WHERE run_id = %s").format(
            db.table("ecod_jobs_head")
        ),
        (socket.gethostname(), os.getpid(), run_id),
    )


def mark_ended(db: Database, run_id: str, exit_code: int | None) -> None:
    db.query(
        sql.SQL(
            "UPDATE {} SET ended_at = now(), exit_code = coalesce(exit_code, %s)"
            " WHERE run_id = %s AND ended_at IS NULL"
        ).format(db.table("ecod_jobs_head")),
        (exit_code, run_id),
    )


# --------------------------------------------------------------------------- starting


def head_paths(work_root: str | os.PathLike[str], run_id: str) -> tuple[Path, Path]:
    """The head's spec file and log, beside the runs' Snakemake logs."""
    logs = Path(work_root).resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"head-{run_id}.json", logs / f"head-{run_id}.log"


def start_head(db: Database, config: Mapping[str, Any], spec: HeadSpec, run_key: str, on_slurm: bool) -> Head:
    """Start the head of ``spec``'s run (a SLURM job, or a local daemon) and record it."""
    spec_path, log_path = head_paths(config["pipeline"]["work_root"], spec.run_id)
    spec.write(spec_path)
    argv = [sys.executable, "-m", "ecod_jobs.head", str(spec_path)]
    if on_slurm:
        job_id = _submit(config, spec, argv, log_path)
        head = Head(spec.run_id, spec.batch_id, run_key, "slurm", log_path, slurm_job_id=job_id)
    else:
        pid = _daemonize(argv, log_path)
        here = socket.gethostname()
        head = Head(spec.run_id, spec.batch_id, run_key, "local", log_path, host=here, pid=pid)
    try:
        record(db, head)
    except Exception:
        stop([head])  # a head no one can find must not run
        raise
    return head


def head_sbatch_args(config: Mapping[str, Any], batch_id: int, log_path: Path) -> list[str]:
    """The head job's sbatch options, from ``slurm.head_*`` (README, "Running for days")."""
    slurm = {**HEAD_DEFAULTS, **(config.get("slurm") or {})}
    args = [
        f"--job-name=ecod-jobs-head-b{batch_id}",
        f"--output={log_path}",
        "--open-mode=append",
        f"--time={seconds_to_time(time_to_seconds(str(slurm['head_time'])))}",
        f"--mem={memory_to_mb(str(slurm['head_memory']))}M",
        f"--cpus-per-task={int(slurm['head_cpus'])}",
        f"--chdir={os.getcwd()}",
        "--export=ALL",
    ]
    if partition := slurm.get("head_partition", slurm.get("partition")):
        args.append(f"--partition={partition}")
    if account := slurm.get("head_account", slurm.get("account")):
        args.append(f"--account={account}")
    import shlex

    return args + shlex.split(str(slurm.get("head_extra") or ""))


def _submit(config: Mapping[str, Any], spec: HeadSpec, argv: list[str], log_path: Path) -> str:
    script = log_path.with_suffix(".sh")
    script.write_text(f"#!/bin/bash\n# the head of an ecod-jobs run (run --detach)\nexec {_shell(argv)}\n")
    try:
        return slurm_commands.sbatch(script, head_sbatch_args(config, spec.batch_id, log_path))
    except JobSubmissionError as exc:
        raise ConfigurationError(f"could not submit the run's head job: {exc}") from None


def _shell(argv: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def _daemonize(argv: list[str], log_path: Path) -> int:
    """Start ``argv`` as a daemon (``--fork``: it forks once more and prints the pid of the
    process that goes on); returns that pid. Nobody waits for the daemon, so it must not
    be our child: a child nobody reaps stays a zombie while the caller lives."""
    proc = subprocess.run(
        [*argv, "--fork", "--log", str(log_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise ConfigurationError(
            f"could not start the run's head: {proc.stderr.strip() or proc.stdout.strip() or proc.returncode}"
        )
    return int(proc.stdout.strip())


def _fork_away(log_path: Path) -> None:
    """Become a daemon: fork (the parent prints the child's pid and exits), a new
    session, stdin from /dev/null, stdout and stderr to the head log."""
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's stdout
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


# --------------------------------------------------------------------------- stopping


def stop(heads: Sequence[Head], wait: float = 60) -> list[str]:
    """Stop heads that may still run (a SLURM head is cancelled, a local one gets SIGTERM,
    then SIGKILL); returns what was done. A head stopped this way stops its workflow as
    Ctrl-C does and settles its run; the caller settles whatever is left."""
    done: list[str] = []
    jobs = [h.slurm_job_id for h in heads if h.kind == "slurm" and h.slurm_job_id]
    if jobs:
        slurm_commands.cancel_and_wait([str(j) for j in jobs])
        done += [f"cancelled head job {j}" for j in jobs]
    here = socket.gethostname()
    for head in heads:
        if head.kind != "local" or head.host != here or not head.pid or not pid_alive(head.pid):
            continue
        os.kill(head.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while pid_alive(head.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(head.pid):
            os.kill(head.pid, signal.SIGKILL)
        done.append(f"stopped head pid {head.pid}")
    return done


# --------------------------------------------------------------------------- the head itself


def _workflow_environment() -> None:
    """Inside a SLURM head job: the chunk jobs must not inherit its allocation."""
    if job := os.environ.get("SLURM_JOB_ID"):
        clean = slurm_commands.submission_environ()
        os.environ.clear()
        os.environ.update(clean)
        os.environ[HEAD_JOB_ENV] = job


def run_head(spec: HeadSpec) -> int:
    """Run the run in the foreground, as ``ecod-jobs run`` does; returns its exit code."""
    from .cli import print_run_result
    from .config import load_config
    from .exceptions import USAGE_ERRORS
    from .launch import run_batch
    from .progress import ProgressView

    _workflow_environment()
    config = load_config(spec.config_path)
    db = Database(config)
    where = f"{socket.gethostname()}, pid {os.getpid()}"
    print(f"ecod-jobs: head of run {spec.run_id} (batch {spec.batch_id}) on {where}", flush=True)
    _mark_started(db, spec.run_id)
    code = 1
    # not a terminal: plain progress lines in the head's log, as ecod-jobs run writes them
    view = ProgressView(sys.stdout)
    try:
        result = run_batch(
            spec.batch_id,
            profile=spec.profile,
            job_type=spec.job_type,
            retry_failed=spec.retry_failed,
            config_path=spec.config_path,
            pipeline=spec.pipeline,
            stages=spec.stages,
            from_stage=spec.from_stage,
            rerun=spec.rerun,
            run_id=spec.run_id,
            head=True,
            progress=view.update,
            **spec.snakemake_options,
        )
        view.close()
        code = print_run_result(result, spec.batch_id, spec.retry_failed)
    except ECODError as exc:
        print(f"ecod-jobs: error: {exc}", file=sys.stderr)
        code = 2 if isinstance(exc, USAGE_ERRORS) else 1
    except KeyboardInterrupt as exc:  # SIGTERM: scancel of this job, its time limit, cancel
        print(f"ecod-jobs: head interrupted{f' by {exc}' if str(exc) else ''}", file=sys.stderr)
        code = 128 + int(getattr(exc, "signum", 2))
    finally:
        view.close()
        try:
            mark_ended(db, spec.run_id, code)
        except ECODError as exc:
            print(f"ecod-jobs: could not record the head's end: {exc}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the head of a detached ecod-jobs run")
    parser.add_argument("spec", type=Path)
    parser.add_argument("--fork", action="store_true", help="become a daemon first (local heads)")
    parser.add_argument("--log", type=Path, help="with --fork: the head's log")
    args = parser.parse_args(argv)
    if args.fork:
        _fork_away(args.log)
    return run_head(HeadSpec.read(args.spec))


if __name__ == "__main__":
    sys.exit(main())
