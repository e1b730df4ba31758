"""8. process_file: registering 1,000,000 outputs (issue 14).

Ours: ``upsert_files`` of 1,000,000 FileRows (250,000 items x 4 file types, as a
four-stage pipeline leaves them) in one transaction, into a database that already
holds the items' ``process_status`` rows: what ``ecod-jobs files register`` and the
pipeline's recorder write. It stages the rows with COPY, keeps the last of a repeated
(process_id, file_type), updates existing rows in place and inserts the rest.
Baseline: a raw COPY of the same rows straight into ``process_file`` (COPY text
rendered before the clock starts): the physical limit, which neither updates an
existing row nor keeps a second one from being added.

Notes: the same registration again (nothing changed, nothing written) and one where
every file changed size (every row updated in place), as a re-scan does.

    python -m bench.process_files [--outputs 100000]   # this row alone, quickly
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .common import Measurement, connect, log, scratch_database, timed
from .registration import checkpoint, copy_text

OUTPUTS = 1_000_000
FILE_TYPES = ("chain_blast_result", "domain_blast_result", "hhsearch_result", "domain_summary")
COLUMNS = ("process_id", "file_type", "file_path", "file_exists", "file_size", "last_checked")


def vacuum(section: dict[str, Any]) -> None:
    """Every timed step starts from a vacuumed, analysed table and no dirty buffers."""
    conn = connect(section)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE ecod_schema.process_file")
    conn.close()
    checkpoint(section)


def truncate(section: dict[str, Any]) -> None:
    conn = connect(section)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE ecod_schema.process_file")
    conn.close()


def raw_copy(section: dict[str, Any], rows: list[Any]) -> float:
    """Seconds to COPY ``rows`` into process_file and commit (text rendered beforehand)."""
    text = copy_text(
        [(r.process_id, r.file_type, r.file_path, r.file_exists, r.file_size, r.last_checked) for r in rows]
    )
    conn = connect(section)

    def load() -> None:
        with conn, conn.cursor() as cur:
            cur.copy_expert(f"COPY ecod_schema.process_file ({', '.join(COLUMNS)}) FROM STDIN", text)

    seconds, _ = timed(load)
    conn.close()
    return seconds


def measure(work: Path, outputs: int = OUTPUTS) -> list[Measurement]:
    from ecod_jobs.config import from_mapping
    from ecod_jobs.db import Database, create_batch, init_schema
    from ecod_jobs.items import ItemRow
    from ecod_jobs.process_files import FileRow, write_files

    items = max(1, outputs // len(FILE_TYPES))
    outputs = items * len(FILE_TYPES)
    with scratch_database() as section:
        db = Database(from_mapping({"database": section, "job_types": {"t": {"command": "true"}}}))
        init_schema(db)
        log(f"process_file: {items:,} process_status rows to register outputs for")
        batch_id = create_batch(
            db, "process_file", [ItemRow(f"chains/{i:07d}.fa") for i in range(items)], base_path=str(work)
        )
        (first,) = db.query(
            "SELECT min(id) FROM ecod_schema.process_status WHERE batch_id = %s", (batch_id,)
        )[0]
        checked = datetime(2026, 12, 1, 12, 0, 0)
        rows = [
            FileRow(first + i, file_type, f"{file_type}/{i:07d}.out", True, 1000 + i % 5000, checked)
            for i in range(items)
            for file_type in FILE_TYPES
        ]

        log(f"process_file: raw COPY of {outputs:,} rows into process_file (baseline)")
        vacuum(section)
        baseline = raw_copy(section, rows)
        truncate(section)

        def register(batch: list[FileRow]) -> Any:
            with db.transaction() as cur:
                return write_files(cur, db, batch)

        log(f"process_file: upsert_files of {outputs:,} rows (first registration)")
        vacuum(section)
        ours, first_counts = timed(lambda: register(rows))
        assert first_counts.inserted == outputs, first_counts
        log("process_file: the same rows again (nothing changed)")
        vacuum(section)
        again, again_counts = timed(lambda: register(rows))
        assert again_counts.written == 0, again_counts
        later = checked + timedelta(hours=1)
        changed = [
            FileRow(r.process_id, r.file_type, r.file_path, True, r.file_size + 1, later) for r in rows
        ]
        log("process_file: every file changed (all rows updated in place)")
        vacuum(section)
        update, update_counts = timed(lambda: register(changed))
        assert update_counts.updated == outputs, update_counts
        (total,) = db.query("SELECT count(*) FROM ecod_schema.process_file")[0]
        assert total == outputs, f"{total} process_file rows after three registrations of {outputs}"
    rate, base_rate = outputs / ours, outputs / baseline
    return [
        Measurement(
            "process_file",
            f"process_file: registering {outputs:,} outputs (rows/s)",
            rate,
            "rows/s",
            baseline="raw COPY of the same rows into process_file",
            baseline_value=base_rate,
            notes=[
                f"{items:,} items x {len(FILE_TYPES)} file types; ours {ours:.1f} s (stage, update in place,"
                f" insert the new), raw COPY {baseline:.1f} s; again, nothing changed: {again:.1f} s,"
                f" 0 rows written; every file changed: {update:.1f} s, {outputs:,} rows updated in place,"
                " none added"
            ],
        )
    ]


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from .run import environment, markdown

    parser = argparse.ArgumentParser(
        prog="python -m bench.process_files", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--outputs", type=int, default=OUTPUTS, help="process_file rows to register")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ecod-bench-process-file-") as work:
        results = measure(Path(work), args.outputs)
    print(markdown(results, environment(), time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
