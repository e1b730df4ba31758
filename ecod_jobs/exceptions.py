"""Exception hierarchy, compatible with the original ``ecod.exceptions``.

Every error carries a human message and optional ``details`` (a dict) so that
callers can log structured context without parsing strings.
"""

from __future__ import annotations

from typing import Any


class ECODError(Exception):
    """Root of every ecod-jobs error."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ECODError):
    """The configuration (file, environment or overrides) is invalid."""


class ValidationError(ECODError):
    """User input other than configuration (items file, arguments) is invalid."""


class DatabaseError(ECODError):
    """PostgreSQL could not be reached or a statement failed."""


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL could not be reached at all (wrong host, down, bad credentials)."""


class RecordIncompleteError(DatabaseError):
    """A run's work ended but PostgreSQL was away: ``ecod-jobs sync`` completes the record."""


class RunConflictError(ValidationError):
    """Another live run holds the batch and job type (its lease has not expired)."""


class JobError(ECODError):
    """Base for job-related errors."""


class JobSubmissionError(JobError):
    """The scheduler refused the job, or could not be asked."""


class JobExecutionError(JobError):
    """A job ran but its execution failed or could not be observed."""


# Errors that are the user's to fix (input, configuration, where the database is):
# the CLI exits 2 for these, 1 for everything else.
USAGE_ERRORS: tuple[type[ECODError], ...] = (
    ConfigurationError,
    ValidationError,
    DatabaseUnavailableError,
)

__all__ = [
    "USAGE_ERRORS",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "ECODError",
    "JobError",
    "JobExecutionError",
    "JobSubmissionError",
    "RecordIncompleteError",
    "RunConflictError",
    "ValidationError",
]
