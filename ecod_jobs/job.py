"""Compatibility with the original ``ecod.jobs.job`` module path."""

from .models import Job, JobItem

__all__ = ["Job", "JobItem"]
