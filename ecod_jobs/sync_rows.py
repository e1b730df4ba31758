"""What a run's files say, as the database rows that record it: pure functions, no I/O.

:func:`ecod_jobs.sync.record_chunks` reads each chunk's files into a
:class:`ChunkState`, turns them into named rows here, and hands those to one
writer (:func:`ecod_jobs.sync.write_rows`). Keeping the decisions here (which
status an attempt gets, what an item that never ran becomes) lets tests cover
every case from records built in memory, without a workflow or a database.

Per chunk and attempt there is one :class:`JobRow`. Every item of a chunk has
exactly one :class:`JobItemRow`: under the attempt that produced its result, or
under the last attempt while it has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple


@dataclass
class ChunkState:
    """What the files say about one chunk."""

    chunk_id: str
    attempts: dict[int, dict[str, Any]]  # attempt-N.json records, by attempt number
    results: dict[int, dict[str, Any]]  # by process_id
    finished: bool  # the final result file exists
    items: list[dict[str, Any]] = field(default_factory=list)
    misrouted: str | None = None  # a task ran another chunk than this one (its results are not ours)

    @property
    def last_attempt(self) -> int:
        return max(self.attempts, default=1)


@dataclass(frozen=True)
class RunInfo:
    """What every row of one run shares: its id and, from its plan, batch, job type and stage."""

    run_id: str
    batch_id: int
    job_type: str
    stage: str  # process_status.current_stage of an item that succeeded

    @property
    def failed_stage(self) -> str:
        return f"{self.stage}_failed"[:50]  # current_stage is VARCHAR(50)


# Named tuples rather than frozen dataclasses: a large sync makes a million
# JobItemRows, and a named tuple is made four times faster. A JobRow's fields are
# in the order of the writer's columns.


class JobRow(NamedTuple):
    """One attempt of one chunk: its ``job`` row."""

    batch_id: int
    job_type: str
    run_id: str
    chunk_id: str
    attempt: int
    status: str  # submitted | completed | failed
    items_count: int
    slurm_job_id: Any  # as the attempt record has it
    node: str | None
    start_time: datetime | None
    completion_time: datetime | None
    elapsed_seconds: float | None
    cpu_seconds: float | None
    max_rss_kb: int | None
    error_text: str | None
    exit_code: int | None


class JobItemRow(NamedTuple):
    """One item's ``job_item`` row of the run, and what its ``process_status`` row becomes."""

    process_id: int
    chunk_id: str
    attempt: int  # the attempt whose job row it belongs to
    status: str  # job_item.status: pending | completed | failed
    process_status: str | None  # None: leave process_status as it is
    stage: str | None  # process_status.current_stage; None keeps the current one
    exit_code: int | None
    start: str | None  # ISO times as the result file has them
    end: str | None
    seconds: float | None
    error: str | None  # job_item.error_text; also process_status.error_message when 'error'


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _elapsed(meta: Mapping[str, Any]) -> float | None:
    start, end = _ts(meta.get("start")), _ts(meta.get("end"))
    return round((end - start).total_seconds(), 3) if start and end else None


# --------------------------------------------------------------------------- jobs


def attempt_status(state: ChunkState, attempt: int, last_failed: bool) -> tuple[str, str | None]:
    """``job.status`` and ``job.error_text`` of one attempt of ``state``'s chunk.

    ``last_failed``: the chunk's last attempt is over without the final result
    (see :func:`chunk_rows`).
    """
    meta = state.attempts.get(attempt, {})
    last = state.last_attempt
    if state.finished and attempt == last:
        item_errors = sum(1 for r in state.results.values() if r["status"] != "success")
        return "completed", f"{item_errors} of {len(state.items)} items failed" if item_errors else None
    if meta.get("end"):
        # its runner got through every item, yet the chunk ran again: SLURM
        # marked the array task failed although it finished (plugin issue #447)
        return "completed", None
    if meta.get("error"):
        # its runner could not run the chunk at all (environment modules) and said why
        return "failed", str(meta["error"])
    if state.misrouted and (attempt == last or not meta):
        return "failed", state.misrouted
    if attempt < last or last_failed:
        return "failed", f"attempt {attempt} ended before finishing its chunk"
    return "submitted", None


def job_row(state: ChunkState, run: RunInfo, attempt: int, last_failed: bool) -> JobRow:
    """The ``job`` row of one attempt: its status, and the figures its attempt record gives."""
    meta = state.attempts.get(attempt, {})
    status, error = attempt_status(state, attempt, last_failed)
    covered = sum(1 for r in state.results.values() if r.get("attempt", 1) == attempt)
    return JobRow(
        batch_id=run.batch_id,
        job_type=run.job_type,
        run_id=run.run_id,
        chunk_id=state.chunk_id,
        attempt=attempt,
        status=status,
        # an attempt still under way, with no result yet, is counted for the whole chunk
        items_count=covered if status != "submitted" or covered else len(state.items),
        slurm_job_id=meta.get("slurm_job_id"),
        node=meta.get("node"),
        start_time=_ts(meta.get("start")),
        completion_time=_ts(meta.get("end")) if status == "completed" else None,
        elapsed_seconds=_elapsed(meta),
        cpu_seconds=meta.get("cpu_seconds"),
        max_rss_kb=meta.get("max_rss_kb"),
        error_text=error,
        exit_code=0 if status == "completed" else None,
    )


# --------------------------------------------------------------------------- items


def result_row(state: ChunkState, run: RunInfo, result: Mapping[str, Any]) -> JobItemRow:
    """An item with a result: under the attempt that produced it, settled success or error."""
    ok = result["status"] == "success"
    # positional, in the fields' order: a million per large sync, and keywords cost twice as much
    return JobItemRow(
        result["process_id"],
        state.chunk_id,
        result.get("attempt", 1),
        "completed" if ok else "failed",
        "success" if ok else "error",
        run.stage if ok else run.failed_stage,
        result.get("exit_code"),
        result.get("start"),
        result.get("end"),
        result.get("seconds"),
        result.get("error"),
    )


def unfinished_row(
    state: ChunkState, run: RunInfo, process_id: int, *, last_failed: bool, interrupted: bool
) -> JobItemRow:
    """An item without a result, under the chunk's last attempt: still pending while an
    attempt may reach it; else failed, and back to ``pending`` if the run died
    (``interrupted``: the next run picks it up again), or ``error`` if the chunk did."""
    last = state.last_attempt
    if not last_failed:
        status, process_status, stage, error = "pending", None, None, None
    elif interrupted:
        status, process_status, stage = "failed", "pending", None
        error = f"interrupted: run {run.run_id} died before this item finished"
    else:
        status, process_status, stage = "failed", "error", run.failed_stage
        reason = state.misrouted or state.attempts.get(last, {}).get("error")
        error = (
            f"not run: {reason}"
            if reason
            else f"not run: chunk {state.chunk_id} attempt {last} ended before reaching this item"
        )
    return JobItemRow(
        process_id=process_id,
        chunk_id=state.chunk_id,
        attempt=last,
        status=status,
        process_status=process_status,
        stage=stage,
        exit_code=None,
        start=None,
        end=None,
        seconds=None,
        error=error,
    )


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class ChunkRows:
    """The rows that record one chunk: a job row per attempt, a job item row per item.

    Item rows are made as they are taken (:meth:`item_rows`), not kept: a large
    sync has a million, and a million tuple subclasses held at once cost the
    garbage collector more than making them (it never untracks them, as it does
    plain tuples of numbers and strings).
    """

    state: ChunkState
    run: RunInfo
    last_failed: bool  # the last attempt is over without the chunk's final result
    interrupted: bool  # the run died: items not reached go back to pending

    def job_rows(self) -> list[JobRow]:
        attempts = sorted(set(self.state.attempts) | {self.state.last_attempt})
        return [job_row(self.state, self.run, a, self.last_failed) for a in attempts]

    def item_rows(self) -> Iterator[JobItemRow]:
        state, run = self.state, self.run
        for item in state.items:
            result = state.results.get(item["process_id"])
            if result is not None:
                yield result_row(state, run, result)
            else:
                yield unfinished_row(
                    state, run, item["process_id"], last_failed=self.last_failed, interrupted=self.interrupted
                )

    @property
    def settled(self) -> int:
        """Items :meth:`item_rows` gives a final status (success or error), counted without
        making the rows: those with a result, and the rest once the chunk failed (not when
        the run died: they go back to pending)."""
        if self.last_failed and not self.interrupted:
            return len(self.state.items)
        return sum(1 for item in self.state.items if item["process_id"] in self.state.results)


def chunk_rows(
    state: ChunkState,
    run: RunInfo,
    *,
    run_over: bool,
    reported_failed: bool = False,
    interrupted: bool = False,
) -> ChunkRows:
    """The rows that record ``state``'s chunk.

    ``run_over``: no attempt is still running. ``reported_failed``: Snakemake
    reported the chunk's latest attempt failed. Either way, without its final
    result the chunk's last attempt has failed. ``interrupted``: the run died,
    so items it never reached go back to ``pending`` instead of ``error``.
    """
    last_failed = not state.finished and (run_over or reported_failed)
    return ChunkRows(state, run, last_failed, interrupted)


def rows_for_chunks(
    states: Iterable[ChunkState],
    run: RunInfo,
    *,
    run_over: bool,
    failed_chunks: Iterable[str] = (),
    interrupted: bool = False,
) -> list[ChunkRows]:
    """:func:`chunk_rows` of every chunk (``failed_chunks``: those Snakemake reported failed)."""
    failed = set(failed_chunks)
    return [
        chunk_rows(
            state, run, run_over=run_over, reported_failed=state.chunk_id in failed, interrupted=interrupted
        )
        for state in states
    ]
