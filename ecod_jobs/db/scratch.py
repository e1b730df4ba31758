"""Throw-away databases for tests and benchmarks: created on a server, dropped after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg2
from psycopg2 import sql


@contextlib.contextmanager
def scratch_database(admin_params: Mapping[str, Any], prefix: str) -> Iterator[dict[str, Any]]:
    """A fresh database on the server of ``admin_params`` (psycopg2 connect arguments).

    Yields its ecod-jobs ``database`` config section; the database is dropped on exit,
    even with connections still open.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(**admin_params)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    section: dict[str, Any] = {
        "host": admin_params.get("host", "127.0.0.1"),
        "port": int(admin_params.get("port", 5432)),
        "database": name,
        "user": admin_params.get("user", "postgres"),
    }
    if admin_params.get("password"):
        section["password"] = admin_params["password"]
    try:
        yield section
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()
