"""Snakemake logger plugin ``ecod-jobs``: feeds job events to ecod-jobs' live recorder.

Enabled by the profiles (``logger: [ecod-jobs]``). It only forwards events; all
database work is in :class:`ecod_jobs.workflow.LiveRecorder`, which exists only
after the workflow's ``onstart`` hook, so dry runs and runs of other workflows
are unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from snakemake_interface_logger_plugins.base import LogHandlerBase

_FORWARDED = {"job_info", "job_finished", "job_error"}


class LogHandler(LogHandlerBase):
    def emit(self, record: logging.LogRecord) -> None:
        event = str(getattr(record, "event", "") or "")
        if event not in _FORWARDED:
            return
        from ecod_jobs.workflow import LiveRecorder

        recorder = LiveRecorder.current()
        if recorder is None:
            return
        try:
            if event == "job_info":
                wildcards: Any = getattr(record, "wildcards", None) or {}
                if not isinstance(wildcards, Mapping):
                    wildcards = dict(wildcards.items()) if hasattr(wildcards, "items") else {}
                recorder.job_info(int(record.jobid), str(record.rule_name), wildcards)  # type: ignore[attr-defined]
            elif event == "job_finished":
                recorder.job_finished(int(record.job_id))  # type: ignore[attr-defined]
            else:
                recorder.job_error(int(record.jobid))  # type: ignore[attr-defined]
        except Exception:  # a logging handler must never break the workflow
            logging.getLogger("ecod_jobs.workflow").exception("live recording failed for %s", event)

    @property
    def writes_to_stream(self) -> bool:
        return False

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True  # we pick our own events; Snakemake's console filter stays on its handler

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
