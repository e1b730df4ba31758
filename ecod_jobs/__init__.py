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
from .models import Job, JobItem

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "ECODError",
    "Job",
    "JobError",
    "JobExecutionError",
    "JobItem",
    "JobSubmissionError",
    "ValidationError",
    "__version__",
    "load_config",
]
