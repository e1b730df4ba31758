"""SlurmJobManager: sbatch, squeue + sacct, scancel (via :mod:`ecod_jobs.slurm_commands`).

What differs from the base is only how to submit, poll and cancel. Status of
many jobs is one squeue call plus at most one sacct call, mapped through the
single state table, so ``CANCELLED by 0`` is CANCELLED and TIMEOUT or
OUT_OF_MEMORY are failures. Without a database, :meth:`check_all_jobs` counts
the jobs this instance submitted (per ``batch_id`` given to ``submit_job``),
never the whole queue; the DatabaseJobManager scopes by its ``job`` table.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from .. import slurm_commands
from ..exceptions import ConfigurationError
from ..slurm_commands import SacctRecord, SlurmEnvironment
from ..states import STATES, Phase
from .base import ConfigLike, JobInfo, JobManager, script_file

log = logging.getLogger(__name__)


def _datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _exit_status(record: SacctRecord | None) -> int | None:
    """The exit status as a shell reports it: a job killed by signal N is 128+N."""
    if record is None:
        return None
    if record.exit_code == 0 and record.signal:
        return 128 + record.signal
    if record.exit_code == 0 and record.phase is Phase.FAILED:
        return None  # e.g. TIMEOUT or CANCELLED report 0:0: no exit status to speak of
    return record.exit_code


def info_from(job_id: str, state: str, record: SacctRecord | None) -> JobInfo:
    """A JobInfo from a polled state and, when sacct answered, its record."""
    reason = None
    phase = STATES[state].phase
    if phase is Phase.FAILED:
        reason = STATES[state].description
        if record is not None and record.raw_state and record.raw_state != state:
            reason = f"{record.raw_state}: {reason}"
        if record is not None and (record.exit_code or record.signal):
            reason += f" (ExitCode {record.exit_code}:{record.signal or 0})"
    elif phase is Phase.UNKNOWN:
        reason = "neither squeue nor sacct knows this job (finished long ago without accounting?)"
    if record is None:
        return JobInfo(job_id, state, reason=reason)
    return JobInfo(
        job_id,
        state,
        exit_code=_exit_status(record) if phase.finished else None,
        node=record.node,
        start_time=_datetime(record.start),
        end_time=_datetime(record.end),
        elapsed_seconds=record.elapsed_seconds,
        cpu_seconds=record.cpu_seconds,
        max_rss_kb=record.max_rss_kb,
        req_mem_mb=record.req_mem_mb,
        req_time_seconds=record.timelimit_seconds,
        reason=reason,
    )


class SlurmJobManager(JobManager):
    """Submits job scripts to SLURM; needs sbatch, squeue, scancel (and sacct for exit codes)."""

    backend = "slurm"

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        slurm = self.config.get("slurm") or {}
        try:
            self.extra_args: list[str] = shlex.split(slurm.get("extra") or "")
        except ValueError as exc:
            raise ConfigurationError(f"slurm.extra {slurm.get('extra')!r}: {exc}") from None
        self.environment = SlurmEnvironment.from_environ()

    def submit_job(self, script_path: str | os.PathLike[str], batch_id: int | None = None) -> str:
        script = script_file(script_path)
        comment = ["ecod_jobs"]
        if batch_id is not None:
            comment.append(f"batch={batch_id}")
        if self.environment.job_id:
            comment.append(f"parent={self.environment.job_id}")
        job_id = slurm_commands.sbatch(script, [*self.extra_args, f"--comment={' '.join(comment)}"])
        self._record_submission(job_id, batch_id)
        with self._lock:
            self._last_state[job_id] = "PENDING"
        log.info(
            "submitted SLURM job %s (%s%s)%s",
            job_id,
            script,
            f", batch {batch_id}" if batch_id is not None else "",
            self.environment.describe(),
        )
        return job_id

    def _poll(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        snapshot = slurm_commands.poll(job_ids)
        infos = {}
        for job_id in job_ids:
            state, record = snapshot.states.get(job_id, "UNKNOWN"), snapshot.records.get(job_id)
            info = info_from(job_id, state, record)
            if record is None and snapshot.accounting and STATES[state].phase.finished:
                info = replace(info, complete=False)  # sacct has not caught up with squeue yet
            infos[job_id] = info
        return infos

    def cancel_job(self, job_id: str) -> bool:
        """scancel; True also for a job that had already finished or was forgotten."""
        slurm_commands.scancel([str(job_id)])
        log.info("cancelled SLURM job %s%s", job_id, self.environment.describe())
        return True


__all__ = ["SlurmJobManager", "info_from"]
