"""What every measurement shares: a scratch database, a clock, and the result record."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Measurement:
    """One row of the table: our figure, the baseline's, and how they compare.

    ``higher_is_better`` says which way the ratio reads: for rates the ratio is
    ours / baseline, for durations baseline / ours, so a ratio above 1 always
    means "better than the baseline". ``goal`` is the issue's target in words and
    ``met`` whether this run reached it (None where the issue sets no goal).
    """

    key: str
    title: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    higher_is_better: bool = True
    goal: str | None = None
    met: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0) or self.value == 0:
            return None
        if self.higher_is_better:
            return self.value / self.baseline_value  # type: ignore[operator]
        return self.baseline_value / self.value  # type: ignore[operator]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def admin_params() -> dict[str, Any]:
    return dict(psycopg2.extensions.parse_dsn(os.environ.get("ECOD_BENCH_DATABASE_URL", DEFAULT_URL)))


@contextlib.contextmanager
def scratch_database(prefix: str = "ecodbench") -> Iterator[dict[str, Any]]:
    """A fresh database on the benchmark server, dropped afterwards; yields its config section."""
    from ecod_jobs.db.scratch import scratch_database as scratch

    with scratch({**admin_params(), "connect_timeout": 10}, prefix) as section:
        yield section


def connect(section: dict[str, Any]) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host=section["host"],
        port=section["port"],
        dbname=section["database"],
        user=section["user"],
        password=section.get("password"),
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, and its value."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
