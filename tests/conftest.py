"""Shared fixtures: a real PostgreSQL (a scratch database per test), the real SLURM cluster, Lmod.

PostgreSQL: ``$ECOD_TEST_DATABASE_URL`` (``.ci/run`` points it at the machine's
server), else an embedded server started for the session. With ``CI=true`` a
missing service fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_service(message: str) -> None:
    """Fail under CI (a missing service is a broken set-up), skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Connection parameters of a server where tests may create databases."""
    url = os.environ.get("ECOD_TEST_DATABASE_URL")
    if url:
        params = psycopg2.extensions.parse_dsn(url)
        try:
            psycopg2.connect(**params, connect_timeout=5).close()
        except psycopg2.OperationalError as exc:
            missing_service(f"ECOD_TEST_DATABASE_URL={url} is unreachable: {exc}")
        return params
    from ecod_jobs.db.connection import connection_info

    data_dir = tmp_path_factory.mktemp("embedded") / "pgdata"
    try:
        info = connection_info(
            {"database": {"embedded": True, "data_dir": str(data_dir), "database": "postgres"}}
        )
    except Exception as exc:  # pragma: no cover - depends on the machine
        missing_service(f"no ECOD_TEST_DATABASE_URL and the embedded server failed: {exc}")
    return {"host": info.host, "port": str(info.port), "user": "postgres", "dbname": "postgres"}


@pytest.fixture
def scratch_db(pg_admin_params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A fresh database for one test; yields its ecod-jobs ``database`` config section."""
    from ecod_jobs.db.scratch import scratch_database

    with scratch_database(pg_admin_params, "ecodtest") as section:
        yield section


@pytest.fixture
def db_config(scratch_db: dict[str, Any]) -> dict[str, Any]:
    """A full, valid configuration pointing at the scratch database."""
    from ecod_jobs.config import from_mapping

    return from_mapping(
        {
            "database": scratch_db,
            "job_types": {"echo": {"command": "echo {item_id} {path}"}},
        }
    )


@pytest.fixture
def pg_conn(scratch_db: dict[str, Any]) -> Iterator[psycopg2.extensions.connection]:
    from helpers import connect_scratch

    conn = connect_scratch(scratch_db)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The real SLURM cluster from scripts/slurm-cluster, with accounting."""
    if not shutil.which("sbatch"):
        missing_service("SLURM is not installed (run: scripts/slurm-cluster up)")
    status = subprocess.run([str(REPO / "scripts/slurm-cluster"), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        missing_service(
            f"SLURM cluster is not up (scripts/slurm-cluster status):\n{status.stdout}{status.stderr}"
        )


@pytest.fixture(scope="session")
def module_system() -> None:
    """Lmod, as scripts/module-system installs it: ``module`` in login and non-login shells."""
    check = subprocess.run([str(REPO / "scripts/module-system"), "check"], capture_output=True, text=True)
    if check.returncode != 0:
        missing_service(f"Lmod does not work (scripts/module-system check):\n{check.stderr}")


ARTIFACTS = Path(os.environ.get("ECOD_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave screenshots ($ECOD_TEST_ARTIFACTS, default test-artifacts/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian's packages, driven by selenium through chromedriver."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        missing_service("Debian's chromium and chromium-driver are not installed (run: scripts/browser-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()
