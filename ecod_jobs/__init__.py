"""ecod-jobs: batch jobs for ECOD protein-domain classification.

Batches of protein chains run as Snakemake workflows on local cores or SLURM,
with every job and item tracked in PostgreSQL.

The public names below are imported on first use (PEP 562): the chunk runner,
started once per chunk on compute nodes, imports ``ecod_jobs.chunk_runner`` alone and
starts in ~30 ms instead of ~110 ms with the whole API and psycopg2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "load_config": ".config",
    "ConfigurationError": ".exceptions",
    "DatabaseError": ".exceptions",
    "ECODError": ".exceptions",
    "JobError": ".exceptions",
    "JobExecutionError": ".exceptions",
    "JobSubmissionError": ".exceptions",
    "ValidationError": ".exceptions",
    "DatabaseJobManager": ".managers",
    "JobManager": ".managers",
    "LocalJobManager": ".managers",
    "SlurmJobManager": ".managers",
    "create_job_manager": ".managers",
    "Job": ".models",
    "JobItem": ".models",
    "BatchResult": ".launch",
    "Head": ".head",
    "run_batch": ".launch",
}

__all__ = [
    "BatchResult",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseJobManager",
    "ECODError",
    "Head",
    "Job",
    "JobError",
    "JobExecutionError",
    "JobItem",
    "JobManager",
    "JobSubmissionError",
    "LocalJobManager",
    "SlurmJobManager",
    "ValidationError",
    "__version__",
    "create_job_manager",
    "load_config",
    "run_batch",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ecod-jobs")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+source"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from .config import load_config
    from .exceptions import (
        ConfigurationError,
        DatabaseError,
        ECODError,
        JobError,
        JobExecutionError,
        JobSubmissionError,
        ValidationError,
    )
    from .head import Head
    from .launch import BatchResult, run_batch
    from .managers import DatabaseJobManager, JobManager, LocalJobManager, SlurmJobManager, create_job_manager
    from .models import Job, JobItem

    __version__: str
