"""The SLURM command-line layer: every sbatch, squeue, sacct, scancel and scontrol call.

Shared by the SlurmJobManager, the ecod-slurm executor plugin (array submission
and throttles), recovery and cancel (finding a run's jobs by name, waiting for
a cancel to land) and sync (sacct detail), so nothing here knows about
managers or the database. Every state goes through
:func:`ecod_jobs.states.normalize_state`.

Polling follows what SLURM can answer:

* ``squeue`` knows every job the controller still holds (live jobs, and
  finished ones for ``MinJobAge`` seconds) and needs no accounting;
* ``sacct`` knows finished jobs with their exit code, node and usage, but only
  when accounting (slurmdbd) is enabled, and it lags the controller by a moment.

:func:`poll` makes ONE squeue call for all ids and ONE sacct call for the ids
squeue did not know or saw finished (for their exit codes). A job neither
knows is ``UNKNOWN``, never assumed completed.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .exceptions import JobError, JobExecutionError, JobSubmissionError
from .states import STATES, Phase, normalize_state, phase_of

log = logging.getLogger(__name__)

COMMANDS = ("sbatch", "squeue", "sacct", "scancel")
DEFAULT_TIMEOUT = 120.0  # seconds for one SLURM command; a busy controller can be slow

# squeue: display id (123 or 123_4), state, raw id, array job id, array task id
# (N/A for plain jobs). -r lists pending array tasks one per line.
SQUEUE_FORMAT = "%i|%T|%A|%F|%K"
# MaxRSS lives on the step lines (123.batch); the rest on the job line.
SACCT_FIELDS = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "NodeList",
    "ElapsedRaw",
    "TotalCPU",
    "MaxRSS",
    "ReqMem",
    "TimelimitRaw",
    "Start",
    "End",
)
_ACCOUNTING_DISABLED = "accounting storage is disabled"
_INVALID_JOB_ID = "invalid job id"
# Values beyond these are accounting garbage (seen while slurmdbd catches up),
# and would overflow the database's INTEGER columns.
_MAX_MB = 2**31 - 1
_MAX_KB = 2**62


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class SlurmEnvironment:
    """What SLURM tells a process running inside a job (all None outside one)."""

    job_id: str | None = None
    submit_dir: str | None = None
    cluster_name: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SlurmEnvironment:
        env = os.environ if environ is None else environ
        return cls(
            job_id=env.get("SLURM_JOB_ID") or None,
            submit_dir=env.get("SLURM_SUBMIT_DIR") or None,
            cluster_name=env.get("SLURM_CLUSTER_NAME") or None,
        )

    @property
    def inside_job(self) -> bool:
        return self.job_id is not None

    def describe(self) -> str:
        """For log records: ' on cluster X from inside SLURM job N (submitted from DIR)' (or '')."""
        parts = []
        if self.cluster_name:
            parts.append(f"on cluster {self.cluster_name}")
        if self.job_id:
            parts.append(f"from inside SLURM job {self.job_id}")
            if self.submit_dir:
                parts.append(f"(submitted from {self.submit_dir})")
        return (" " + " ".join(parts)) if parts else ""


# The parent job's allocation variables must not leak into a job submitted from
# inside it (sbatch exports the environment; srun in the child would read e.g.
# SLURM_MEM_PER_CPU and SLURM_CPUS_PER_TASK as its own requests).
_KEEP_SLURM_VARS = frozenset({"SLURM_CONF", "SLURM_CLUSTERS", "SLURM_TIME_FORMAT"})


def submission_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for sbatch: the caller's, minus an enclosing job's SLURM_* variables."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("SLURM_JOB_ID"):
        return env
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k in _KEEP_SLURM_VARS}


# --------------------------------------------------------------------------- running commands


def require(cmd: str) -> str:
    """Absolute path of a SLURM command; ``JobSubmissionError`` naming it when missing."""
    path = shutil.which(cmd)
    if path is None:
        raise JobSubmissionError(
            f"SLURM command {cmd!r} not found in PATH: is SLURM installed and this a submit host? "
            "(use job_manager.type: local to run jobs on this machine)",
            {"command": cmd, "path": os.environ.get("PATH", "")},
        )
    return path


def available(cmd: str) -> bool:
    return shutil.which(cmd) is not None


def _run(
    argv: Sequence[str],
    *,
    error: type[JobError] = JobExecutionError,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    exe = require(argv[0])
    try:
        return subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise error(
            f"{argv[0]} did not answer within {timeout:.0f} s (is slurmctld up?)",
            {"command": list(argv)},
        ) from None
    except OSError as exc:
        raise error(f"cannot run {argv[0]}: {exc}", {"command": list(argv)}) from None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def sbatch(
    script: str | os.PathLike[str],
    extra_args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> str:
    """Submit a batch script; returns the job id (``'123'``, for arrays the array's id).

    Raises ``JobSubmissionError`` with sbatch's own message when refused.
    """
    argv = ["sbatch", "--parsable", *extra_args, str(script)]
    result = _run(argv, error=JobSubmissionError, env=submission_environ(env), cwd=cwd)
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}"
        raise JobSubmissionError(
            f"sbatch refused {script}: {message}",
            {"script": str(script), "returncode": result.returncode, "stderr": result.stderr.strip()},
        )
    # --parsable prints "jobid" or "jobid;cluster"; warnings may precede it on stdout.
    line = _first_line(result.stdout)
    job_id = line.split(";", 1)[0].strip()
    if not re.fullmatch(r"[0-9]+", job_id):
        raise JobSubmissionError(
            f"sbatch accepted {script} but printed no job id: {result.stdout.strip()!r}",
            {"script": str(script), "stdout": result.stdout},
        )
    return job_id


def scancel(job_ids: Iterable[str], *, signal: str | None = None) -> None:
    """Cancel jobs (one scancel call); jobs already finished or gone are not an error."""
    ids = _unique(job_ids)
    if not ids:
        return
    argv = ["scancel", *([f"--signal={signal}"] if signal else []), *ids]
    result = _run(argv, error=JobExecutionError)
    if result.returncode != 0:
        # scancel fails for ids the controller forgot or that already finished: the
        # goal (the job is not running) holds, so only other errors count.
        problems = [
            line
            for line in result.stderr.splitlines()
            if line.strip()
            and _INVALID_JOB_ID not in line.lower()
            and "already completing or completed" not in line.lower()
        ]
        if problems:
            raise JobExecutionError(
                f"scancel failed: {problems[0].strip()}", {"job_ids": ids, "stderr": result.stderr}
            )


def submit_array_script(sbatch_call: str, script: str) -> str:
    """Run an ``sbatch`` command line built by the SLURM plugin (shell syntax, ending in
    ``/dev/stdin``) with ``script`` on its standard input; returns its standard output.
    Raises ``JobSubmissionError`` with sbatch's message when refused."""
    try:
        proc = subprocess.run(
            sbatch_call, shell=True, input=script, text=True, capture_output=True, timeout=DEFAULT_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JobSubmissionError(f"sbatch failed: {exc} ({sbatch_call})", {"command": sbatch_call}) from None
    if proc.returncode != 0:
        raise JobSubmissionError(
            f"sbatch exited {proc.returncode}: {proc.stderr.strip()} ({sbatch_call})",
            {"command": sbatch_call, "stderr": proc.stderr},
        )
    return proc.stdout


def _scontrol(args: Sequence[str]) -> str | None:
    """Run one scontrol command; None on success, else what went wrong."""
    command = ["scontrol", *args]
    try:
        done = _run(command)
    except JobError as exc:
        return f"{shlex.join(command)} failed: {exc}"
    return None if done.returncode == 0 else f"{shlex.join(command)} failed: {done.stderr.strip()}"


def set_array_throttle(array_id: str, throttle: int, *, release: bool = False) -> str | None:
    """At most ``throttle`` of the array's tasks running at once (and release it from
    ``--hold`` when asked). None on success, else what SLURM refused."""
    failed = _scontrol(["update", f"JobId={array_id}", f"ArrayTaskThrottle={throttle}"])
    if failed is None and release:
        failed = _scontrol(["release", array_id])
    return failed


def jobs_named(prefix: str) -> list[str]:
    """Ids of this user's queued and running jobs whose name starts with ``prefix``. A
    pending array's tasks are listed as one entry (``123_[4-9%2]``), which scancel does not
    take: its array id (``123``) stands for them."""
    if not available("squeue"):
        return []
    try:
        out = _run(["squeue", "--me", "-h", "-o", "%i|%j"]).stdout
    except JobError as exc:
        log.warning("cannot list jobs named %s*: %s", prefix, exc)
        return []
    return sorted(
        {
            job_id.split("_")[0] if "[" in job_id else job_id
            for job_id, _, name in (line.partition("|") for line in out.splitlines())
            if name.startswith(prefix)
        }
    )


def cancel_and_wait(job_ids: Sequence[str]) -> list[str]:
    """scancel the jobs and wait until squeue lists none of them; returns the ids cancelled
    (none when there is nothing to cancel, or no scancel on this host)."""
    if not job_ids or not available("scancel"):
        return []
    scancel(job_ids)
    wait_gone(job_ids)
    return list(job_ids)


def wait_gone(job_ids: Sequence[str], timeout: float = 120) -> bool:
    """Wait until squeue lists none of the jobs (or their arrays) as pending, running,
    completing or suspended: scancel is asynchronous. False if some are still listed."""
    bases = {j.split("_")[0] for j in job_ids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out = _run(["squeue", "--me", "-h", "-t", "PD,R,CG,CF,S", "-o", "%i"]).stdout
        except JobError as exc:
            log.warning("cannot tell whether jobs %s are gone: %s", list(job_ids), exc)
            return False
        if not any(line.split("_")[0] in bases for line in out.split()):
            return True
        time.sleep(1)
    log.warning("cancelled jobs %s still listed by squeue after %.0f s", list(job_ids), timeout)
    return False


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class QueueEntry:
    """One line of ``squeue -o %i|%T|%A|%F|%K``."""

    job_id: str  # as displayed: 123 or 123_4
    state: str  # normalized
    raw_id: str  # the task's own job id
    array_job_id: str | None  # 123 for array tasks, None otherwise
    array_task_id: str | None


def _na(value: str) -> str | None:
    value = value.strip()
    return None if value in {"", "N/A", "(null)"} else value


def parse_squeue(text: str) -> list[QueueEntry]:
    """Parse ``squeue -h -r -o '%i|%T|%A|%F|%K'`` output; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        parts += [""] * (5 - len(parts))
        job_id, state, raw, array_job, task = (p.strip() for p in parts[:5])
        entries.append(
            QueueEntry(
                job_id=job_id,
                state=normalize_state(state),
                raw_id=raw or job_id,
                array_job_id=_na(array_job) if _na(task) else None,
                array_task_id=_na(task),
            )
        )
    return entries


@dataclass(frozen=True)
class SacctRecord:
    """A finished (or known) job or array task from sacct, its steps folded in."""

    job_id: str  # 123 or 123_4 (array task) or 123_[5-9] (pending array tasks)
    state: str  # normalized: 'CANCELLED by 0' -> CANCELLED
    exit_code: int | None = None
    signal: int | None = None
    node: str | None = None
    elapsed_seconds: int | None = None
    cpu_seconds: float | None = None
    max_rss_kb: int | None = None  # the largest over the job's steps
    req_mem_mb: int | None = None
    timelimit_seconds: int | None = None
    start: str | None = None  # ISO 8601 local time as sacct prints it
    end: str | None = None
    raw_id: str | None = None
    raw_state: str | None = None  # exactly as sacct printed it

    @property
    def phase(self) -> Phase:
        return phase_of(self.state)

    @property
    def array_job_id(self) -> str | None:
        return self.job_id.split("_", 1)[0] if "_" in self.job_id else None


def _int(value: str) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        return None


def parse_duration(value: str) -> float | None:
    """sacct durations: ``MM:SS.mmm``, ``HH:MM:SS``, ``D-HH:MM:SS`` -> seconds."""
    value = value.strip()
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", value)
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTP]?)[nc]?$", re.IGNORECASE)
_KB_PER_UNIT = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024**2, "T": 1024**3, "P": 1024**4}


def parse_size_kb(value: str) -> int | None:
    """``'66140K'``, ``'4Gn'``, ``'1.5G'`` -> KiB; empty or garbage -> None (bare numbers are bytes)."""
    match = _SIZE_RE.match(value.strip())
    if not match:
        return None
    number, unit = match.groups()
    kb = round(float(number) * _KB_PER_UNIT[unit.upper()])
    return kb if 0 <= kb <= _MAX_KB else None


def parse_exit_code(value: str) -> tuple[int | None, int | None]:
    """sacct's ``ExitCode`` ``'3:0'`` -> (3, 0): exit status and the signal that ended it."""
    code, _, sig = value.strip().partition(":")
    return _int(code), _int(sig) if sig else None


def _timestamp(value: str) -> str | None:
    value = value.strip()
    return None if value in {"", "Unknown", "None"} else value


def _timelimit_seconds(value: str) -> int | None:
    minutes = _int(value)  # TimelimitRaw is minutes; UNLIMITED / Partition_Limit -> None
    return minutes * 60 if minutes is not None else None


def parse_sacct(text: str, fields: Sequence[str] = SACCT_FIELDS) -> dict[str, SacctRecord]:
    """Parse ``sacct -P -n --units=K -o <fields>``; steps (``123.batch``) fold into their job."""
    names = [f.lower() for f in fields]
    jobs: dict[str, SacctRecord] = {}
    step_rss: dict[str, int] = {}
    step_cpu: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) < len(names):
            continue
        row = dict(zip(names, values, strict=False))
        job_id = row.get("jobid", "").strip()
        if not job_id:
            continue
        rss = parse_size_kb(row.get("maxrss", ""))
        cpu = parse_duration(row.get("totalcpu", ""))
        if "." in job_id:  # a step: 123.batch, 123_4.extern, 123.0
            parent = job_id.split(".", 1)[0]
            if rss is not None:
                step_rss[parent] = max(step_rss.get(parent, 0), rss)
            if cpu is not None:
                step_cpu[parent] = step_cpu.get(parent, 0.0) + cpu
            continue
        exit_code, signal = parse_exit_code(row.get("exitcode", ""))
        req_kb = parse_size_kb(row.get("reqmem", ""))
        req_mb = round(req_kb / 1024) if req_kb is not None else None
        node = _na(row.get("nodelist", ""))
        raw_state = row.get("state", "").strip()
        jobs[job_id] = SacctRecord(
            job_id=job_id,
            state=normalize_state(raw_state),
            exit_code=exit_code,
            signal=signal,
            node=None if node in {"None assigned"} else node,
            elapsed_seconds=_int(row.get("elapsedraw", "")),
            cpu_seconds=cpu,
            max_rss_kb=rss,
            req_mem_mb=req_mb if req_mb is not None and req_mb <= _MAX_MB else None,
            timelimit_seconds=_timelimit_seconds(row.get("timelimitraw", "")),
            start=_timestamp(row.get("start", "")),
            end=_timestamp(row.get("end", "")),
            raw_id=_na(row.get("jobidraw", "")),
            raw_state=raw_state,
        )
    for job_id, record in list(jobs.items()):
        updates: dict[str, object] = {}
        if job_id in step_rss:
            updates["max_rss_kb"] = max(record.max_rss_kb or 0, step_rss[job_id])
        # The job line's TotalCPU already sums its steps; use the steps only when it is empty.
        if not record.cpu_seconds and step_cpu.get(job_id):
            updates["cpu_seconds"] = step_cpu[job_id]
        rss = updates.get("max_rss_kb", record.max_rss_kb)
        if _over_memory(record.state, rss, record.req_mem_mb):  # type: ignore[arg-type]
            updates["state"] = "OUT_OF_MEMORY"
        if updates:
            jobs[job_id] = replace(record, **updates)  # type: ignore[arg-type]
    return jobs


def _over_memory(state: str, max_rss_kb: int | None, req_mem_mb: int | None) -> bool:
    """A job killed by the accounting plugin's OverMemoryKill.

    Without cgroups SLURM reports such a job as FAILED (its step CANCELLED), not
    OUT_OF_MEMORY; its peak memory above the request is what tells them apart.
    """
    return (
        state in {"FAILED", "CANCELLED"}
        and max_rss_kb is not None
        and req_mem_mb is not None
        and max_rss_kb > req_mem_mb * 1024
    )


# --------------------------------------------------------------------------- queries


def _unique(job_ids: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for job_id in job_ids:
        text = str(job_id).strip()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def _squeue_ids(job_ids: Sequence[str]) -> list[str]:
    # squeue -j takes array parents (123) and tasks (123_4) alike.
    return [job_id for job_id in job_ids if re.fullmatch(r"[0-9]+(_[0-9]+)?", job_id)]


def squeue(job_ids: Sequence[str]) -> list[QueueEntry]:
    """One ``squeue`` call for the given ids (all states the controller still holds)."""
    ids = _squeue_ids(_unique(job_ids))
    if not ids:
        return []
    result = _run(["squeue", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT, "-j", ",".join(ids)])
    if result.returncode != 0:
        # A single id the controller no longer holds is an error for squeue, not an empty answer.
        if _INVALID_JOB_ID in result.stderr.lower():
            return []
        raise JobExecutionError(
            f"squeue failed: {result.stderr.strip() or result.returncode}",
            {"job_ids": ids[:20], "stderr": result.stderr},
        )
    return parse_squeue(result.stdout)


def sacct_records(job_ids: Sequence[str]) -> dict[str, SacctRecord]:
    """One ``sacct`` call; keys are job ids as sacct shows them (123, 123_4).

    Raises ``JobExecutionError`` when accounting is unavailable (see :func:`poll`
    for the fallback) or sacct fails.
    """
    ids = _unique(job_ids)
    if not ids:
        return {}
    if not available("sacct"):
        raise JobExecutionError("sacct not found in PATH", {"reason": "no-sacct"})
    argv = ["sacct", "-P", "-n", "--units=K", "-o", ",".join(SACCT_FIELDS), "-j", ",".join(ids)]
    result = _run(argv)
    if result.returncode != 0 or _ACCOUNTING_DISABLED in result.stderr.lower():
        reason = "accounting-disabled" if _ACCOUNTING_DISABLED in result.stderr.lower() else "error"
        raise JobExecutionError(
            f"sacct failed: {result.stderr.strip() or result.returncode}",
            {"reason": reason, "job_ids": ids[:20], "stderr": result.stderr},
        )
    return parse_sacct(result.stdout)


@dataclass(frozen=True)
class Snapshot:
    """The state of each asked-for id, plus sacct's record where sacct answered."""

    states: dict[str, str]
    records: dict[str, SacctRecord] = field(default_factory=dict)
    # The state each id had in squeue, when squeue knew it.
    queue: dict[str, str] = field(default_factory=dict)
    # False when sacct could not be asked (no sacct, accounting disabled).
    accounting: bool = True


def _aggregate(states: Sequence[str]) -> str:
    """One state for an array from its tasks' states: active > queued > failed > unknown > done."""
    if not states:
        return "UNKNOWN"
    by_phase: dict[Phase, list[str]] = {}
    for state in states:
        by_phase.setdefault(STATES[state].phase, []).append(state)
    for phase in (Phase.ACTIVE, Phase.QUEUED, Phase.FAILED, Phase.UNKNOWN):
        if phase in by_phase:
            return by_phase[phase][0]
    return "COMPLETED"


def _aggregate_records(array_id: str, tasks: Sequence[SacctRecord]) -> SacctRecord:
    """An array as one record: the first failed task's exit code, summed CPU, largest RSS."""
    failed = [t for t in tasks if t.phase is Phase.FAILED]
    first = (failed or list(tasks))[0]
    starts = [t.start for t in tasks if t.start]
    ends = [t.end for t in tasks if t.end]
    finished = all(t.phase.finished for t in tasks)
    return SacctRecord(
        job_id=array_id,
        state=_aggregate([t.state for t in tasks]),
        exit_code=first.exit_code,
        signal=first.signal,
        node=first.node,
        elapsed_seconds=max((t.elapsed_seconds or 0 for t in tasks), default=None),
        cpu_seconds=sum(t.cpu_seconds or 0.0 for t in tasks),
        max_rss_kb=max((t.max_rss_kb for t in tasks if t.max_rss_kb is not None), default=None),
        req_mem_mb=first.req_mem_mb,
        timelimit_seconds=first.timelimit_seconds,
        start=min(starts) if starts else None,
        end=max(ends) if ends and finished else None,
        raw_id=array_id,
        raw_state=first.raw_state,
    )


class _Index:
    """Look up states by displayed id, raw id, or array id (all of its tasks)."""

    def __init__(self) -> None:
        self.by_id: dict[str, str] = {}
        self.by_raw: dict[str, str] = {}
        self.tasks: dict[str, list[str]] = {}

    def add(self, job_id: str, raw_id: str | None, array_job_id: str | None, state: str) -> None:
        self.by_id[job_id] = state
        if raw_id:
            self.by_raw.setdefault(raw_id, state)
        if array_job_id:
            self.tasks.setdefault(array_job_id, []).append(state)

    def resolve(self, job_id: str) -> str | None:
        if job_id in self.by_id and "_" in job_id:
            return self.by_id[job_id]
        if job_id in self.tasks:  # an array's own id: all its tasks count
            return _aggregate(self.tasks[job_id])
        return self.by_id.get(job_id) or self.by_raw.get(job_id)


_JOB_ID_RE = re.compile(r"[0-9]+(_[0-9]+)?")


def poll(job_ids: Sequence[str]) -> Snapshot:
    """States of many jobs with one squeue and at most one sacct call.

    squeue answers for live jobs. Ids squeue does not hold, or holds as finished,
    go to sacct (which has exit codes and usage). The two are merged job by job
    (array task by array task): sacct's state wins when it says finished,
    otherwise squeue's stands (sacct lags the controller by a moment, or
    accounting is off). An id neither knows is ``UNKNOWN``; so are ids that are
    not SLURM job ids (``123``, ``123_4``), without asking. ``records`` holds
    sacct's record for an id only when it agrees with the state reported.
    """
    ids = _unique(job_ids)
    valid = [i for i in ids if _JOB_ID_RE.fullmatch(i)]
    states: dict[str, str] = {i: "UNKNOWN" for i in ids}
    if not valid:
        return Snapshot(states)
    queue = {entry.job_id: entry for entry in squeue(valid)}
    queue_index = _Index()
    for entry in queue.values():
        queue_index.add(entry.job_id, entry.raw_id, entry.array_job_id, entry.state)
    queue_states = {i: s for i in valid if (s := queue_index.resolve(i)) is not None}
    ask_sacct = [i for i in valid if i not in queue_states or STATES[queue_states[i]].phase.finished]
    records: dict[str, SacctRecord] = {}
    accounting = True
    if ask_sacct:
        try:
            records = sacct_records(ask_sacct)
        except JobExecutionError as exc:
            if exc.details.get("reason") == "error":
                raise
            accounting = False
            log.debug("%s: finished jobs keep squeue's state, others are UNKNOWN", exc)
    merged = _Index()
    for entry in queue.values():
        record = records.get(entry.job_id)
        state = record.state if record is not None and record.phase.finished else entry.state
        merged.add(entry.job_id, entry.raw_id, entry.array_job_id, state)
    for record in records.values():
        if record.job_id not in queue:
            merged.add(record.job_id, record.raw_id, record.array_job_id, record.state)
    found: dict[str, SacctRecord] = {}
    for job_id in valid:
        if job_id not in ask_sacct:
            states[job_id] = queue_states[job_id]  # live: squeue is the authority
            continue
        states[job_id] = merged.resolve(job_id) or "UNKNOWN"
        record = _record_for(job_id, records)
        if record is not None and record.state == states[job_id]:
            found[job_id] = record
    return Snapshot(states=states, records=found, queue=queue_states, accounting=accounting)


def _record_for(job_id: str, records: Mapping[str, SacctRecord]) -> SacctRecord | None:
    if "_" in job_id and job_id in records:
        return records[job_id]
    tasks = [r for r in records.values() if r.array_job_id == job_id]
    if tasks:
        return _aggregate_records(job_id, tasks)
    if job_id in records:
        return records[job_id]
    return next((r for r in records.values() if r.raw_id == job_id), None)


def query_states(job_ids: Sequence[str]) -> dict[str, str]:
    """``{job_id: STATE}`` for every id asked (see :func:`poll`); unknown ids are ``UNKNOWN``."""
    return poll(job_ids).states


def job_output_paths(output_dir: str | os.PathLike[str], job_name: str, job_id: str) -> tuple[Path, Path]:
    """Where a job's stdout and stderr go: ``{output_dir}/{job_name}-{job_id}.out/.err``."""
    base = Path(output_dir)
    return base / f"{job_name}-{job_id}.out", base / f"{job_name}-{job_id}.err"


__all__ = [
    "COMMANDS",
    "QueueEntry",
    "SacctRecord",
    "SlurmEnvironment",
    "Snapshot",
    "available",
    "job_output_paths",
    "parse_duration",
    "parse_exit_code",
    "parse_sacct",
    "parse_size_kb",
    "parse_squeue",
    "poll",
    "query_states",
    "require",
    "sacct_records",
    "sbatch",
    "scancel",
    "squeue",
    "submission_environ",
]
