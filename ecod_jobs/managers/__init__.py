"""Job managers: the original ``ecod.jobs`` API (JobManager and its backends).

``base`` holds the interface and what all backends share, ``script`` the job
script rendering, ``local``/``slurm`` the two schedulers, ``database`` the
PostgreSQL-tracked wrapper and ``factory`` ``create_job_manager``; the module
names follow the original package's.
"""

from .base import JobInfo, JobManager, resolve_config, tally
from .database import DatabaseJobManager
from .factory import create_job_manager
from .local import LocalJobManager
from .script import ScriptOptions
from .slurm import SlurmJobManager

__all__ = [
    "DatabaseJobManager",
    "JobInfo",
    "JobManager",
    "LocalJobManager",
    "ScriptOptions",
    "SlurmJobManager",
    "create_job_manager",
    "resolve_config",
    "tally",
]
