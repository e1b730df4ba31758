"""Database layer against a real PostgreSQL: schema init, migrations, batch creation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import run_cli, write_config

from ecod_jobs.db import Database, create_batch, current_version, init_schema, status_counts
from ecod_jobs.db.schema import LATEST_VERSION
from ecod_jobs.exceptions import DatabaseUnavailableError, ValidationError
from ecod_jobs.items import ItemRow

# pyECOD's own DDL for the tables ecod-jobs shares, plus a column of its own
# that ecod-jobs does not know, to prove init leaves it alone.
PYECOD_DDL = """
CREATE SCHEMA ecod_schema;
CREATE TABLE ecod_schema.protein (id SERIAL PRIMARY KEY, pdb_id VARCHAR(4), chain_id VARCHAR(4));
CREATE TABLE ecod_schema.batch (
    id SERIAL PRIMARY KEY, batch_name VARCHAR(100) NOT NULL, base_path TEXT NOT NULL,
    type VARCHAR(20) NOT NULL, ref_version VARCHAR(50) NOT NULL, total_items INTEGER NOT NULL,
    completed_items INTEGER DEFAULT 0, status VARCHAR(20) DEFAULT 'created',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, completed_at TIMESTAMP);
CREATE TABLE ecod_schema.process_status (
    id SERIAL PRIMARY KEY, protein_id INTEGER REFERENCES ecod_schema.protein(id),
    batch_id INTEGER REFERENCES ecod_schema.batch(id), current_stage VARCHAR(50) NOT NULL,
    status VARCHAR(20) DEFAULT 'pending', is_representative BOOLEAN DEFAULT FALSE,
    relative_path TEXT, error_message TEXT, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, curator_note TEXT);
CREATE TABLE ecod_schema.job (
    id SERIAL PRIMARY KEY, batch_id INTEGER REFERENCES ecod_schema.batch(id),
    job_type VARCHAR(50) NOT NULL, slurm_job_id VARCHAR(50), status VARCHAR(20) DEFAULT 'submitted',
    items_count INTEGER, submission_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP, completion_time TIMESTAMP);
CREATE TABLE ecod_schema.job_item (
    id SERIAL PRIMARY KEY, job_id INTEGER REFERENCES ecod_schema.job(id),
    process_id INTEGER REFERENCES ecod_schema.process_status(id), status VARCHAR(20) DEFAULT 'pending');
INSERT INTO ecod_schema.protein (pdb_id, chain_id) VALUES ('1abc', 'A'), ('2xyz', 'B');
INSERT INTO ecod_schema.batch (batch_name, base_path, type, ref_version, total_items, status)
    VALUES ('ecod_batch_031', '/data/ecod/batch_031', 'pdb_hhsearch', 'develop291', 2, 'indexed');
INSERT INTO ecod_schema.process_status
    (protein_id, batch_id, current_stage, status, relative_path, curator_note)
    VALUES (1, 1, 'blast_completed', 'success', '1abc_A', 'keep me'),
           (2, 1, 'hhsearch_failed', 'error', '2xyz_B', NULL);
INSERT INTO ecod_schema.job (batch_id, job_type, slurm_job_id, status, items_count)
    VALUES (1, 'blast', '555', 'completed', 2);
INSERT INTO ecod_schema.job_item (job_id, process_id, status) VALUES (1, 1, 'completed'), (1, 2, 'failed');
"""


def table_snapshot(conn: psycopg2.extensions.connection, table: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM ecod_schema.{table} ORDER BY id")
        return cur.fetchall()


def columns(conn: psycopg2.extensions.connection, table: str) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'ecod_schema' AND table_name = %s",
            (table,),
        )
        return dict(cur.fetchall())


def test_init_empty_database_twice(db_config: dict[str, Any], pg_conn: Any) -> None:
    db = Database(db_config)
    assert current_version(db) == 0
    assert init_schema(db) == list(range(1, LATEST_VERSION + 1))
    assert current_version(db) == LATEST_VERSION
    assert init_schema(db) == []  # idempotent
    for table in ("batch", "process_status", "process_file", "job", "job_item", "ecod_jobs_run"):
        assert columns(pg_conn, table), table
    job_cols = columns(pg_conn, "job")
    for name in (
        "batch_id",
        "job_type",
        "slurm_job_id",
        "status",
        "items_count",
        "submission_time",
        "completion_time",
        "attempt",
        "exit_code",
        "node",
        "elapsed_seconds",
        "max_rss_kb",
        "error_text",
    ):
        assert name in job_cols, name


def test_init_on_pyecod_database_keeps_rows_and_columns(db_config: dict[str, Any], pg_conn: Any) -> None:
    with pg_conn.cursor() as cur:
        cur.execute(PYECOD_DDL)
    before = {t: table_snapshot(pg_conn, t) for t in ("batch", "process_status", "job", "job_item")}
    before_cols = {t: columns(pg_conn, t) for t in before}
    db = Database(db_config)
    assert init_schema(db) == list(range(1, LATEST_VERSION + 1))
    assert init_schema(db) == []
    for table, rows in before.items():
        after = table_snapshot(pg_conn, table)
        width = len(before_cols[table])
        # existing columns keep their values; new columns are appended after them
        assert [row[:width] for row in after] == rows, table
        after_cols = columns(pg_conn, table)
        assert all(after_cols[c] == t for c, t in before_cols[table].items())
    assert "curator_note" in columns(pg_conn, "process_status")
    # and ecod-jobs can add a batch next to pyECOD's
    batch_id = create_batch(db, "new", [ItemRow("p1"), ItemRow("p2", protein_id=2)])
    assert batch_id == 2
    assert status_counts(db, 1) == {"success": 1, "error": 1}


def test_create_batch_bulk(db_config: dict[str, Any], pg_conn: Any) -> None:
    db = Database(db_config)
    init_schema(db)
    items = [ItemRow(f"chains/{i:06d}.fa", protein_id=i) for i in range(50_000)]
    items.append(ItemRow("odd\\path\twith tab", None))
    batch_id = create_batch(db, "bulk", items, batch_type="pdb", base_path="/data", ref_version="develop291")
    with pg_conn.cursor() as cur:
        cur.execute(
            "SELECT total_items, status, base_path, type, ref_version FROM ecod_schema.batch WHERE id = %s",
            (batch_id,),
        )
        assert cur.fetchone() == (50_001, "created", "/data", "pdb", "develop291")
        cur.execute(
            "SELECT count(*), count(DISTINCT relative_path), min(protein_id), max(protein_id)"
            " FROM ecod_schema.process_status WHERE batch_id = %s AND status = 'pending'",
            (batch_id,),
        )
        assert cur.fetchone() == (50_001, 50_001, 0, 49_999)
        cur.execute(
            "SELECT protein_id FROM ecod_schema.process_status WHERE relative_path = %s",
            ("odd\\path\twith tab",),
        )
        assert cur.fetchone() == (None,)


def test_create_batch_rejects_long_fields_and_writes_nothing(db_config: dict[str, Any], pg_conn: Any) -> None:
    db = Database(db_config)
    init_schema(db)
    with pytest.raises(ValidationError, match="type 'x{21}' is 21 characters long: expected at most 20"):
        create_batch(db, "b", [ItemRow("p")], batch_type="x" * 21)
    assert table_snapshot(pg_conn, "batch") == []


def test_unreachable_database_is_one_clear_line() -> None:
    from ecod_jobs.config import from_mapping

    db = Database(from_mapping({"database": {"host": "127.0.0.1", "port": 1, "connect_timeout": 2}}))
    with pytest.raises(DatabaseUnavailableError) as info:
        db.connect()
    message = str(info.value)
    assert "127.0.0.1:1" in message and "refused" in message.lower()
    assert "\n" not in message


def _cli_config(tmp_path: Path, scratch_db: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / "config.yml", {"database": scratch_db, "job_types": {"echo": {"command": "echo {path}"}}}
    )


def test_cli_db_init_and_batch_create(tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any) -> None:
    cfg = _cli_config(tmp_path, scratch_db)
    result = run_cli("--config", str(cfg), "db", "init")
    assert result.returncode == 0, result.stderr
    assert f"version {LATEST_VERSION}" in result.stdout
    items = tmp_path / "items.tsv"
    items.write_text("path\tprotein_id\n" + "".join(f"seq/{i}.fa\t{i}\n" for i in range(1, 101)))
    result = run_cli(
        "--config",
        str(cfg),
        "batch",
        "create",
        "--name",
        "b1",
        "--items",
        str(items),
        "--type",
        "pdb",
        "--base-path",
        str(tmp_path),
        "--ref-version",
        "develop291",
    )
    assert result.returncode == 0, result.stderr
    batch_id = int(result.stdout.strip().splitlines()[-1])
    with pg_conn.cursor() as cur:
        cur.execute(
            "SELECT batch_name, total_items, base_path FROM ecod_schema.batch WHERE id = %s", (batch_id,)
        )
        assert cur.fetchone() == ("b1", 100, str(tmp_path))
        cur.execute("SELECT count(*) FROM ecod_schema.process_status WHERE batch_id = %s", (batch_id,))
        assert cur.fetchone() == (100,)
    listing = run_cli("--config", str(cfg), "batch", "list")
    assert "b1" in listing.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "line 1"),
        (b"protein_id\n1\n", "no 'path' column"),
        (b"path\tprotein_id\na\t1\nb\tone\n", "line 3: protein_id 'one'"),
        (b"path\na\n\xc3\x28\n", "line 3: not valid UTF-8"),
    ],
)
def test_cli_batch_create_bad_file_writes_nothing(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, content: bytes, fragment: str
) -> None:
    cfg = _cli_config(tmp_path, scratch_db)
    assert run_cli("--config", str(cfg), "db", "init").returncode == 0
    items = tmp_path / "items.tsv"
    items.write_bytes(content)
    result = run_cli("--config", str(cfg), "batch", "create", "--name", "bad", "--items", str(items))
    assert result.returncode == 2
    assert fragment in result.stderr and str(items) in result.stderr
    assert "Traceback" not in result.stderr
    assert table_snapshot(pg_conn, "batch") == []
    assert table_snapshot(pg_conn, "process_status") == []


def test_cli_unreachable_database_exit_2(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.yml",
        {"database": {"host": "127.0.0.1", "port": 1, "password": "hunter2", "connect_timeout": 2}},
    )
    result = run_cli("--config", str(cfg), "db", "init")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_status_counts_follow_every_writer(db_config: dict[str, Any], pg_conn: Any) -> None:
    """The trigger-kept counts equal a GROUP BY after any mix of writes, ours or not."""
    db = Database(db_config)
    init_schema(db)
    first = create_batch(db, "one", [ItemRow(f"a{i}") for i in range(300)])
    second = create_batch(db, "two", [ItemRow(f"b{i}") for i in range(20)])
    writes = [
        # bulk, per row (as pyECOD's scripts do), moves between batches, NULLs, deletes
        "UPDATE ecod_schema.process_status SET status = 'processing' WHERE id <= 200",
        "UPDATE ecod_schema.process_status SET status = 'success' WHERE id = 5",
        "UPDATE ecod_schema.process_status SET status = 'error' WHERE id BETWEEN 6 AND 40",
        "UPDATE ecod_schema.process_status SET updated_at = now()",  # no status change
        f"UPDATE ecod_schema.process_status SET batch_id = {second} WHERE id BETWEEN 41 AND 50",
        "UPDATE ecod_schema.process_status SET status = NULL WHERE id = 51",
        "UPDATE ecod_schema.process_status SET batch_id = NULL WHERE id = 52",
        "DELETE FROM ecod_schema.process_status WHERE id BETWEEN 250 AND 260",
        f"INSERT INTO ecod_schema.process_status (batch_id, current_stage, status)"
        f" SELECT {first}, 'x', 'skipped' FROM generate_series(1, 7)",
    ]

    def group_by(batch_id: int) -> dict[str, int]:
        with pg_conn.cursor() as cur:
            cur.execute(
                "SELECT coalesce(status, ''), count(*) FROM ecod_schema.process_status"
                " WHERE batch_id = %s GROUP BY 1",
                (batch_id,),
            )
            return dict(cur.fetchall())

    for statement in writes:
        with pg_conn.cursor() as cur:
            cur.execute(statement)
        for batch_id in (first, second):
            assert status_counts(db, batch_id) == group_by(batch_id), statement
    assert status_counts(db, first)["error"] == 35
    with pg_conn.cursor() as cur:  # a rolled-back write leaves no trace in the counts
        cur.execute("BEGIN; UPDATE ecod_schema.process_status SET status = 'error'; ROLLBACK")
    assert status_counts(db, first) == group_by(first)
