"""``process_file``: which output files each item has, written in bulk and in place.

ECOD marks a stage done for a chain by the files it recorded in ``process_file``
(``file_type``, ``file_path`` relative to the batch's ``base_path``, whether the
file exists and its size). Two writers use this module: the pipeline, after an
item-stage succeeds (in the same transaction as the item's status, so a stage
is never recorded done without its files or the other way round), and
``ecod-jobs files register``, which scans every declared output on disk and
brings the table in line (what the original's repair script did).

Real ECOD databases have no unique key on ``(process_id, file_type)`` and may
already hold duplicates (pyECOD inserted rows without checking), so the writer
cannot use ``ON CONFLICT``. It stages the rows with COPY and then updates every
existing row of each (process_id, file_type) in place, only where something
changed, and inserts rows only for pairs that have none: never a second row,
never a failure on the duplicates already there, and a second write of the same
files changes nothing. A million rows cost a handful of statements.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import stat
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from .db import Database
from .db.bulk import copy_rows, copy_value
from .exceptions import DatabaseError, ValidationError
from .plan_file import PLACEHOLDERS, check_output_template, item_template_values, render_output

log = logging.getLogger(__name__)

# The placeholders an output template may use (the design's list): the process_status
# id, its protein id, the batch id, and the item's file name without its last extension.

# One transaction-scoped lock for ecod-jobs' process_file writers. Without a unique key
# two writers of the same new (process_id, file_type) could each find no row and each
# insert one; holding this from the first statement that reads process_file to the
# commit makes the second writer see the first one's row and update it instead.
_WRITE_LOCK_KEY = 0x0EC0D_F11E

# Stats are handed to the pool in blocks: a future per file would cost more than the
# stat on a local disk, and a bounded number of blocks in flight keeps memory flat
# however many files there are, while the next blocks are statted as earlier rows are
# consumed (COPY'd) in order.
_STAT_BLOCK = 512
DEFAULT_STAT_WORKERS = 16  # shared filesystems (NFS, Lustre): a stat is a round trip


@dataclass(frozen=True, slots=True)
class FileRow:
    """One ``process_file`` row as the writer takes it (``file_path`` relative to the
    batch's base path, ``file_size`` None when the file is missing)."""

    process_id: int
    file_type: str
    file_path: str
    file_exists: bool
    file_size: int | None
    last_checked: datetime


@dataclass(frozen=True)
class WriteCounts:
    """What one :func:`write_files` did.

    ``staged``: distinct (process_id, file_type) pairs given (the last of a repeated pair
    wins); ``updated``: existing rows changed in place (a pair with duplicate rows counts
    each row); ``updated_pairs``: pairs among those; ``inserted``: pairs that had no row;
    ``unchanged``: pairs whose rows already said the same.
    """

    staged: int
    updated: int
    updated_pairs: int
    inserted: int

    @property
    def written(self) -> int:
        """Rows written: updated in place plus inserted."""
        return self.updated + self.inserted

    @property
    def unchanged(self) -> int:
        return self.staged - self.updated_pairs - self.inserted


# --------------------------------------------------------------------------- the writer

_COLUMNS = ("seq", "process_id", "file_type", "file_path", "file_exists", "file_size", "last_checked")
_NULL = "\\N"
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


class _Staged:
    """The rows on their way into COPY: as text lines, numbered in input order (``seq``:
    the last of a repeated pair wins), each a one-field row for :func:`copy_rows`.

    A million rows go through here on the head node while the server takes the previous
    block, so the line is one f-string, the values rows share (file types, the time of
    the check) are escaped or formatted once, and a path is escaped only if it holds
    one of COPY's special characters.

    It also notes, in passing and in constant memory, whether a pair can repeat: rows in
    process-id order (a scan's order, a chunk's) with no file type twice for one item
    cannot, and the writer then skips the pass over the staged rows that looks for
    repeats. ``error``: what the rows' own iterator raised, if it did.
    """

    def __init__(self, rows: Iterable[FileRow]) -> None:
        self._rows = rows
        self.may_repeat = False
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[tuple[str]]:
        last: datetime | None = None
        last_text = _NULL
        types: dict[str, str] = {}
        special = _COPY_SPECIAL.search
        item: int | None = None
        item_types: set[str] = set()
        try:
            for seq, row in enumerate(self._rows):
                pid, kind = row.process_id, row.file_type
                if pid == item:
                    if kind in item_types:
                        self.may_repeat = True
                    item_types.add(kind)
                else:
                    if item is not None and not pid > item:
                        self.may_repeat = True  # out of order: a pair could come back later
                    item = pid
                    item_types.clear()
                    item_types.add(kind)
                checked = row.last_checked
                if checked is not last:
                    last, last_text = checked, copy_value(None if checked is None else checked.isoformat())
                file_type = types.get(kind)
                if file_type is None:
                    file_type = types[kind] = copy_value(kind)
                path = row.file_path
                if special(path):
                    path = copy_value(path)
                exists = "t" if row.file_exists else "f"
                size = _NULL if row.file_size is None else row.file_size
                yield (f"{seq}\t{pid}\t{file_type}\t{path}\t{exists}\t{size}\t{last_text}",)
        except Exception as exc:
            self.error = exc
            raise


def write_files(cur: psycopg2.extensions.cursor, db: Database, rows: Iterable[FileRow]) -> WriteCounts:
    """Bring ``process_file`` in line with ``rows`` inside the caller's transaction.

    The caller's transaction, so that the pipeline records an item's files and its
    status together (all or nothing). ``last_checked`` is not compared: a row whose
    path, existence and size are unchanged is left alone (and keeps the time it was
    last written), which is what makes a second registration write nothing instead of
    rewriting a million rows for a timestamp.
    """
    cur.execute("DROP TABLE IF EXISTS pg_temp._ecod_files, pg_temp._ecod_new_files")  # written before
    cur.execute(
        "CREATE TEMP TABLE _ecod_files (seq bigint, process_id int, file_type text, file_path text,"
        " file_exists boolean, file_size bigint, last_checked timestamptz) ON COMMIT DROP"
    )
    staged = _Staged(rows)
    try:
        copied = copy_rows(cur, sql.Identifier("_ecod_files"), _COLUMNS, staged, preformatted=True)
    except psycopg2.Error:
        # psycopg2 turns an error of the rows' own iterator (a scan that met a bad path)
        # into a failed COPY; the caller gets the error itself, the transaction aborted.
        if staged.error is not None:
            raise staged.error from None
        raise
    if copied == 0:
        return WriteCounts(0, 0, 0, 0)
    distinct = copied
    if staged.may_repeat:
        # The last of a repeated pair wins: one hash aggregate finds the pairs given twice
        # and their earlier copies go, so no statement below sees a pair twice (an UPDATE
        # ... FROM with two source rows for one target row would take either).
        cur.execute(
            "DELETE FROM _ecod_files f USING (SELECT process_id, file_type, max(seq) AS seq"
            " FROM _ecod_files GROUP BY process_id, file_type HAVING count(*) > 1) d"
            " WHERE f.process_id = d.process_id AND f.file_type = d.file_type AND f.seq < d.seq"
        )
        distinct -= cur.rowcount
    cur.execute("ANALYZE _ecod_files")  # a temp table has no statistics: hash joins, not loops
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK_KEY,))
    # Every existing row of the pair, duplicates included, and only where it differs.
    cur.execute(
        sql.SQL(
            "WITH changed AS (UPDATE {} pf SET file_path = n.file_path, file_exists = n.file_exists,"
            " file_size = n.file_size, last_checked = n.last_checked FROM _ecod_files n"
            " WHERE pf.process_id = n.process_id AND pf.file_type = n.file_type"
            " AND (pf.file_path, pf.file_exists, pf.file_size)"
            "  IS DISTINCT FROM (n.file_path, n.file_exists, n.file_size)"
            " RETURNING pf.process_id, pf.file_type)"
            " SELECT count(*), count(DISTINCT (process_id, file_type)) FROM changed"
        ).format(db.table("process_file"))
    )
    updated, updated_pairs = cur.fetchone()
    inserted = _insert_new(cur, db, distinct)
    cur.execute("DROP TABLE IF EXISTS _ecod_files, _ecod_new_files")
    return WriteCounts(distinct, int(updated), int(updated_pairs), int(inserted))


def _insert_new(cur: psycopg2.extensions.cursor, db: Database, distinct: int) -> int:
    """Insert the staged pairs that have no row yet; returns their number.

    Never one INSERT whose own NOT EXISTS reads the table it inserts into: planned on a
    table that is empty at the time (a first registration), that is a nested loop that
    rescans every row inserted so far, quadratic in the rows. So the pairs that have a
    row are counted first: none (a first registration, a new stage's files) and the
    staged rows go in as they are, all (a re-scan) and nothing does, and otherwise the
    new pairs are set apart before they are inserted.
    """
    table = db.table("process_file")
    cur.execute(
        sql.SQL(
            "SELECT count(*) FROM _ecod_files n WHERE EXISTS"
            " (SELECT 1 FROM {} pf WHERE pf.process_id = n.process_id AND pf.file_type = n.file_type)"
        ).format(table)
    )
    (matched,) = cur.fetchone()
    if matched == distinct:
        return 0
    source = sql.Identifier("_ecod_files")
    if matched:
        source = sql.Identifier("_ecod_new_files")
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE _ecod_new_files ON COMMIT DROP AS SELECT n.* FROM _ecod_files n"
                " WHERE NOT EXISTS"
                " (SELECT 1 FROM {} pf WHERE pf.process_id = n.process_id AND pf.file_type = n.file_type)"
            ).format(table)
        )
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (process_id, file_type, file_path, file_exists, file_size, last_checked)"
            " SELECT process_id, file_type, file_path, file_exists, file_size, last_checked FROM {}"
        ).format(table, source)
    )
    return int(cur.rowcount)


def upsert_files(cur: psycopg2.extensions.cursor, db: Database, rows: Iterable[FileRow]) -> int:
    """Update in place or insert the ``process_file`` rows of ``rows`` (see :func:`write_files`),
    in the caller's transaction; returns the number of rows written (0 when nothing changed)."""
    return write_files(cur, db, rows).written


# --------------------------------------------------------------------------- scanning outputs


def _stat(path: str) -> tuple[bool, int | None]:
    """(exists as a regular file, its size) of one path; anything unreadable counts as
    missing, since the stage that needs it could not read it either."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False, None
    except OSError as exc:
        log.warning("cannot stat %s (%s): recorded as missing", path, exc)
        return False, None
    if not stat.S_ISREG(st.st_mode):
        return False, None
    return True, st.st_size


def _stat_block(paths: Sequence[str]) -> list[tuple[bool, int | None]]:
    return [_stat(p) for p in paths]


def scan_outputs(
    base_path: str,
    items: Iterable[tuple[int, Mapping[str, object]]],
    outputs: Sequence[tuple[str, str]],
    checked: datetime,
    *,
    workers: int = DEFAULT_STAT_WORKERS,
) -> Iterator[FileRow]:
    """One :class:`FileRow` per item and declared output (``outputs``: (file_type, template)),
    item by item in the order given, from a stat of each file.

    The stats run on a pool of ``workers`` threads: on a shared filesystem each one is a
    network round trip, and a serial scan of a million files would be bound by latency,
    not by anything local. Results are still yielded in input order, lazily, so the
    rows stream into COPY while later files are being statted.
    """

    def planned() -> Iterator[tuple[int, str, str]]:
        for process_id, values in items:
            for file_type, template in outputs:
                yield process_id, file_type, render_output(template, values)

    files = planned()
    blocks = iter(lambda: list(itertools.islice(files, _STAT_BLOCK)), [])
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ecod-stat") as pool:
        pending: deque[tuple[list[tuple[int, str, str]], Future[list[tuple[bool, int | None]]]]] = deque()

        def submit() -> bool:
            block = next(blocks, None)
            if block is None:
                return False
            paths = [os.path.join(base_path, rel) for _, _, rel in block]
            pending.append((block, pool.submit(_stat_block, paths)))
            return True

        while len(pending) < 4 * max(1, workers) and submit():
            pass
        while pending:
            block, future = pending.popleft()
            submit()
            for (process_id, file_type, rel), (exists, size) in zip(block, future.result(), strict=True):
                yield FileRow(process_id, file_type, rel, exists, size, checked)


# --------------------------------------------------------------------------- files register


@contextlib.contextmanager
def _batch_items(
    db: Database, batch_id: int
) -> Iterator[tuple[str, Iterator[tuple[int, Mapping[str, object]]]]]:
    """The batch's base path and its items' (process id, template values),
    streamed from one query by a server-side cursor (a million items are never all in
    memory); ValidationError if the batch does not exist or has no base path."""
    conn = db.connect()
    try:
        with conn, conn.cursor(name="ecod_jobs_file_items") as cur:
            cur.itersize = 10_000
            cur.execute(
                sql.SQL(
                    "SELECT b.base_path, ps.id, ps.protein_id, ps.relative_path FROM {} b"
                    " LEFT JOIN {} ps ON ps.batch_id = b.id WHERE b.id = %s ORDER BY ps.id"
                ).format(db.table("batch"), db.table("process_status")),
                (batch_id,),
            )
            first = cur.fetchone()
            if first is None:
                raise ValidationError(f"batch {batch_id} does not exist", {"batch_id": batch_id})
            base_path = first[0]
            if not base_path:
                raise ValidationError(
                    f"batch {batch_id} has no base_path: its output files cannot be located"
                    " (process_file paths are relative to it)",
                    {"batch_id": batch_id},
                )

            def items() -> Iterator[tuple[int, Mapping[str, object]]]:
                for _, pid, protein_id, relative_path in itertools.chain([first], cur):
                    if pid is not None:  # a batch without items: the LEFT JOIN's one empty row
                        yield pid, item_template_values(pid, protein_id, batch_id, relative_path)

            yield str(base_path), items()
    except psycopg2.Error as exc:
        raise DatabaseError(
            f"database error on {db.info.describe()} reading batch {batch_id}: {exc}"
        ) from exc
    finally:
        conn.close()


def register_files(
    db: Database, batch_id: int, outputs: Sequence[tuple[str, str]], *, workers: int = DEFAULT_STAT_WORKERS
) -> dict[str, int]:
    """Scan the declared ``outputs`` ((file_type, template)) of every item of the batch on
    disk and bring ``process_file`` in line: ``ecod-jobs files register --batch N``.

    Items stream from one query straight through the stat pool into COPY, and every row
    is written in one transaction, so a scan that fails half way (a bad template, the
    database going away) leaves the table as it was. Idempotent: a second scan of
    unchanged files writes nothing. Returns counts: items, files (scanned), present,
    missing, written (rows), inserted, updated (rows), unchanged (pairs).
    """
    for _, template in outputs:
        try:
            check_output_template(template)
        except ValueError as exc:
            raise ValidationError(f"batch {batch_id}: {exc}", {"batch_id": batch_id}) from None
    checked = datetime.now()  # process_file.last_checked is a timestamp without time zone
    seen = {"items": 0, "files": 0, "present": 0}

    def counted(rows: Iterable[FileRow]) -> Iterator[FileRow]:
        for row in rows:
            seen["files"] += 1
            seen["present"] += row.file_exists
            yield row

    def counted_items(
        items: Iterable[tuple[int, Mapping[str, object]]],
    ) -> Iterator[tuple[int, Mapping[str, object]]]:
        for item in items:
            seen["items"] += 1
            yield item

    try:
        with _batch_items(db, batch_id) as (base_path, items), db.transaction() as cur:
            scanned = scan_outputs(base_path, counted_items(items), outputs, checked, workers=workers)
            counts = write_files(cur, db, counted(scanned))
    except ValueError as exc:  # an item's value made a path outside the base path
        raise ValidationError(f"batch {batch_id}: {exc}", {"batch_id": batch_id}) from None
    result = {
        **seen,
        "missing": seen["files"] - seen["present"],
        "written": counts.written,
        "inserted": counts.inserted,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
    }
    log.info("batch %d: process_file registered %s", batch_id, result)
    return result


__all__ = [
    "DEFAULT_STAT_WORKERS",
    "PLACEHOLDERS",
    "FileRow",
    "WriteCounts",
    "check_output_template",
    "item_template_values",
    "register_files",
    "render_output",
    "scan_outputs",
    "upsert_files",
    "write_files",
]
