"""8. Dashboard: every JSON endpoint on the 1,000,000-item batch (issue 7: < 200 ms each).

Ours: the real ``ecod-jobs dashboard`` process on a free localhost port, each
endpoint fetched ``REPEAT`` times over HTTP (median, and the slowest in the
notes). Baseline, from the same server in the same run: a static file, which is
what any request costs before the database is asked anything.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .common import REPO, Measurement, log, timed
from .registration import Registered

REPEAT = 20
GOAL_SECONDS = 0.2


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
        return bytes(response.read())


@contextlib.contextmanager
def serving(config_path: Path, log_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecod_jobs.cli",
                "--config",
                str(config_path),
                "dashboard",
                "--port",
                str(port),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the dashboard exited:\n{log_path.read_text()[-2000:]}")
                with contextlib.suppress(OSError):
                    fetch(f"{url}/api/batches")
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not answer within 60 s")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def measure(registered: Registered, work: Path) -> list[Measurement]:
    batch = registered.batch_id
    endpoints = {
        "/api/batches": "batch list",
        f"/api/batches/{batch}": "one batch: counts, jobs, plots, failures, runs",
        f"/api/batches/{batch}/failed?limit=100": "a page of failed items",
        f"/batches/{batch}": "the batch page (HTML)",
    }
    results = []
    with serving(registered.config_path, work / "dashboard.log") as url:
        static = f"{url}/static/style.css"
        for _ in range(3):  # warm up: imports, caches, connections
            fetch(static)
            for path in endpoints:
                fetch(url + path)
        log(f"dashboard: {len(endpoints)} endpoints x{REPEAT} on the {registered.items:,}-item batch")
        base = statistics.median(timed(lambda: fetch(static))[0] for _ in range(REPEAT))
        for path, what in endpoints.items():
            times, sizes = [], []
            for _ in range(REPEAT):
                seconds, body = timed(lambda p=path: fetch(url + p))  # type: ignore[misc]
                times.append(seconds)
                sizes.append(len(body))
            median = statistics.median(times)
            results.append(
                Measurement(
                    f"dashboard{path.replace(str(batch), '{id}')}",
                    f"Dashboard GET {path.replace(str(batch), '{id}')} on {registered.items:,} items (ms)",
                    median * 1000,
                    "ms",
                    baseline="GET of a static file from the same server",
                    baseline_value=base * 1000,
                    higher_is_better=False,
                    goal="< 200 ms",
                    met=median < GOAL_SECONDS,
                    notes=[
                        f"{what}; median of {REPEAT}, slowest {max(times) * 1000:.0f} ms, {sizes[-1]:,} bytes"
                    ],
                )
            )
    return results
