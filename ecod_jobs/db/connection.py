"""Connections to PostgreSQL: a configured server or the embedded default."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ..config import is_embedded
from ..exceptions import DatabaseError, DatabaseUnavailableError

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "ecod"


@dataclass(frozen=True)
class ConnectionInfo:
    """Where to connect; ``describe()`` is safe to show (no password)."""

    host: str
    port: int
    dbname: str
    user: str | None
    password: str | None
    connect_timeout: int
    embedded: bool = False

    def describe(self) -> str:
        where = "embedded PostgreSQL" if self.embedded else "PostgreSQL"
        return f"{where} at {self.host}:{self.port}/{self.dbname}"

    def kwargs(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "connect_timeout": self.connect_timeout,
            "application_name": "ecod-jobs",
        }
        if self.user:
            args["user"] = self.user
        if self.password:
            args["password"] = self.password
        return args


def connection_info(config: Mapping[str, Any]) -> ConnectionInfo:
    """Resolve the configured database, starting the embedded server if that is the choice."""
    database = config.get("database") or {}
    timeout = int(database.get("connect_timeout", 10))
    if is_embedded(config):
        from .embedded import ensure_embedded

        return ensure_embedded(config)
    return ConnectionInfo(
        host=str(database["host"]),
        port=int(database.get("port", 5432)),
        dbname=str(database.get("database", DEFAULT_DATABASE)),
        user=database.get("user"),
        password=database.get("password"),
        connect_timeout=timeout,
    )


def _cause(exc: BaseException) -> str:
    """The useful part of libpq's message: 'Connection refused', 'password ... failed'."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if " failed: " in text:
        text = text.split(" failed: ", 1)[1]
    return text.removeprefix("FATAL:").strip()


def open_connection(info: ConnectionInfo) -> psycopg2.extensions.connection:
    try:
        return psycopg2.connect(**info.kwargs())
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to {info.describe()}: {_cause(exc)}",
            {"host": info.host, "port": info.port, "database": info.dbname},
        ) from None


class Database:
    """The configured database and schema: connections and qualified table names."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.schema: str = (config.get("database") or {}).get("schema", "ecod_schema")
        self._info: ConnectionInfo | None = None

    @property
    def info(self) -> ConnectionInfo:
        if self._info is None:
            self._info = connection_info(self.config)
        return self._info

    @property
    def retry_seconds(self) -> float:
        """How long a running workflow keeps retrying while the server is away."""
        return float((self.config.get("database") or {}).get("retry_seconds", 300))

    def table(self, name: str) -> sql.Composed:
        """``schema.name`` as a safely quoted identifier."""
        return sql.Identifier(self.schema, name)  # type: ignore[return-value]

    def connect(self) -> psycopg2.extensions.connection:
        return open_connection(self.info)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction: commit on success, roll back on any error, always close."""
        conn = self.connect()
        try:
            with conn, conn.cursor() as cur:
                yield cur
        except psycopg2.Error as exc:
            raise DatabaseError(f"database error on {self.info.describe()}: {_pg_message(exc)}") from exc
        finally:
            conn.close()

    def query(self, statement: sql.Composable | str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.transaction() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []


class Snapshot(Database):
    """A ``Database`` whose queries all run in one read-only, repeatable-read transaction:
    a view made of several queries sees one moment, over one connection."""

    def __init__(self, db: Database, cursor: psycopg2.extensions.cursor) -> None:
        super().__init__(db.config)
        self.schema, self._info, self._cursor = db.schema, db._info, cursor

    def query(self, statement: sql.Composable | str, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            self._cursor.execute(statement, params)
        except psycopg2.Error as exc:
            raise DatabaseError(f"database error on {self.info.describe()}: {_pg_message(exc)}") from exc
        return self._cursor.fetchall() if self._cursor.description else []


@contextlib.contextmanager
def snapshot(db: Database) -> Iterator[Snapshot]:
    with db.transaction() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield Snapshot(db, cur)


def _pg_message(exc: psycopg2.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    return primary or str(exc).strip().splitlines()[0]


T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """The server is away (down, restarting, unreachable), not a statement that is wrong."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
    return isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError)


def retry_while_away(action: Callable[[], T], patience: float, what: str) -> T:
    """Run ``action``, retrying with backoff (1 s doubling to 30 s) while the server is away.

    Gives up, re-raising the last error, once ``patience`` seconds have passed.
    """
    deadline = time.monotonic() + patience
    delay = 1.0
    while True:
        try:
            return action()
        except DatabaseError as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database away (%s); retrying in %.0f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
