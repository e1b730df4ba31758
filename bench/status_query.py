"""3. Status of a 1,000,000-item batch: the query, and the whole command.

Ours: ``batch_status`` (what ``ecod-jobs status --batch N --json`` prints), timed
in-process, and the CLI command timed as a process. Baseline: a plain
``SELECT status, count(*) ... GROUP BY status`` over the batch's rows.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

from .common import REPO, Measurement, connect, log, median_seconds, timed
from .registration import Registered

REPEAT = 15


def measure(section: dict[str, Any], registered: Registered) -> list[Measurement]:
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database
    from ecod_jobs.launch import batch_status

    db = Database(load_config(registered.config_path))
    batch_status(db, registered.batch_id)  # warm the connection and the cache, as a second call would
    log(f"status: batch_status x{REPEAT}")
    ours = median_seconds(lambda: batch_status(db, registered.batch_id), REPEAT)

    conn = connect(section)

    def group_by() -> Any:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT status, count(*) FROM ecod_schema.process_status WHERE batch_id = %s GROUP BY status",
                (registered.batch_id,),
            )
            return cur.fetchall()

    group_by()
    log(f"status: plain GROUP BY x{REPEAT} (baseline)")
    baseline = median_seconds(group_by, REPEAT)
    conn.close()

    command = [
        sys.executable,
        "-m",
        "ecod_jobs.cli",
        "--config",
        str(registered.config_path),
        "status",
        "--batch",
        str(registered.batch_id),
        "--json",
    ]
    wall = []
    for _ in range(3):
        seconds, proc = timed(lambda: subprocess.run(command, cwd=REPO, capture_output=True, text=True))
        if proc.returncode != 0:
            raise RuntimeError(f"ecod-jobs status failed: {proc.stderr}")
        wall.append(seconds)
    total = json.loads(proc.stdout)["total"]
    if total != registered.items:
        raise RuntimeError(f"status says {total} items, the batch has {registered.items}")
    startup = statistics.median(
        timed(lambda: subprocess.run([sys.executable, "-c", "import ecod_jobs.cli"], cwd=REPO))[0]
        for _ in range(3)
    )
    return [
        Measurement(
            "status_query",
            f"Status query on a {total:,}-item batch (ms)",
            ours * 1000,
            "ms",
            baseline="plain GROUP BY status over the batch",
            baseline_value=baseline * 1000,
            higher_is_better=False,
            goal="< 50 ms",
            met=ours < 0.050,
            notes=[f"median of {REPEAT}; counts, job counts, 100 failed items and the last runs"],
        ),
        Measurement(
            "status_command",
            "`ecod-jobs status --batch N --json`, whole process (ms)",
            statistics.median(wall) * 1000,
            "ms",
            baseline="python -c 'import ecod_jobs.cli' (start-up alone)",
            baseline_value=startup * 1000,
            higher_is_better=False,
            notes=["median of 3; the difference to start-up is config, connection and the query"],
        ),
    ]
