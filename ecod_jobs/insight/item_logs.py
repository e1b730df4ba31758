"""One item's attempts and what each said: ``ecod-jobs logs`` and the dashboard's item page.

:func:`item_log` finds the item's attempts from the database (its ``job_item`` rows, one
per run and stage, each with its chunk's ``job`` row and its run), then each attempt in
its run's files: the chunk's result record gives the command, exit code, error, node,
SLURM id and times, and (``record["log"]``) where its stdout and stderr lie in the chunk
log, which :func:`read_stream` then reads by seeking to those bytes alone. A few queries
and one chunk's records per run: never a scan of the batch.

Attempts a chunk's retry cut short (the chunk was killed while the item ran, so no
record) are the stretches of the chunk log that no record covers: each begins with the
runner's ``### item PID TIME: COMMAND`` header. Records written before the runner kept
``command`` and ``log`` are read the same way, from the header, and their stderr from the
record's ``stderr_tail``.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from psycopg2 import sql

from ..chunk_runner import STDERR_TAIL, item_command, item_outputs
from ..db import Database, require_batch
from ..exceptions import ValidationError
from ..layout import BatchLayout, RunLayout, read_jsonl
from ..plan import resolve_item_path
from ..plan_file import Plan

TAIL_LINES = 40  # lines of each stream shown unless told otherwise
TAIL_BYTES = 256 * 1024  # read from a stream's end for its tail: long lines are cut to this
PIPELINE_PREFIX = "pipeline."  # a pipeline run's ecod_jobs_run.job_type
# The runner's header line (chunk_runner.run_item); the time's shape keeps a "### item"
# in some command's own output from passing for one.
HEADER_RE = re.compile(rb"### item ([0-9]+) ([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(?:[+-][0-9:]+|Z)?): ")
# Names that become path parts: anything else in a database row is not followed to a file.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ItemNotFound(ValidationError):
    """The batch, item, stage or attempt asked for does not exist (exit 2; HTTP 404)."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Stream:
    """One output stream of an attempt: where its bytes are in the chunk log (``path`` None:
    nowhere), ``fallback`` text known without the log (the record's stderr tail), and a
    ``note`` on how what is shown differs from the stream as the command wrote it."""

    name: str  # stdout | stderr
    path: Path | None = None
    offset: int = 0
    length: int = 0
    fallback: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One execution of the item's command (or a planned one that never ran)."""

    number: int  # 1..n, oldest first, among the item's attempts of this stage
    stage: str  # the pipeline stage, or the job type of a run of one job type
    pipeline: bool
    run_id: str
    run_started: str | None
    job_type: str
    chunk_id: str
    chunk_attempt: int  # the chunk's attempt (SLURM or Snakemake retry) it ran in
    status: str  # success | error | interrupted | running | not run | pending
    exit_code: int | None
    error: str | None
    node: str | None
    slurm_job_id: str | None  # an array task as JOB_TASK
    start: str | None
    end: str | None
    seconds: float | None
    command: str | None  # the rendered shell command, exactly as run
    log_path: str | None
    stdout: Stream
    stderr: Stream
    note: str | None = None

    def summary(self) -> dict[str, Any]:
        """Everything but the streams, JSON-ready."""
        return {
            "number": self.number,
            "stage": self.stage,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "run_started": self.run_started,
            "job_type": self.job_type,
            "chunk_id": self.chunk_id,
            "chunk_attempt": self.chunk_attempt,
            "status": self.status,
            "exit_code": self.exit_code,
            "error": self.error,
            "node": self.node,
            "slurm_job_id": self.slurm_job_id,
            "start": self.start,
            "end": self.end,
            "seconds": self.seconds,
            "command": self.command,
            "log_path": self.log_path,
            "note": self.note,
        }


@dataclass(frozen=True)
class StageSummary:
    """A stage (or job type) of the item: its status and how many runs planned it."""

    name: str
    pipeline: bool
    status: str | None
    runs: int  # runs that planned it (0: the pipeline decided not to run it)
    detail: str | None  # the item-stage's error, or why it did not run


@dataclass(frozen=True)
class ItemLog:
    batch_id: int
    process_id: int
    path: str
    item_status: str | None
    stage: str  # whose attempts these are
    stages: tuple[StageSummary, ...]
    attempts: tuple[Attempt, ...]
    attempt: Attempt  # the one shown

    @property
    def pipeline(self) -> bool:
        return self.attempt.pipeline


@dataclass(frozen=True)
class StreamText:
    """What :func:`read_stream` read of a stream."""

    text: str
    total_bytes: int | None  # the stream's size; None when its bytes are gone
    shown_bytes: int
    complete: bool  # text is the whole stream
    missing: str | None  # why the stream's bytes cannot be read
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "total_bytes": self.total_bytes,
            "shown_bytes": self.shown_bytes,
            "complete": self.complete,
            "missing": self.missing,
            "note": self.note,
        }


# --------------------------------------------------------------------------- the lookup


@dataclass(frozen=True)
class _Row:
    """One job_item row of the item, with its job and run."""

    status: str
    exit_code: int | None
    start: datetime | None
    end: datetime | None
    seconds: float | None
    error: str | None
    run_id: str
    chunk_id: str
    job_attempt: int
    job_type: str
    slurm_job_id: str | None
    node: str | None
    run_type: str | None  # ecod_jobs_run.job_type: a job type, or pipeline.NAME
    run_started: datetime | None

    @property
    def pipeline(self) -> bool:
        return bool(self.run_type and self.run_type.startswith(PIPELINE_PREFIX))

    @property
    def stage(self) -> str:
        """The stage of a pipeline's chunk (``{stage}.{window}.c000``), else the job type."""
        return (
            self.chunk_id.rsplit(".", 2)[0]
            if self.pipeline and self.chunk_id.count(".") >= 2
            else self.job_type
        )


@dataclass(frozen=True)
class _ChunkJob:
    status: str
    slurm_job_id: str | None
    node: str | None
    error: str | None


def item_log(
    db: Database,
    config: Mapping[str, Any],
    batch_id: int,
    process_id: int,
    *,
    stage: str | None = None,
    attempt: int | None = None,
) -> ItemLog:
    """The item's attempts of ``stage`` (default: the stage of its latest failed attempt,
    else of its latest) and the one to show: ``attempt`` (1..n, oldest first), default the
    latest. ``ItemNotFound`` (exit 2) says which of batch, item, stage or attempt is unknown."""
    batch = require_batch(db, batch_id)
    found = db.query(
        sql.SQL("SELECT batch_id, relative_path, status FROM {} WHERE id = %s").format(
            db.table("process_status")
        ),
        (process_id,),
    )
    if not found or found[0][0] != batch_id:
        raise ItemNotFound(
            f"item {process_id} is not in batch {batch_id}", {"batch_id": batch_id, "process_id": process_id}
        )
    _, relative_path, item_status = found[0]
    path = resolve_item_path(relative_path, batch.base_path)
    rows = _job_items(db, process_id)
    item_stages = _item_stages(db, process_id) if any(r.pipeline for r in rows) else {}
    stages = _stage_summaries(rows, item_stages)
    if not rows:
        raise ItemNotFound(
            f"item {process_id} of batch {batch_id} has no attempts yet (status {item_status})",
            {"batch_id": batch_id, "process_id": process_id},
        )
    chosen = stage if stage is not None else _default_stage(rows)
    of_stage = [r for r in rows if r.stage == chosen]
    if not of_stage:
        why = item_stages.get(chosen)
        if why is not None:
            detail = f" ({why[1]})" if why[1] else f" (its item-stage is {why[0]})"
            message = f"item {process_id} never ran stage {chosen}{detail}"
        else:
            message = f"item {process_id} has no stage {chosen!r}; its stages: " + ", ".join(
                s.name for s in stages if s.runs
            )
        raise ItemNotFound(message, {"batch_id": batch_id, "process_id": process_id, "stage": chosen})
    work_root = (config.get("pipeline") or {}).get("work_root", ".ecod_jobs/work")
    jobs = _chunk_jobs(db, of_stage)
    found_attempts: list[Attempt] = []
    for row in of_stage:
        unit = _unit(work_root, batch_id, row)
        found_attempts.extend(_run_attempts(row, unit, process_id, jobs))
    numbered = tuple(replace(a, number=n) for n, a in enumerate(found_attempts, 1))
    of = f" of stage {chosen}" if of_stage[0].pipeline else ""
    if attempt is not None and not 1 <= attempt <= len(numbered):
        count = f"{len(numbered)} attempt{'s' if len(numbered) != 1 else ''}"
        raise ItemNotFound(
            f"item {process_id} has {count}{of}; --attempt {attempt} is out of range",
            {"batch_id": batch_id, "process_id": process_id, "attempt": attempt},
        )
    shown = numbered[(attempt or len(numbered)) - 1]
    return ItemLog(batch_id, process_id, path, item_status, chosen, stages, numbered, shown)


def _job_items(db: Database, process_id: int) -> list[_Row]:
    """The item's job_item rows of workflow runs (one per run and stage), oldest run first."""
    rows = db.query(
        sql.SQL(
            "SELECT ji.status, ji.exit_code, ji.start_time, ji.end_time, ji.elapsed_seconds, ji.error_text,"
            " j.run_id::text, j.chunk_id, j.attempt, j.job_type, j.slurm_job_id, j.node, r.job_type,"
            " r.started_at FROM {ji} ji JOIN {job} j ON j.id = ji.job_id"
            " LEFT JOIN {run} r ON r.run_id = j.run_id"
            " WHERE ji.process_id = %s AND j.run_id IS NOT NULL AND j.chunk_id IS NOT NULL"
            " ORDER BY r.started_at NULLS FIRST, j.id, ji.id"
        ).format(ji=db.table("job_item"), job=db.table("job"), run=db.table("ecod_jobs_run")),
        (process_id,),
    )
    return [
        _Row(str(r[0]), *r[1:8], int(r[8] or 1), r[9], _text(r[10]), r[11], r[12], r[13])  # in column order
        for r in rows
    ]


def _item_stages(db: Database, process_id: int) -> dict[str, tuple[str, str | None]]:
    """The item's item-stages: stage -> (status, error or why it did not run)."""
    rows = db.query(
        sql.SQL("SELECT stage, status, error_message FROM {} WHERE process_id = %s").format(
            db.table("ecod_jobs_item_stage")
        ),
        (process_id,),
    )
    return {stage: (status, message) for stage, status, message in rows}


def _chunk_jobs(db: Database, rows: Sequence[_Row]) -> dict[tuple[str, str, int], _ChunkJob]:
    """Every attempt's job row of the chunks ``rows`` ran in: (run, chunk, attempt) -> row."""
    found = db.query(
        sql.SQL(
            "SELECT j.run_id::text, j.chunk_id, j.attempt, j.status, j.slurm_job_id, j.node, j.error_text"
            " FROM {} j JOIN unnest(%s::uuid[], %s::text[]) AS c (run_id, chunk_id)"
            " ON j.run_id = c.run_id AND j.chunk_id = c.chunk_id"
        ).format(db.table("job")),
        ([r.run_id for r in rows], [r.chunk_id for r in rows]),
    )
    return {
        (run, chunk, int(attempt or 1)): _ChunkJob(status, _text(slurm), node, error)
        for run, chunk, attempt, status, slurm, node, error in found
    }


def _default_stage(rows: Sequence[_Row]) -> str:
    """The stage of the latest failed attempt, else of the latest (rows: oldest first)."""
    failed = [r for r in rows if r.status == "failed"]
    return (failed or list(rows))[-1].stage


_DONE_OF_JOB_ITEM = {"completed": "success", "failed": "error"}


def _stage_summaries(
    rows: Sequence[_Row], item_stages: Mapping[str, tuple[str, str | None]]
) -> tuple[StageSummary, ...]:
    """Each stage (or job type) the item ran, in the order first run, then the pipeline's
    stages it did not run (skipped, blocked) with why."""
    runs: dict[str, list[_Row]] = {}
    for row in rows:
        runs.setdefault(row.stage, []).append(row)
    summaries = []
    for name, of in runs.items():
        latest = of[-1]
        status, detail = item_stages.get(name, (None, None)) if latest.pipeline else (None, None)
        if status is None:
            status = _DONE_OF_JOB_ITEM.get(latest.status, latest.status)
            detail = latest.error if latest.status == "failed" else None
        summaries.append(StageSummary(name, latest.pipeline, status, len(of), detail))
    for name, (status, detail) in sorted(item_stages.items()):
        if name not in runs:
            summaries.append(StageSummary(name, True, status, 0, detail))
    return tuple(summaries)


def _safe(*names: str) -> bool:
    return all(_SAFE_NAME.match(n) and ".." not in n for n in names)


def _unit(work_root: str, batch_id: int, row: _Row) -> RunLayout | None:
    """The directory holding the row's chunk: the run's, or its stage window's; None when a
    name in the row could not be a directory of ours."""
    key = row.run_type or row.job_type
    if not _safe(key, row.run_id, row.chunk_id):
        return None
    run = BatchLayout.create(work_root, batch_id, key).run(row.run_id)
    if not row.pipeline:
        return run
    parts = row.chunk_id.rsplit(".", 2)
    if len(parts) != 3 or not _safe(parts[0], parts[1]):
        return None
    return run.stage_run(parts[0], parts[1])


# --------------------------------------------------------------------------- one run's attempts


@dataclass(frozen=True)
class _Hit:
    """An execution of the item found in the chunk log by its header."""

    offset: int
    time: str
    command: str
    body: tuple[int, int]  # [start, end) of what followed the header: its stdout (and stderr)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _run_attempts(
    row: _Row, unit: RunLayout | None, process_id: int, jobs: Mapping[tuple[str, str, int], _ChunkJob]
) -> list[Attempt]:
    """The item's attempts in one run (one stage of it): those a killed chunk attempt cut
    short, then the one its result record tells, or the row alone when there is neither."""
    base = Attempt(
        number=0,
        stage=row.stage,
        pipeline=row.pipeline,
        run_id=row.run_id,
        run_started=_iso(row.run_started),
        job_type=row.job_type,
        chunk_id=row.chunk_id,
        chunk_attempt=row.job_attempt,
        status=_DONE_OF_JOB_ITEM.get(row.status, row.status),
        exit_code=row.exit_code,
        error=row.error,
        node=row.node,
        slurm_job_id=row.slurm_job_id,
        start=_iso(row.start),
        end=_iso(row.end),
        seconds=row.seconds,
        command=None,
        log_path=None,
        stdout=Stream("stdout"),
        stderr=Stream("stderr"),
    )
    if unit is None or not unit.dir.is_dir():
        gone = "its run's directory is not known" if unit is None else f"the run's files are gone: {unit.dir}"
        return [_without_streams(base, gone)]
    chunk = row.chunk_id
    log_path = unit.log(chunk)
    base = replace(base, log_path=str(log_path))
    records_file = unit.result(chunk) if unit.result(chunk).exists() else unit.partial(chunk)
    record = _find_record(records_file, process_id)
    # Only an item without a record, or recorded by a later attempt of its chunk, can have
    # been cut short; an older record (no "log") has its own output found by its header.
    cut_short = record is None or record.get("attempt", 1) > 1
    older = record is not None and "log" not in record and not _never_started(record)
    hits: list[_Hit] = []
    if (cut_short or older) and log_path.exists():
        command = (record or {}).get("command") or _command(unit, chunk, process_id)
        hits = _find_headers(log_path, _covered(records_file), process_id, command)
    recorded_hit = hits.pop() if older and hits else None
    metas = unit.attempts(chunk)
    attempts = [_cut_short(base, hit, metas, jobs, log_path) for hit in hits]
    if record is not None:
        attempts.append(
            _recorded(base, record, recorded_hit, log_path, lambda: _command(unit, chunk, process_id))
        )
    elif not attempts:  # planned, and not (yet) run
        pending = row.status == "pending"
        why = "not run yet" if pending else "the item's command did not run in this attempt"
        attempts.append(_without_streams(replace(base, status="pending" if pending else "not run"), why))
    return attempts


def _without_streams(base: Attempt, why: str) -> Attempt:
    return replace(base, stdout=Stream("stdout", note=why), stderr=Stream("stderr", note=why), note=why)


def _find_record(path: Path, process_id: int) -> dict[str, Any] | None:
    """The item's record in a chunk's result file: found by the line's start (the runner
    writes ``process_id`` first), so only that line is parsed."""
    prefix = f'{{"process_id": {process_id},'.encode()
    try:
        with path.open("rb") as handle:
            for line in handle:
                if line.startswith(prefix) and line.endswith(b"\n"):
                    try:
                        return dict(json.loads(line))
                    except ValueError:
                        return None
    except FileNotFoundError:
        return None
    return None


def _covered(path: Path) -> list[tuple[int, int]]:
    """The stretches of the chunk log its records cover: [header, end of stderr)."""
    spans = []
    for record in read_jsonl(path):
        log = record.get("log")
        try:
            start, (err_at, err_len) = int(log["header"]), log["stderr"]
            spans.append((start, int(err_at) + int(err_len)))
        except (TypeError, KeyError, ValueError):
            continue  # an older record: its stretch is found by its header
    return sorted(spans)


def _gaps(covered: Sequence[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    at = 0
    for start, end in covered:
        if start > at:
            yield at, min(start, size)
        at = max(at, end)
    if size > at:
        yield at, size


def _find_headers(
    log_path: Path, covered: Sequence[tuple[int, int]], process_id: int, command: str | None
) -> list[_Hit]:
    """The item's headers in the parts of the log no record covers, oldest first, each with
    the bytes up to the next header (of any item) or the end of the part. Searched in a
    memory map: no more of the file is read than the search touches."""
    hits: list[_Hit] = []
    with log_path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return hits
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for start, end in _gaps(covered, size):
                headers = list(HEADER_RE.finditer(mm, start, end))
                for i, match in enumerate(headers):
                    if int(match.group(1)) != process_id:
                        continue
                    stop = headers[i + 1].start() if i + 1 < len(headers) else end
                    hits.append(_hit(mm, match, stop, command))
    return hits


def _hit(mm: mmap.mmap, match: re.Match[bytes], stop: int, command: str | None) -> _Hit:
    after = match.end()
    # The command may span lines: where it is known, it is matched whole.
    known = None if command is None else command.encode(errors="replace") + b"\n"
    if known is not None and mm[after : after + len(known)] == known:
        text, body = command or "", after + len(known)
    else:
        newline = mm.find(b"\n", after, stop)
        line_end = stop if newline < 0 else newline
        text, body = mm[after:line_end].decode(errors="replace"), min(line_end + 1, stop)
    return _Hit(match.start(), match.group(2).decode(), text, (body, stop))


def _command(unit: RunLayout, chunk: str, process_id: int) -> str | None:
    """The item's command rendered again from the plan and manifest (for records that do not
    keep it): how the runner rendered it, so a command of several lines is found whole."""
    try:
        plan = Plan.read(unit)
        item = _find_record(unit.manifest(chunk), process_id)
        return None if item is None else item_command(plan, item, item_outputs(plan, item))
    except (ValueError, KeyError, OSError):
        return None


def _attempt_at(metas: Mapping[int, Mapping[str, Any]], when: str) -> int:
    """The chunk attempt running at ``when``: the latest that had started by then."""
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        return max(metas, default=1)
    started = 1
    for number, meta in sorted(metas.items()):
        try:
            if meta.get("start") and datetime.fromisoformat(meta["start"]) <= moment:
                started = number
        except (TypeError, ValueError):
            continue
    return started


def _cut_short(
    base: Attempt,
    hit: _Hit,
    metas: Mapping[int, Mapping[str, Any]],
    jobs: Mapping[tuple[str, str, int], _ChunkJob],
    log_path: Path,
) -> Attempt:
    """An execution without a record: its chunk attempt was killed while it ran (or, if that
    attempt is still under way, it is running now)."""
    number = _attempt_at(metas, hit.time)
    meta, job = metas.get(number, {}), jobs.get((base.run_id, base.chunk_id, number))
    running = job is not None and job.status == "submitted" and number == max(metas, default=number)
    error = None
    if not running:
        error = (job.error if job is not None and job.error else None) or (
            f"chunk {base.chunk_id} attempt {number} ended while the item ran"
        )
    start, end = hit.body
    return replace(
        base,
        chunk_attempt=number,
        status="running" if running else "interrupted",
        exit_code=None,
        error=error,
        node=meta.get("node") or (job.node if job else None),
        slurm_job_id=_text(meta.get("slurm_job_id")) or (job.slurm_job_id if job else None),
        start=hit.time,
        end=None,
        seconds=None,
        command=hit.command,
        stdout=Stream(
            "stdout",
            log_path,
            start,
            end - start,
            note=None if running else "the attempt was stopped while the item ran: its output until then",
        ),
        stderr=Stream(
            "stderr",
            note="written once the item ends"
            if running
            else "lost: the attempt was stopped before it was kept",
        ),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# The runner's errors for an item whose command it never started (chunk_runner.run_item).
_NOT_STARTED = ("input path does not exist", "cannot name the item's outputs")


def _never_started(record: Mapping[str, Any]) -> bool:
    return record.get("exit_code") is None and str(record.get("error") or "").startswith(_NOT_STARTED)


def _recorded(
    base: Attempt,
    record: Mapping[str, Any],
    hit: _Hit | None,
    log_path: Path,
    rendered: Callable[[], str | None],
) -> Attempt:
    """The execution its result record tells (``rendered``: its command made again from the
    plan, for an older record whose log is gone)."""
    tail = str(record.get("stderr_tail") or "")
    attempt = replace(
        base,
        chunk_attempt=int(record.get("attempt") or base.chunk_attempt),
        status=str(record.get("status") or base.status),
        exit_code=record.get("exit_code"),
        error=record.get("error"),
        node=record.get("node") or base.node,
        slurm_job_id=_text(record.get("slurm_job_id")) or base.slurm_job_id,
        start=record.get("start") or base.start,
        end=record.get("end") or base.end,
        seconds=record.get("seconds", base.seconds),
        command=record.get("command") or (hit.command if hit else None),
    )
    log = record.get("log")
    if isinstance(log, Mapping):
        try:
            (out_at, out_len), (err_at, err_len) = log["stdout"], log["stderr"]
            return replace(
                attempt,
                stdout=Stream("stdout", log_path, int(out_at), int(out_len)),
                stderr=Stream("stderr", log_path, int(err_at), int(err_len), fallback=tail),
            )
        except (KeyError, TypeError, ValueError):
            pass
    if _never_started(record):
        return _without_streams(attempt, "the command did not run")
    if hit is None:
        why = f"the log file {log_path} is gone" if not log_path.exists() else "not found in the chunk log"
        return replace(
            attempt,
            command=attempt.command or rendered(),
            stdout=Stream("stdout", note=why),
            stderr=Stream("stderr", fallback=tail, note=_TAIL_NOTE if tail else why),
        )
    return _split_older(attempt, hit, tail, log_path)


_TAIL_NOTE = f"the record's copy of its last {STDERR_TAIL} characters"


def _split_older(attempt: Attempt, hit: _Hit, tail: str, log_path: Path) -> Attempt:
    """An older record's output: the log holds its stdout, then its stderr, with no mark
    between; the record's stderr tail tells where stderr begins when the log ends with it."""
    start, end = hit.body
    tail_bytes = tail.encode()
    with log_path.open("rb") as handle:
        handle.seek(max(end - len(tail_bytes), start))
        ends_with_tail = bool(tail_bytes) and handle.read(len(tail_bytes)) == tail_bytes
    if not ends_with_tail:
        note = "an older record: stdout and stderr are together in this log" if tail else None
        return replace(
            attempt,
            stdout=Stream("stdout", log_path, start, end - start, note=note),
            stderr=Stream("stderr", fallback=tail, note=_TAIL_NOTE if tail else None),
        )
    cut = end - len(tail_bytes)
    whole = len(tail) < STDERR_TAIL
    return replace(
        attempt,
        stdout=Stream(
            "stdout",
            log_path,
            start,
            cut - start,
            note=None if whole else "an older record: the start of stderr may be at the end of this",
        ),
        stderr=Stream(
            "stderr", log_path, cut, len(tail_bytes), fallback=tail, note=None if whole else _TAIL_NOTE
        ),
    )


# --------------------------------------------------------------------------- reading the bytes


def read_stream(stream: Stream, tail_lines: int | None = TAIL_LINES, limit: int = 8 << 20) -> StreamText:
    """A stream's text: its last ``tail_lines`` lines (from at most its last ``TAIL_BYTES``),
    or (``tail_lines`` None) all of it up to ``limit`` bytes. Decoded as UTF-8, bad bytes
    replaced; what cannot be read says why."""
    if stream.path is None:  # no bytes in a log: the record's copy, if any, and why
        copy = (stream.fallback or "").encode()
        if not copy:
            return StreamText("", None, 0, False, stream.note or "not kept", None)
        if tail_lines is not None:
            copy = _last_lines(copy, tail_lines, whole=False)[0]
        return StreamText(copy.decode(errors="replace"), None, len(copy), False, None, stream.note)
    try:
        handle = stream.path.open("rb")
    except FileNotFoundError:
        missing = f"the log file {stream.path} is gone"
        copy = read_stream(replace(stream, path=None, note=missing), tail_lines, limit)
        return replace(copy, missing=missing, note=_TAIL_NOTE if copy.text else None)
    with handle:
        size = os.fstat(handle.fileno()).st_size
        available = max(0, min(stream.length, size - stream.offset))
        note = stream.note
        if available < stream.length:
            note = f"the log file is shorter than recorded: {stream.length - available:,} bytes are missing"
        if tail_lines is None:
            handle.seek(stream.offset)
            data = handle.read(min(available, limit))
            complete = len(data) == stream.length
        else:
            take = min(available, TAIL_BYTES)
            handle.seek(stream.offset + available - take)
            data = handle.read(take)
            data, complete = _last_lines(data, tail_lines, whole=take == stream.length)
    return StreamText(data.decode(errors="replace"), stream.length, len(data), complete, None, note)


def _last_lines(data: bytes, count: int, *, whole: bool) -> tuple[bytes, bool]:
    """The last ``count`` lines of ``data`` (a final newline ends the last line), and whether
    that is all of the stream (``whole``: data is the whole stream)."""
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(count):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return data, whole
    return data[cut + 1 :], False


def copy_stream(stream: Stream, out: BinaryIO, block: int = 1 << 20) -> int:
    """Write all of a stream's bytes to ``out`` (``--full``), block by block; returns the bytes
    written. The caller checks ``stream.path`` exists first (see :func:`read_stream`)."""
    written = 0
    assert stream.path is not None
    with stream.path.open("rb") as handle:
        handle.seek(stream.offset)
        left = stream.length
        while left > 0:
            data = handle.read(min(block, left))
            if not data:
                break
            out.write(data)
            written += len(data)
            left -= len(data)
    return written


# --------------------------------------------------------------------------- JSON and text


def to_dict(found: ItemLog, tail_lines: int | None = TAIL_LINES, limit: int = 8 << 20) -> dict[str, Any]:
    """The item log as JSON: every attempt's summary, and the shown one's streams read."""
    return {
        "batch_id": found.batch_id,
        "process_id": found.process_id,
        "path": found.path,
        "item_status": found.item_status,
        "stage": found.stage,
        "pipeline": found.pipeline,
        "stages": [
            {"name": s.name, "pipeline": s.pipeline, "status": s.status, "runs": s.runs, "detail": s.detail}
            for s in found.stages
        ],
        "attempts": [a.summary() for a in found.attempts],
        "attempt": {
            **found.attempt.summary(),
            "stdout": read_stream(found.attempt.stdout, tail_lines, limit).to_dict(),
            "stderr": read_stream(found.attempt.stderr, tail_lines, limit).to_dict(),
        },
        "tail_lines": tail_lines,
    }


@dataclass
class _Lines:
    lines: list[str] = field(default_factory=list)

    def add(self, label: str, value: Any) -> None:
        if value is not None and value != "":
            self.lines.append(f"{label + ':':<11}{value}")


def describe(found: ItemLog) -> str:
    """The header of ``ecod-jobs logs``: the item, its stages, the attempt's facts."""
    a = found.attempt
    out = _Lines()
    what = f"stage {found.stage}" if found.pipeline else f"job type {found.stage}"
    out.lines.append(
        f"item {found.process_id} of batch {found.batch_id} ({found.path}): status {found.item_status}"
    )
    out.lines.append(f"{what}: attempt {a.number} of {len(found.attempts)}")
    if found.pipeline or len(found.stages) > 1:
        out.lines.append(
            "stages: "
            + "; ".join(
                f"{s.name} {s.status}" + (f" ({s.detail})" if s.detail and not s.runs else "")
                for s in found.stages
            )
        )
    out.lines.append("")
    out.add("command", a.command or f"(none: {a.note or 'not known'})")
    exit_text = "" if a.exit_code is None else f", exit code {a.exit_code}"
    out.add("status", f"{a.status}{exit_text}")
    out.add("error", a.error)
    out.add("node", a.node or "-")
    out.add("SLURM id", a.slurm_job_id or "-")
    out.add("chunk", f"{a.chunk_id}, its attempt {a.chunk_attempt}")
    out.add("run", a.run_id)
    out.add("started", a.start or "-")
    seconds = "" if a.seconds is None else f" ({a.seconds} s)"
    out.add("ended", f"{a.end or '-'}{seconds}")
    out.add("log", a.log_path)
    return "\n".join(out.lines) + "\n"


def stream_heading(text: StreamText, name: str, tail_lines: int | None) -> str:
    """``--- stdout: ... ---``: how much of the stream follows, or why none of it."""
    if text.missing:
        what = text.missing + ("; the record's copy of its end follows" if text.text else "")
    elif text.total_bytes is None:
        what = text.note or "from the record"
    elif text.total_bytes == 0:
        what = "empty"
    elif text.complete:
        what = f"all {text.total_bytes:,} bytes"
    elif tail_lines is None:
        what = f"the first {text.shown_bytes:,} of {text.total_bytes:,} bytes"
    else:
        what = f"the last {tail_lines} lines of {text.total_bytes:,} bytes; --full shows all"
    if text.note and text.total_bytes is not None:
        what += f" ({text.note})"
    return f"--- {name}: {what} ---"


def attempts_table(found: ItemLog) -> str:
    """The item's attempts of the stage, the shown one marked ``>``."""
    rows = [("", "#", "status", "exit", "run", "chunk", "try", "node", "SLURM id", "started")]
    for a in found.attempts:
        rows.append(
            (
                ">" if a is found.attempt else "",
                str(a.number),
                a.status,
                "-" if a.exit_code is None else str(a.exit_code),
                a.run_id[:8],
                a.chunk_id,
                str(a.chunk_attempt),
                a.node or "-",
                a.slurm_job_id or "-",
                (a.start or "-")[:19].replace("T", " "),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return (
        "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"
    )


def write_text(found: ItemLog, out: TextIO, tail_lines: int | None = TAIL_LINES) -> None:
    """``ecod-jobs logs``: the attempt's facts, the item's attempts, then its stdout and its
    stderr (their tails, or with ``tail_lines`` None all of them, copied block by block)."""
    out.write(describe(found))
    out.write("\nattempts (--attempt N shows another):\n" + attempts_table(found) + "\n")
    for stream in (found.attempt.stdout, found.attempt.stderr):
        if tail_lines is None and stream.path is not None:
            probe = read_stream(stream, None, limit=0)
            if probe.missing is None and probe.total_bytes:
                note = f" ({probe.note})" if probe.note else ""
                out.write(f"--- {stream.name}: all {probe.total_bytes:,} bytes{note} ---\n")
                out.flush()
                target = getattr(out, "buffer", None)
                if target is not None:
                    copy_stream(stream, target)
                    target.flush()
                else:
                    out.write(read_stream(stream, None, limit=stream.length).text)
                out.write("" if _ends_with_newline(stream) else "\n")
                continue
        text = read_stream(stream, tail_lines)
        out.write(stream_heading(text, stream.name, tail_lines) + "\n")
        if text.text:
            out.write(text.text if text.text.endswith("\n") else text.text + "\n")
    out.write("--- end ---\n")


def _ends_with_newline(stream: Stream) -> bool:
    assert stream.path is not None
    with stream.path.open("rb") as handle:
        handle.seek(stream.offset + stream.length - 1)
        return handle.read(1) == b"\n"
