"""Job and JobItem: the rows of ``job`` and ``job_item`` as value objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Self


def _from_row(cls: type, row: Mapping[str, Any] | Sequence[Any], columns: Sequence[str] | None):
    """Build a dataclass from a dict-like row, or a tuple plus its column names.

    Columns the class does not know (a real ECOD database may have more) are
    ignored; missing ones take the field's default.
    """
    if isinstance(row, Mapping):
        data = dict(row)
    else:
        names = list(columns) if columns is not None else [f.name for f in fields(cls)]
        if len(names) != len(row):
            raise ValueError(f"{cls.__name__}: {len(row)} values for {len(names)} columns")
        data = dict(zip(names, row, strict=True))
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def _to_dict(obj: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(obj).items()}


@dataclass
class JobItem:
    """One item (a ``process_status`` row) within a job."""

    TABLE: ClassVar[str] = "job_item"

    id: int | None = None
    job_id: int | None = None
    process_id: int | None = None
    status: str = "pending"
    exit_code: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    elapsed_seconds: float | None = None
    error_text: str | None = None

    @classmethod
    def from_db_row(
        cls, row: Mapping[str, Any] | Sequence[Any], columns: Sequence[str] | None = None
    ) -> Self:
        return _from_row(cls, row, columns)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass
class Job:
    """One scheduler job (a chunk of a batch, or a script submitted through the API)."""

    TABLE: ClassVar[str] = "job"

    id: int | None = None
    batch_id: int | None = None
    job_type: str = "generic"
    slurm_job_id: str | None = None
    status: str = "submitted"
    items_count: int | None = None
    submission_time: datetime | None = None
    completion_time: datetime | None = None
    run_id: str | None = None
    chunk_id: str | None = None
    attempt: int | None = 1
    scheduler_state: str | None = None
    exit_code: int | None = None
    node: str | None = None
    start_time: datetime | None = None
    elapsed_seconds: float | None = None
    cpu_seconds: float | None = None
    max_rss_kb: int | None = None
    req_mem_mb: int | None = None
    req_time_seconds: int | None = None
    error_text: str | None = None
    updated_at: datetime | None = None
    items: list[JobItem] = field(default_factory=list)

    @classmethod
    def from_db_row(
        cls, row: Mapping[str, Any] | Sequence[Any], columns: Sequence[str] | None = None
    ) -> Self:
        job = _from_row(cls, row, columns)
        if job.run_id is not None:
            job.run_id = str(job.run_id)
        return job

    def to_dict(self) -> dict[str, Any]:
        data = _to_dict(self)
        data["items"] = [item.to_dict() for item in self.items]
        return data
