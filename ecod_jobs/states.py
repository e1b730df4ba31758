"""The one place that maps scheduler states to ecod-jobs' vocabulary.

SLURM reports states in several spellings: squeue's long (``RUNNING``) and
compact (``R``) forms, and sacct's long form which may carry a suffix
(``CANCELLED by 0``) or a truncation mark (``CANCELLED+``). The original
matched these exactly and so counted cancelled jobs as running forever; here
every spelling goes through :func:`normalize_state` first.

Database vocabularies (pyECOD's, unchanged):
  job.status            submitted | completed | failed
  job_item.status       pending | completed | failed
  process_status.status pending | processing | success | error | skipped
ecod-jobs' own:
  ecod_jobs_run.status  running | success | error | interrupted | cancelled  (:class:`RunStatus`)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where a job is in its life, independent of the scheduler."""

    QUEUED = "queued"  # waiting to start (or waiting to start again)
    ACTIVE = "active"  # started and not finished (includes suspended)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the scheduler no longer knows the job: never assume success

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


@dataclass(frozen=True)
class StateInfo:
    phase: Phase
    description: str


# Every SLURM job state (slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES)
# plus the local backend's, by canonical name.
STATES: dict[str, StateInfo] = {
    # SLURM
    "PENDING": StateInfo(Phase.QUEUED, "waiting for resources"),
    "CONFIGURING": StateInfo(Phase.ACTIVE, "allocated, nodes booting"),
    "RUNNING": StateInfo(Phase.ACTIVE, "running"),
    "COMPLETING": StateInfo(Phase.ACTIVE, "finishing; some processes still active"),
    "COMPLETED": StateInfo(Phase.SUCCEEDED, "finished with exit code 0"),
    "FAILED": StateInfo(Phase.FAILED, "finished with a non-zero exit code or signal"),
    "TIMEOUT": StateInfo(Phase.FAILED, "killed at its time limit"),
    "CANCELLED": StateInfo(Phase.FAILED, "cancelled by a user or administrator"),
    "NODE_FAIL": StateInfo(Phase.FAILED, "its node failed"),
    "OUT_OF_MEMORY": StateInfo(Phase.FAILED, "killed for exceeding its memory"),
    "PREEMPTED": StateInfo(Phase.FAILED, "preempted and not requeued"),
    "BOOT_FAIL": StateInfo(Phase.FAILED, "its node failed to boot"),
    "DEADLINE": StateInfo(Phase.FAILED, "missed its deadline"),
    "REVOKED": StateInfo(Phase.FAILED, "revoked by a federated sibling"),
    "SPECIAL_EXIT": StateInfo(Phase.FAILED, "requeued in a special exit state (held)"),
    "REQUEUED": StateInfo(Phase.QUEUED, "requeued, will run again"),
    "REQUEUE_FED": StateInfo(Phase.QUEUED, "requeued by federation"),
    "REQUEUE_HOLD": StateInfo(Phase.QUEUED, "requeued and held"),
    "RESV_DEL_HOLD": StateInfo(Phase.QUEUED, "held: its reservation was deleted"),
    "RESIZING": StateInfo(Phase.ACTIVE, "changing size"),
    "SUSPENDED": StateInfo(Phase.ACTIVE, "suspended; resumes later"),
    "STOPPED": StateInfo(Phase.ACTIVE, "stopped by signal; resumes later"),
    "SIGNALING": StateInfo(Phase.ACTIVE, "being signalled"),
    "STAGE_OUT": StateInfo(Phase.ACTIVE, "staging out"),
    "RESV_DEL": StateInfo(Phase.QUEUED, "held: its reservation was deleted"),
    # local backend (same names where the meaning is the same)
    "SUBMITTED": StateInfo(Phase.QUEUED, "accepted, not yet started"),
    # no scheduler knows the job any more
    "UNKNOWN": StateInfo(Phase.UNKNOWN, "not known to the scheduler"),
}

# squeue's compact codes (%t)
SHORT_CODES: dict[str, str] = {
    "BF": "BOOT_FAIL",
    "CA": "CANCELLED",
    "CD": "COMPLETED",
    "CF": "CONFIGURING",
    "CG": "COMPLETING",
    "DL": "DEADLINE",
    "F": "FAILED",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PD": "PENDING",
    "PR": "PREEMPTED",
    "R": "RUNNING",
    "RD": "RESV_DEL_HOLD",
    "RF": "REQUEUE_FED",
    "RH": "REQUEUE_HOLD",
    "RQ": "REQUEUED",
    "RS": "RESIZING",
    "RV": "REVOKED",
    "SI": "SIGNALING",
    "SE": "SPECIAL_EXIT",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "S": "SUSPENDED",
    "TO": "TIMEOUT",
}

# Older spellings seen in the wild.
ALIASES: dict[str, str] = {"CANCELED": "CANCELLED", "OOM": "OUT_OF_MEMORY", "QUEUED": "PENDING"}


def normalize_state(raw: str | None) -> str:
    """Canonical state name: ``'CANCELLED by 0'`` -> ``'CANCELLED'``; junk -> ``'UNKNOWN'``."""
    if not raw:
        return "UNKNOWN"
    token = raw.strip().split()[0].upper().rstrip("+") if raw.strip() else ""
    token = ALIASES.get(token, token)
    token = SHORT_CODES.get(token, token)
    return token if token in STATES else "UNKNOWN"


def phase_of(raw: str | None) -> Phase:
    return STATES[normalize_state(raw)].phase


def is_failure(raw: str | None) -> bool:
    return phase_of(raw) is Phase.FAILED


def job_status(raw: str | None) -> str:
    """Scheduler state -> ``job.status`` (submitted | completed | failed)."""
    phase = phase_of(raw)
    if phase is Phase.SUCCEEDED:
        return "completed"
    if phase is Phase.FAILED:
        return "failed"
    return "submitted"


def job_item_status(raw: str | None) -> str:
    """Scheduler state of the item's job -> ``job_item.status``."""
    return {"submitted": "pending"}.get(job_status(raw), job_status(raw))


def process_status(raw: str | None) -> str:
    """Scheduler state of the item's job -> ``process_status.status``."""
    phase = phase_of(raw)
    if phase is Phase.SUCCEEDED:
        return "success"
    if phase is Phase.FAILED:
        return "error"
    return "processing"


# process_status values that count as done (pyECOD counts skipped as done).
PROCESS_DONE = frozenset({"success", "skipped"})
PROCESS_STATUSES = ("pending", "processing", "success", "error", "skipped")
JOB_STATUSES = ("submitted", "completed", "failed")
JOB_ITEM_STATUSES = ("pending", "completed", "failed")


class RunStatus(StrEnum):
    """``ecod_jobs_run.status``: a workflow run's life. Only ``RUNNING`` is open."""

    RUNNING = "running"
    SUCCESS = "success"  # every chunk ran and no item failed
    ERROR = "error"  # the workflow failed, or some items did
    INTERRUPTED = "interrupted"  # its process died (or was stopped) before it ended; settled by another
    CANCELLED = "cancelled"  # stopped by ``ecod-jobs cancel``


class Liveness(StrEnum):
    """What :func:`ecod_jobs.run_record.liveness` says of a run."""

    ALIVE = "alive"  # still running (see run_record for the one rule)
    DEAD = "dead"  # recorded as running, but its process is gone: settle it
    ENDED = "ended"  # closed with a final RunStatus
