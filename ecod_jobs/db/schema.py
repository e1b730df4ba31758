"""Schema creation and versioned, additive migrations.

Version 1 is the schema a real ECOD database already has (pyECOD's ``batch``,
``process_status``, ``process_file``, ``job`` and ``job_item``), created only
where missing. Later versions only add: tables, nullable or defaulted columns
(``ADD COLUMN IF NOT EXISTS``) and indexes. Nothing is dropped, renamed or
rewritten, so ``db init`` is safe on a production ECOD database with data.

All migrations run in one transaction under an advisory lock, so two
concurrent ``db init`` calls cannot interleave.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg2 import sql

from .connection import Database

log = logging.getLogger(__name__)

# Any fixed number; keeps concurrent initialisations of one database serial.
_ADVISORY_LOCK_KEY = 0x0EC0D_0B5


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]  # "{s}" stands for the quoted schema name


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "ECOD core tables (pyECOD-compatible; created only where missing)",
        (
            """CREATE TABLE IF NOT EXISTS {s}.batch (
                id SERIAL PRIMARY KEY,
                batch_name VARCHAR(100) NOT NULL,
                base_path TEXT NOT NULL,
                type VARCHAR(20) NOT NULL,
                ref_version VARCHAR(50) NOT NULL,
                total_items INTEGER NOT NULL,
                completed_items INTEGER DEFAULT 0,
                status VARCHAR(20) DEFAULT 'created',
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                completed_at TIMESTAMP
            )""",
            # protein_id references ECOD's protein table where one exists; ecod-jobs
            # does not own that table, so a fresh database gets the column alone.
            """CREATE TABLE IF NOT EXISTS {s}.process_status (
                id SERIAL PRIMARY KEY,
                protein_id INTEGER,
                batch_id INTEGER REFERENCES {s}.batch(id),
                current_stage VARCHAR(50) NOT NULL,
                status VARCHAR(20) DEFAULT 'pending',
                is_representative BOOLEAN DEFAULT FALSE,
                relative_path TEXT,
                error_message TEXT,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
            )""",
            """CREATE TABLE IF NOT EXISTS {s}.process_file (
                id SERIAL PRIMARY KEY,
                process_id INTEGER REFERENCES {s}.process_status(id),
                file_type VARCHAR(50),
                file_path TEXT,
                file_exists BOOLEAN,
                file_size BIGINT,
                last_checked TIMESTAMP DEFAULT CURRENT_TIMESTAMP
            )""",
            """CREATE TABLE IF NOT EXISTS {s}.job (
                id SERIAL PRIMARY KEY,
                batch_id INTEGER REFERENCES {s}.batch(id),
                job_type VARCHAR(50) NOT NULL,
                slurm_job_id VARCHAR(50),
                status VARCHAR(20) DEFAULT 'submitted',
                items_count INTEGER,
                submission_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                completion_time TIMESTAMP
            )""",
            """CREATE TABLE IF NOT EXISTS {s}.job_item (
                id SERIAL PRIMARY KEY,
                job_id INTEGER REFERENCES {s}.job(id),
                process_id INTEGER REFERENCES {s}.process_status(id),
                status VARCHAR(20) DEFAULT 'pending'
            )""",
        ),
    ),
    Migration(
        2,
        "ecod-jobs tracking: workflow runs, per-job and per-item detail, indexes",
        (
            """CREATE TABLE IF NOT EXISTS {s}.ecod_jobs_run (
                run_id UUID PRIMARY KEY,
                batch_id INTEGER REFERENCES {s}.batch(id),
                job_type VARCHAR(50) NOT NULL,
                profile TEXT,
                host TEXT,
                username TEXT,
                pid INTEGER,
                config_hash VARCHAR(64),
                snakemake_version VARCHAR(40),
                ecod_jobs_version VARCHAR(40),
                planned_items INTEGER,
                planned_chunks INTEGER,
                status VARCHAR(20) NOT NULL DEFAULT 'running',
                message TEXT,
                started_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                ended_at TIMESTAMP
            )""",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS run_id UUID",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS chunk_id VARCHAR(64)",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS attempt INTEGER DEFAULT 1",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS scheduler_state VARCHAR(32)",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS exit_code INTEGER",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS node VARCHAR(100)",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS start_time TIMESTAMP",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS elapsed_seconds DOUBLE PRECISION",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS cpu_seconds DOUBLE PRECISION",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS max_rss_kb BIGINT",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS req_mem_mb INTEGER",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS req_time_seconds INTEGER",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS error_text TEXT",
            "ALTER TABLE {s}.job ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP",
            "ALTER TABLE {s}.job_item ADD COLUMN IF NOT EXISTS exit_code INTEGER",
            "ALTER TABLE {s}.job_item ADD COLUMN IF NOT EXISTS start_time TIMESTAMP",
            "ALTER TABLE {s}.job_item ADD COLUMN IF NOT EXISTS end_time TIMESTAMP",
            "ALTER TABLE {s}.job_item ADD COLUMN IF NOT EXISTS elapsed_seconds DOUBLE PRECISION",
            "ALTER TABLE {s}.job_item ADD COLUMN IF NOT EXISTS error_text TEXT",
            "CREATE INDEX IF NOT EXISTS process_status_batch_status_idx"
            " ON {s}.process_status (batch_id, status)",
            "CREATE INDEX IF NOT EXISTS job_batch_idx ON {s}.job (batch_id, job_type)",
            "CREATE INDEX IF NOT EXISTS job_item_job_idx ON {s}.job_item (job_id)",
            "CREATE INDEX IF NOT EXISTS job_item_process_idx ON {s}.job_item (process_id)",
        ),
    ),
    Migration(
        3,
        "one job row per workflow run, chunk and attempt (idempotent sync)",
        (
            "CREATE UNIQUE INDEX IF NOT EXISTS job_run_chunk_attempt_key"
            " ON {s}.job (run_id, chunk_id, attempt) WHERE run_id IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS ecod_jobs_run_batch_idx ON {s}.ecod_jobs_run (batch_id)",
        ),
    ),
    Migration(
        4,
        "run leases: one live run per batch and job type, kept alive by a heartbeat",
        (
            """CREATE TABLE IF NOT EXISTS {s}.ecod_jobs_lease (
                batch_id INTEGER NOT NULL REFERENCES {s}.batch(id),
                job_type VARCHAR(50) NOT NULL,
                run_id UUID NOT NULL,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL,
                acquired_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                heartbeat_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                PRIMARY KEY (batch_id, job_type)
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(db: Database) -> int:
    """Applied schema version; 0 when ecod-jobs never initialised this schema."""
    rows = db.query("SELECT to_regclass(%s) IS NOT NULL", (f"{db.schema}.ecod_jobs_schema_version",))
    if not rows[0][0]:
        return 0
    rows = db.query(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(db.table("ecod_jobs_schema_version"))
    )
    return int(rows[0][0])


def init_schema(db: Database) -> list[int]:
    """Create the schema and apply pending migrations; returns the versions applied."""
    schema = sql.Identifier(db.schema)
    applied: list[int] = []
    with db.transaction() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        cur.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    version INTEGER PRIMARY KEY,
                    description TEXT NOT NULL,
                    applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
                )"""
            ).format(db.table("ecod_jobs_schema_version"))
        )
        cur.execute(sql.SQL("SELECT version FROM {}").format(db.table("ecod_jobs_schema_version")))
        done = {row[0] for row in cur.fetchall()}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            log.info("applying schema migration %d: %s", migration.version, migration.description)
            for statement in migration.statements:
                cur.execute(sql.SQL(statement).format(s=schema))
            cur.execute(
                sql.SQL("INSERT INTO {} (version, description) VALUES (%s, %s)").format(
                    db.table("ecod_jobs_schema_version")
                ),
                (migration.version, migration.description),
            )
            applied.append(migration.version)
    return applied
