"""Schema creation and versioned, additive migrations.

Version 1 is the schema a real ECOD database already has (pyECOD's ``batch``,
``process_status``, ``process_file``, ``job`` and ``job_item``), created only
where missing. Later versions only add: tables, nullable or defaulted columns
(``ADD COLUMN IF NOT EXISTS``), indexes, and (version 5) statement-level
triggers that count items. Nothing of ECOD's is dropped, renamed or rewritten
(the one index ever dropped is ecod-jobs' own, replaced by a wider one), so
``db init`` is safe on a production ECOD database with data.

All migrations run in one transaction under an advisory lock, so two
concurrent ``db init`` calls cannot interleave.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg2 import sql

from ..exceptions import ConfigurationError
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
    Migration(
        5,
        "item counts per batch and status, kept by statement-level triggers on process_status",
        (
            # Read by `status`, the run summary and the dashboard instead of counting a
            # batch's rows: constant time on a 1,000,000-item batch. The triggers see
            # every writer (ecod-jobs or not) and add one aggregate per statement, not
            # per row, so bulk COPY and UPDATE stay bulk.
            """CREATE TABLE IF NOT EXISTS {s}.ecod_jobs_status_count (
                batch_id INTEGER NOT NULL,
                status VARCHAR(20) NOT NULL,
                items BIGINT NOT NULL,
                PRIMARY KEY (batch_id, status)
            )""",
            # Locked in key order, so two writers of one batch wait rather than deadlock.
            """CREATE OR REPLACE FUNCTION {s}.ecod_jobs_count_items() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'TRUNCATE' THEN
                    DELETE FROM {s}.ecod_jobs_status_count;
                ELSIF TG_OP = 'INSERT' THEN
                    INSERT INTO {s}.ecod_jobs_status_count AS c (batch_id, status, items)
                    SELECT batch_id, coalesce(status, ''), count(*) FROM new_rows
                    WHERE batch_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
                    ON CONFLICT (batch_id, status) DO UPDATE SET items = c.items + EXCLUDED.items;
                ELSIF TG_OP = 'DELETE' THEN
                    UPDATE {s}.ecod_jobs_status_count c SET items = c.items - d.n
                    FROM (SELECT batch_id, coalesce(status, '') AS status, count(*) AS n FROM old_rows
                          WHERE batch_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2) d
                    WHERE c.batch_id = d.batch_id AND c.status = d.status;
                ELSE
                    INSERT INTO {s}.ecod_jobs_status_count AS c (batch_id, status, items)
                    SELECT batch_id, status, sum(n) FROM (
                        SELECT batch_id, coalesce(status, '') AS status, count(*) AS n FROM new_rows
                        WHERE batch_id IS NOT NULL GROUP BY 1, 2
                        UNION ALL
                        SELECT batch_id, coalesce(status, ''), -count(*) FROM old_rows
                        WHERE batch_id IS NOT NULL GROUP BY 1, 2
                    ) d GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
                    ON CONFLICT (batch_id, status) DO UPDATE SET items = c.items + EXCLUDED.items;
                END IF;
                RETURN NULL;
            END $$""",
            "DROP TRIGGER IF EXISTS ecod_jobs_count_insert ON {s}.process_status",
            "DROP TRIGGER IF EXISTS ecod_jobs_count_update ON {s}.process_status",
            "DROP TRIGGER IF EXISTS ecod_jobs_count_delete ON {s}.process_status",
            "DROP TRIGGER IF EXISTS ecod_jobs_count_truncate ON {s}.process_status",
            "CREATE TRIGGER ecod_jobs_count_insert AFTER INSERT ON {s}.process_status"
            " REFERENCING NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION {s}.ecod_jobs_count_items()",
            "CREATE TRIGGER ecod_jobs_count_update AFTER UPDATE ON {s}.process_status"
            " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION {s}.ecod_jobs_count_items()",
            "CREATE TRIGGER ecod_jobs_count_delete AFTER DELETE ON {s}.process_status"
            " REFERENCING OLD TABLE AS old_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION {s}.ecod_jobs_count_items()",
            "CREATE TRIGGER ecod_jobs_count_truncate AFTER TRUNCATE ON {s}.process_status"
            " FOR EACH STATEMENT EXECUTE FUNCTION {s}.ecod_jobs_count_items()",
            # Failed items in id order (status, dashboard) read 100 index entries, not
            # every error row of the batch; it replaces migration 2's (batch_id, status),
            # an index of ecod-jobs' own, so writes maintain one index, not two.
            "CREATE INDEX IF NOT EXISTS process_status_batch_status_id_idx"
            " ON {s}.process_status (batch_id, status, id)",
            "DROP INDEX IF EXISTS {s}.process_status_batch_status_idx",
            # The rows already there, counted once; the triggers (created above, in this
            # transaction) hold writers off until it commits, so nothing is missed.
            "DELETE FROM {s}.ecod_jobs_status_count",
            "INSERT INTO {s}.ecod_jobs_status_count (batch_id, status, items)"
            " SELECT batch_id, coalesce(status, ''), count(*) FROM {s}.process_status"
            " WHERE batch_id IS NOT NULL GROUP BY 1, 2",
        ),
    ),
    Migration(
        6,
        "chunk jobs of a batch, newest first, by index (the dashboard's jobs and plots)",
        (
            # The latest N jobs of one batch read N index entries; without it the server
            # walks the whole job table backwards by id, past every other batch's jobs.
            "CREATE INDEX IF NOT EXISTS job_batch_id_idx ON {s}.job (batch_id, id)",
        ),
    ),
    Migration(
        7,
        "database identity: a random uuid made once, written into every run's plan.json",
        (
            # Batch ids are per database, so a work root shared between databases (or
            # used again by a database restored from an old backup) holds runs of
            # several; sync, cancel and recovery read only the runs whose plan.json
            # carries this id (see ecod_jobs/ownership.py). One row, enforced by the key.
            """CREATE TABLE IF NOT EXISTS {s}.ecod_jobs_database (
                one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
                database_id UUID NOT NULL,
                created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
            )""",
            # md5 of random and time rather than gen_random_uuid(), which needs
            # PostgreSQL 13; a copy of the database (pg_dump, a restore) keeps the id.
            "INSERT INTO {s}.ecod_jobs_database (database_id)"
            " SELECT md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text)::uuid"
            " ON CONFLICT (one) DO NOTHING",
        ),
    ),
    Migration(
        8,
        "pipelines: one row per item and stage (status, metrics), process_file lookups",
        (
            # The state of each item in each pipeline stage. Stage names are global
            # (two pipelines sharing a stage share its results). No row, or 'pending',
            # means not run; success and skipped are done; 'running' is held by run_id.
            """CREATE TABLE IF NOT EXISTS {s}.ecod_jobs_item_stage (
                process_id INTEGER NOT NULL REFERENCES {s}.process_status(id) ON DELETE CASCADE,
                stage VARCHAR(50) NOT NULL,
                batch_id INTEGER NOT NULL,
                status VARCHAR(20) NOT NULL,
                run_id UUID,
                job_id INTEGER,
                attempt INTEGER,
                metrics JSONB,
                error_message TEXT,
                start_time TIMESTAMP,
                end_time TIMESTAMP,
                updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                PRIMARY KEY (process_id, stage)
            )""",
            "CREATE INDEX IF NOT EXISTS ecod_jobs_item_stage_batch_idx"
            " ON {s}.ecod_jobs_item_stage (batch_id, stage, status)",
            # Real ECOD databases have no unique key on (process_id, file_type) and may
            # hold duplicates: a plain index for the writer's in-place updates, no key.
            "CREATE INDEX IF NOT EXISTS process_file_process_type_idx"
            " ON {s}.process_file (process_id, file_type)",
        ),
    ),
    Migration(
        9,
        "detached heads: where a run's head runs (a SLURM job, or a daemon on a host)",
        (
            # Written when `run --detach` starts the head, before the run exists (a head
            # job may wait in the queue for hours): status and cancel find it here.
            """CREATE TABLE IF NOT EXISTS {s}.ecod_jobs_head (
                run_id UUID PRIMARY KEY,
                batch_id INTEGER NOT NULL REFERENCES {s}.batch(id),
                job_type VARCHAR(50) NOT NULL,
                kind VARCHAR(10) NOT NULL CHECK (kind IN ('slurm', 'local')),
                slurm_job_id VARCHAR(50),
                host TEXT,
                pid INTEGER,
                log_path TEXT NOT NULL,
                submitted_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                started_at TIMESTAMP,
                ended_at TIMESTAMP,
                exit_code INTEGER
            )""",
            "CREATE INDEX IF NOT EXISTS ecod_jobs_head_batch_idx ON {s}.ecod_jobs_head (batch_id)",
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


def require_schema(db: Database, minimum: int = LATEST_VERSION, needed_by: str = "this command") -> Database:
    """The database, once its schema is at ``minimum`` or later; else a ConfigurationError
    (exit 2) saying to run ``ecod-jobs db init``, instead of 'relation does not exist'.
    For commands that only read: those that write run ``init_schema`` themselves."""
    version = current_version(db)
    if version < minimum:
        state = "has no ecod-jobs tables" if version == 0 else f"is at version {version}"
        raise ConfigurationError(
            f"schema {db.schema} on {db.info.describe()} {state}; {needed_by} needs version"
            f" {minimum} or later: run `ecod-jobs db init` first",
            {"schema": db.schema, "version": version},
        )
    return db


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
