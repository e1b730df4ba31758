"""ecod-jobs: batch jobs for ECOD protein-domain classification.

Batches of protein chains run as Snakemake workflows on local cores or SLURM,
with every job and item tracked in PostgreSQL.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ecod-jobs")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

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
from .managers import (
    DatabaseJobManager,
    JobManager,
    LocalJobManager,
    SlurmJobManager,
    create_job_manager,
)
from .models import Job, JobItem
from .runs import BatchResult, run_batch

__all__ = [
    "BatchResult",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseJobManager",
    "ECODError",
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
