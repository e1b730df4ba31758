"""Live progress of a batch: ``ecod-jobs run``'s view and ``ecod-jobs follow``.

Two halves. The data side is plain values read from PostgreSQL: a
:class:`ProgressSnapshot` (items done, failed, running now, queued, per pipeline
stage, and one line per open run and detached head, from :func:`describe_runs`),
read by :class:`RunProgress` (one run, for ``run``) or :class:`BatchProgress` (the
whole batch, for ``follow``), and a :class:`RateEstimator` (items/s over a sliding
window, and the ETA). The view, :class:`ProgressView`, draws snapshots: a rich
live display on a terminal, plain timestamped lines otherwise (a SLURM or nohup
log: no ANSI codes, no carriage returns). The view only reads; leaving it never
touches a run.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

from psycopg2 import sql

from . import run_record
from .db import Database, require_batch, snapshot, status_counts
from .head import LIVE_STATES, Head, open_heads

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

DONE_STATUSES = ("success", "error", "skipped")
RATE_WINDOW = 300.0  # seconds of samples the rate is measured over (chunks end in bursts)
PLAIN_EVERY = 30.0  # at most one block of plain lines this often, and only on a change
FOLLOW_INTERVAL = 2.0  # seconds between two polls of ``follow``


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ProgressSnapshot:
    """The numbers of one moment. ``total``: the bar's length (a run's planned items, or
    the batch's items); ``processing``: items claimed by a run and not ended;
    ``running``: those being run now; ``remaining``: what the ETA waits for; ``runs``:
    one line per open run (anything that describes where a run is can be added there)."""

    title: str
    total: int
    done: int
    failed: int
    processing: int
    running: int
    remaining: int
    stages: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    runs: tuple[str, ...] = ()
    at: float = field(default_factory=time.monotonic)

    @property
    def queued(self) -> int:
        """Claimed by a run, not started yet."""
        return max(self.processing - self.running, 0)

    @property
    def pending(self) -> int:
        """Counted in ``total`` but in no run's hands yet (a run before its plan, or items
        no open run will do)."""
        return max(self.total - self.done - self.processing, 0)

    def numbers(self) -> tuple[Any, ...]:
        """Everything shown except rate and ETA: what "something changed" compares."""
        stages = tuple((name, tuple(sorted(c.items()))) for name, c in self.stages.items())
        return (self.total, self.done, self.failed, self.processing, self.running, stages, self.runs)


def done_of(counts: Mapping[str, int]) -> int:
    return sum(int(counts.get(s, 0)) for s in DONE_STATUSES)


def running_items(db: Database, batch_id: int, run_id: str | None = None) -> int:
    """Items being run now: chunk attempts started and not ended (a chunk runs its items
    one at a time), as the run records them (``job`` rows still 'submitted' with a start)."""
    query = "SELECT count(*) FROM {} WHERE batch_id = %s AND status = 'submitted' AND start_time IS NOT NULL"
    params: tuple[Any, ...] = (batch_id,)
    if run_id is not None:
        query += " AND run_id = %s"
        params = (batch_id, run_id)
    return int(db.query(sql.SQL(query).format(db.table("job")), params)[0][0])


T = TypeVar("T")


class Paced(Generic[T]):
    """A reading redone at most every ``interval`` s, and rarely enough to take at most
    ``share`` of the wall time: the stage counts of a million-item pipeline batch take
    about 0.5 s, so they are read every 5 s rather than at each 2 s poll."""

    def __init__(
        self, interval: float, share: float = 0.1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval, self.share, self.clock = interval, share, clock
        self._value: T | None = None
        self._next = 0.0
        self._read = False

    def get(self, read: Callable[[], T], fresh: bool = False) -> T:
        started = self.clock()
        if fresh or not self._read or started >= self._next:
            self._value = read()
            self._read = True
            self._next = started + max(self.interval, (self.clock() - started) / self.share)
        return self._value  # type: ignore[return-value]


def _stages(db: Database, batch_id: int, order: Sequence[str], total: int) -> dict[str, dict[str, int]]:
    from .pipeline_sync import stage_counts

    return stage_counts(db, batch_id, order=order, total=total)


def _stage_order(config: Mapping[str, Any] | None) -> list[str]:
    from .pipelines import stage_order

    return stage_order(config or {})


class RunProgress:
    """Snapshots of one run for ``ecod-jobs run``: its items done of those planned (the
    per-run counts join the run's job items, so they are paced by their cost)."""

    def __init__(
        self,
        db: Database,
        batch_id: int,
        run_id: str,
        planned: int,
        *,
        name: str = "",
        config: Mapping[str, Any] | None = None,
        log_path: Path | None = None,
        interval: float = 1.0,
    ) -> None:
        self.db, self.batch_id, self.run_id, self.planned = db, batch_id, run_id, planned
        self.title = _title(batch_id, name)
        self.order = _stage_order(config)
        self.runs = (f"run {run_id}" + (f", Snakemake's log {log_path}" if log_path else ""),)
        self._counts: Paced[dict[str, int]] = Paced(interval)
        self._running: Paced[int] = Paced(interval)
        self._stages: Paced[dict[str, dict[str, int]]] = Paced(interval)

    def read(self, fresh: bool = False) -> ProgressSnapshot:
        with snapshot(self.db) as db:
            counts = self._counts.get(lambda: status_counts(db, self.batch_id, self.run_id), fresh)
            running = self._running.get(lambda: running_items(db, self.batch_id, self.run_id), fresh)
            batch_items = sum(status_counts(db, self.batch_id).values())
            stages = self._stages.get(lambda: _stages(db, self.batch_id, self.order, batch_items), fresh)
        done = done_of(counts)
        return ProgressSnapshot(
            title=self.title,
            total=self.planned,
            done=done,
            failed=int(counts.get("error", 0)),
            processing=int(counts.get("processing", 0)),
            running=running,
            remaining=max(self.planned - done, 0),
            stages=stages,
            runs=self.runs,
        )


@dataclass(frozen=True)
class BatchState:
    """What ``follow`` reads at each poll: the snapshot, and whether a run is still going."""

    snapshot: ProgressSnapshot
    counts: dict[str, int]
    active: bool  # an open run that is alive, or a run starting (its lease, no record yet)
    dead: tuple[str, ...] = ()  # runs recorded as running whose process is gone


class BatchProgress:
    """Snapshots of a whole batch for ``ecod-jobs follow``, from any host. Each poll is a
    few small queries in one read-only transaction: the trigger-kept status counts, the
    running chunk attempts, the batch's runs and leases; stage counts (a scan of the
    batch's item-stages) are paced by their cost."""

    def __init__(self, db: Database, batch_id: int, config: Mapping[str, Any] | None = None) -> None:
        batch = require_batch(db, batch_id)  # an unknown batch: ValidationError (exit 2), naming it
        self.db, self.batch_id = db, batch_id
        self.title = _title(batch_id, batch.batch_name)
        self.order = _stage_order(config)
        self._stages: Paced[dict[str, dict[str, int]]] = Paced(FOLLOW_INTERVAL)
        self._running: Paced[int] = Paced(FOLLOW_INTERVAL)
        self._head_states: dict[str, Paced[str]] = {}

    def _head_state(self, head: Head) -> str:
        paced = self._head_states.setdefault(head.run_id, Paced(HEAD_STATE_EVERY))
        return paced.get(head.state)

    def read(self, fresh: bool = False) -> BatchState:
        with snapshot(self.db) as db:
            counts = status_counts(db, self.batch_id)
            total = sum(counts.values())
            running = self._running.get(lambda: running_items(db, self.batch_id), fresh)
            runs, active, dead = describe_runs(db, self.batch_id, self._head_state)
            stages = self._stages.get(lambda: _stages(db, self.batch_id, self.order, total), fresh)
        processing, done = int(counts.get("processing", 0)), done_of(counts)
        # What the runs going on will do is what they claimed; before a plan (or with no run
        # to do them), the items not done: an unknown ETA, not zero.
        remaining = processing or total - done
        snap = ProgressSnapshot(
            title=self.title,
            total=total,
            done=done,
            failed=int(counts.get("error", 0)),
            processing=processing,
            running=running,
            remaining=remaining,
            stages=stages,
            runs=tuple(runs),
        )
        return BatchState(snap, counts, active, tuple(dead))


HEAD_STATE_EVERY = 30.0  # seconds between two squeue calls about a head still to start
_WAITING = (*LIVE_STATES, "unknown")  # Head.state() of a head that may start its run


def describe_runs(
    db: Database, batch_id: int, head_state: Callable[[Head], str] | None = None
) -> tuple[list[str], bool, list[str]]:
    """One line per open run of the batch (id, job type, host, pid, start; "starting" for a
    run that holds a lease but has no record yet) and per detached head (where it runs, its
    log), whether any is alive (or a head may still start it), and the runs that died.
    ``head_state``: :meth:`Head.state` (squeue for a SLURM head), paced by the caller."""
    lines: list[str] = []
    dead: list[str] = []
    rows = db.query(
        sql.SQL("SELECT run_id::text, started_at FROM {} WHERE batch_id = %s AND status = 'running'").format(
            db.table("ecod_jobs_run")
        ),
        (batch_id,),
    )
    started = {str(r): s for r, s in rows}
    active = False
    for run in run_record.open_runs(db, batch_id):
        since = started.get(run.run_id)
        when = f", started {since.astimezone():%Y-%m-%d %H:%M:%S}" if since else ""
        alive = run.alive
        active = active or alive
        state = "" if alive else " - not alive (its next run or `ecod-jobs sync` settles it)"
        lines.append(f"run {run.run_id} {run.job_type} on {run.host} pid {run.pid}{when}{state}")
        if not alive:
            dead.append(run.run_id)
    # run_batch takes the lease before Snakemake starts and records the run
    for run_id, host, pid, age in db.query(
        sql.SQL(
            "SELECT l.run_id::text, l.host, l.pid, min(extract(epoch FROM now() - l.heartbeat_at))"
            " FROM {} l WHERE l.batch_id = %s AND NOT EXISTS (SELECT 1 FROM {} r WHERE r.run_id = l.run_id)"
            " GROUP BY 1, 2, 3"
        ).format(db.table("ecod_jobs_lease"), db.table("ecod_jobs_run")),
        (batch_id,),
    ):
        if run_record.is_alive(host, pid, None if age is None else float(age)):
            active = True
            lines.append(f"run {run_id} starting on {host} pid {pid}")
    heads = open_heads(db, batch_id)
    recorded = (
        {
            str(r)
            for (r,) in db.query(
                sql.SQL("SELECT run_id::text FROM {} WHERE run_id::text = ANY(%s)").format(
                    db.table("ecod_jobs_run")
                ),
                ([h.run_id for h in heads],),
            )
        }
        if heads
        else set()
    )
    for head in heads:
        # a head waiting in the queue (or starting) has neither a lease nor a run record yet
        waiting = head.run_id not in recorded and (head_state or Head.state)(head) in _WAITING
        active = active or waiting
        lines.append(
            f"head of run {head.run_id}: {head.where()}{', to start' if waiting else ''}; log {head.log_path}"
        )
    return lines, active, dead


def _title(batch_id: int, name: str) -> str:
    return f"batch {batch_id}" + (f" {name!r}" if name else "")


# --------------------------------------------------------------------------- rate and ETA


class RateEstimator:
    """Items per second over the last ``window`` seconds of samples.

    One sample older than the window is kept as its anchor, so the rate always spans
    the whole window (chunks report their items in bursts). Unknown (None) before two
    samples; 0.0 when nothing moved. A count that goes down (items settled back to
    pending, failed ones retried) starts the measure afresh.
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, done: int) -> None:
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()
        if self.samples and at <= self.samples[-1][0]:
            self.samples[-1] = (self.samples[-1][0], done)  # same moment: keep the newest count
            return
        self.samples.append((at, done))
        while len(self.samples) > 2 and self.samples[1][0] <= at - self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0)

    def eta(self, remaining: int) -> float | None:
        """Seconds until ``remaining`` items are done at the current rate; None when unknown
        (no rate yet, or no progress)."""
        if remaining <= 0:
            return 0.0
        rate = self.rate()
        return remaining / rate if rate else None


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "- items/s"
    return f"{rate:.3g} items/s" if rate >= 0.001 or rate == 0 else f"{rate:.1e} items/s"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def _percent(done: int, total: int) -> str:
    return f"{100 * done / total:.1f}%" if total else "-"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Control characters (an escape, a carriage return in a batch name) as visible escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


# --------------------------------------------------------------------------- plain lines


def plain_lines(snap: ProgressSnapshot, rate: float | None, eta: float | None, now: datetime) -> list[str]:
    """The snapshot as plain lines for a log: a timestamped summary, one line per stage and
    one per run. The same numbers as the live view."""
    pending = f", {snap.pending} pending" if snap.pending else ""
    lines = [
        f"{now:%Y-%m-%d %H:%M:%S} {snap.title}: {snap.done}/{snap.total} items done"
        f" ({_percent(snap.done, snap.total)}), {snap.failed} failed, {snap.running} running now,"
        f" {snap.queued} queued{pending}; {format_rate(rate)}, ETA {format_eta(eta)}"
    ]
    for name, c in snap.stages.items():
        lines.append(
            f"  stage {name}: {c['success']} success, {c['error']} error, {c['skipped']} skipped,"
            f" {c['running']} running, {c['pending']} pending"
        )
    lines.extend(f"  {run}" for run in snap.runs)
    return [printable(line) for line in lines]


def final_line(state: BatchState) -> str:
    """``follow``'s last line: the batch's counts once no run is open."""
    c, snap = state.counts, state.snapshot
    dead = f"; recorded as running but gone: {', '.join(state.dead)}" if state.dead else ""
    return printable(
        f"{snap.title}: no run open; {c.get('success', 0)} succeeded, {c.get('error', 0)} failed,"
        f" {c.get('skipped', 0)} skipped, {c.get('pending', 0)} pending, {c.get('processing', 0)}"
        f" processing of {snap.total} items{dead}"
    )


# --------------------------------------------------------------------------- rich


def render(snap: ProgressSnapshot, rate: float | None, eta: float | None) -> RenderableType:
    """The live display: the bar of items with rate and ETA, the counts, a line per stage
    and per run. Every text is a ``Text`` (no markup), so a name cannot style the view."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def bar(done: int, total: int) -> ProgressBar:
        return ProgressBar(total=total or 1, completed=min(done, total), width=30)

    main = Table.grid(padding=(0, 1))
    main.add_row(
        bar(snap.done, snap.total),
        Text(f"{snap.done}/{snap.total} items", style="bold"),
        Text(_percent(snap.done, snap.total)),
        Text(format_rate(rate), style="cyan"),
        Text(f"ETA {format_eta(eta)}", style="yellow"),
    )
    counts = Text(f"done {snap.done} · ")
    counts.append(f"failed {snap.failed}", style="red" if snap.failed else "")
    counts.append(f" · running now {snap.running} · queued {snap.queued}")
    if snap.pending:
        counts.append(f" · pending {snap.pending}")
    parts: list[Any] = [Text(printable(snap.title), style="bold"), main, counts]
    if snap.stages:
        stages = Table.grid(padding=(0, 1))
        for name, c in snap.stages.items():
            stage_total = sum(c.values())
            stage_done = c["success"] + c["error"] + c["skipped"]
            stages.add_row(
                Text(f"stage {printable(name)}"),
                bar(stage_done, stage_total),
                Text(
                    f"{c['success']} success, {c['error']} error, {c['skipped']} skipped,"
                    f" {c['running']} running, {c['pending']} pending"
                ),
            )
        parts.append(stages)
    parts.extend(Text(printable(run), style="dim") for run in snap.runs)
    return Group(*parts)


# --------------------------------------------------------------------------- the view


def is_terminal(stream: IO[str]) -> bool:
    """A live display only on a real, capable terminal; a log, a pipe or an Emacs shell
    (TERM=dumb) gets plain lines."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class ProgressView:
    """Draws snapshots: ``update`` with each new one, ``close`` at the end.

    On a terminal (or given a ``console``): a rich live display, redrawn in place. Else
    plain lines: the first snapshot at once, then at most one block every ``every``
    seconds and only when a number changed, and at ``close`` the last one if it was not
    printed yet (so a log always ends with the final numbers).
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        console: Console | None = None,
        every: float = PLAIN_EVERY,
        window: float = RATE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.stream, self.console, self.every, self.clock, self.wall = stream, console, every, clock, wall
        self.live_view = console is not None or is_terminal(stream)
        self.rate = RateEstimator(window)
        self.last: ProgressSnapshot | None = None
        self._live: Live | None = None
        self._printed: tuple[Any, ...] | None = None
        self._printed_at = 0.0

    def update(self, snap: ProgressSnapshot) -> None:
        self.rate.add(snap.at, snap.done)
        self.last = snap
        rate, eta = self.rate.rate(), self.rate.eta(snap.remaining)
        if self.live_view:
            self._draw(render(snap, rate, eta))
            return
        now = self.clock()
        due = now - self._printed_at >= self.every
        if self._printed is None or (due and snap.numbers() != self._printed):
            self._print(snap, rate, eta, now)

    def _draw(self, renderable: RenderableType) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            console = self.console or Console(file=self.stream)
            self._live = Live(renderable, console=console, auto_refresh=False, transient=False)
            self._live.start(refresh=True)
        else:
            self._live.update(renderable, refresh=True)

    def _print(self, snap: ProgressSnapshot, rate: float | None, eta: float | None, now: float) -> None:
        self.stream.write("".join(line + "\n" for line in plain_lines(snap, rate, eta, self.wall())))
        self.stream.flush()
        self._printed, self._printed_at = snap.numbers(), now

    def close(self) -> None:
        """Leave the last frame on the terminal, or print the last numbers if not yet."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self.last is not None and self.last.numbers() != self._printed:
            self._print(self.last, self.rate.rate(), self.rate.eta(self.last.remaining), self.clock())

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def follow(
    source: BatchProgress,
    view: ProgressView,
    interval: float = FOLLOW_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> BatchState:
    """Poll ``source`` into ``view`` until the batch has no open run that is alive (nor one
    starting); returns the last state, read afresh. Only reads: Ctrl-C here (a
    KeyboardInterrupt to the caller) leaves the run alone."""
    while True:
        state = source.read()
        if not state.active:
            state = source.read(fresh=True)  # the end's own numbers, stage counts included
            view.update(state.snapshot)
            return state
        view.update(state.snapshot)
        sleep(interval)


__all__ = [
    "BatchProgress",
    "BatchState",
    "ProgressSnapshot",
    "ProgressView",
    "RateEstimator",
    "RunProgress",
    "final_line",
    "follow",
    "plain_lines",
    "render",
    "running_items",
]
