"""Job and JobItem value objects."""

from __future__ import annotations

from datetime import datetime

import pytest

from ecod_jobs import Job, JobItem
from ecod_jobs.job import Job as SeedPathJob


def test_from_db_row_mapping_and_tuple() -> None:
    when = datetime(2026, 11, 1, 12, 0, 0)
    job = Job.from_db_row(
        {
            "id": 7,
            "batch_id": 3,
            "job_type": "blast",
            "slurm_job_id": "55_2",
            "status": "completed",
            "items_count": 2,
            "submission_time": when,
            "a_column_ecod_has": "ignored",
        }
    )
    assert (job.id, job.job_type, job.slurm_job_id, job.submission_time) == (7, "blast", "55_2", when)
    item = JobItem.from_db_row((1, 7, 42, "failed"), ["id", "job_id", "process_id", "status"])
    assert (item.job_id, item.process_id, item.status) == (7, 42, "failed")
    with pytest.raises(ValueError, match="3 values for 4 columns"):
        JobItem.from_db_row((1, 7, 42), ["id", "job_id", "process_id", "status"])


def test_to_dict_is_json_ready() -> None:
    job = Job(
        id=1,
        batch_id=2,
        submission_time=datetime(2026, 1, 2, 3, 4, 5),
        items=[JobItem(id=9, job_id=1, process_id=5, status="completed")],
    )
    data = job.to_dict()
    assert data["submission_time"] == "2026-01-02T03:04:05"
    assert data["items"] == [
        {
            "id": 9,
            "job_id": 1,
            "process_id": 5,
            "status": "completed",
            "exit_code": None,
            "start_time": None,
            "end_time": None,
            "elapsed_seconds": None,
            "error_text": None,
        }
    ]
    assert SeedPathJob is Job
