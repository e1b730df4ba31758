"""4. Local overhead: 10,000 trivial items through ``run_batch`` on the local profile.

Ours: ``run_batch`` with the local profile and full database tracking (plan,
chunks of 100, every item recorded). Baseline: ``xargs -P <cores>`` running the
same 10,000 ``bash -c true`` commands, no tracking at all.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .common import Measurement, log, scratch_database, timed
from .registration import write_config

ITEMS = 10_000
CHUNK = 100


def measure(work: Path) -> list[Measurement]:
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database, create_batch, init_schema
    from ecod_jobs.items import ItemRow
    from ecod_jobs.launch import run_batch

    cores = os.cpu_count() or 1
    log(f"local: xargs -P {cores} over {ITEMS:,} commands (baseline)")
    baseline, _proc = timed(
        lambda: subprocess.run(
            ["xargs", "-P", str(cores), "-n", "1", "bash", "-c", "true"],
            input="".join(f"{i}\n" for i in range(ITEMS)),
            text=True,
            check=True,
        )
    )
    with scratch_database() as section:
        config = write_config(work / "config.yaml", section, work / "work", CHUNK, "true")
        db = Database(load_config(config))
        init_schema(db)
        batch_id = create_batch(db, "local overhead", [ItemRow(f"item/{i}") for i in range(ITEMS)])
        log(f"local: run_batch of {ITEMS:,} items in chunks of {CHUNK} (local profile, {cores} cores)")
        ours, result = timed(lambda: run_batch(batch_id, "local", config_path=config, cores=cores))
        if not result.ok or result.by_status.get("success") != ITEMS:
            raise RuntimeError(
                f"local run did not finish every item: {result.by_status}; log {result.log_path}"
            )
    return [
        Measurement(
            "local_overhead",
            f"Local run: {ITEMS:,} `true` items, chunks of {CHUNK}, full tracking (s)",
            ours,
            "s",
            baseline=f"xargs -P {cores}, no tracking",
            baseline_value=baseline,
            higher_is_better=False,
            goal="<= 1.5x xargs wall time",
            met=ours <= 1.5 * baseline,
            notes=[f"{ours / baseline:.2f}x the wall time of xargs"],
        )
    ]
