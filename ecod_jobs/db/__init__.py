"""PostgreSQL data layer: connections, schema migrations, bulk writes, batches."""

from .batches import (
    Batch,
    create_batch,
    failed_items,
    get_batch,
    job_counts,
    list_batches,
    ordered_counts,
    require_batch,
    status_counts,
)
from .connection import ConnectionInfo, Database, Snapshot, is_transient, retry_while_away, snapshot
from .schema import LATEST_VERSION, current_version, init_schema, require_schema

__all__ = [
    "LATEST_VERSION",
    "Batch",
    "ConnectionInfo",
    "Database",
    "Snapshot",
    "create_batch",
    "current_version",
    "failed_items",
    "get_batch",
    "init_schema",
    "is_transient",
    "job_counts",
    "list_batches",
    "ordered_counts",
    "require_batch",
    "require_schema",
    "retry_while_away",
    "snapshot",
    "status_counts",
]
