"""`ecod-jobs run` started in the background by a script inherits SIGINT ignored; stopping it
must still stop its Snakemake gently (SIGINT first), as Ctrl-C in a terminal does."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import q, setup_batch, start_cli, wait_for

pytestmark = pytest.mark.slow


def ignored_signals(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)


def test_a_background_run_still_stops_its_workflow_with_sigint(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    cfg, batch = setup_batch(tmp_path, scratch_db, 2, 1, "sleep 60 && echo ran")
    head = start_cli(
        "--config",
        str(cfg),
        "run",
        "--batch",
        str(batch),
        "--profile",
        "local",
        cwd=tmp_path,
        # as `ecod-jobs run ... &` in a script: the shell starts it with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert ignored_signals(head.pid) & (1 << (signal.SIGINT - 1)), "the test did not ignore SIGINT"
        rows = wait_for(
            lambda: q(pg_conn, "SELECT pid FROM ecod_schema.ecod_jobs_run WHERE planned_items IS NOT NULL"),
            timeout=120,
            what="the run to be planned",
        )
        snakemake = int(rows[0][0])
        assert not ignored_signals(snakemake) & (1 << (signal.SIGINT - 1)), "Snakemake ignores SIGINT"
        head.send_signal(signal.SIGTERM)
        _out, err = head.communicate(timeout=120)
    finally:
        if head.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                head.kill()
    assert head.returncode == 128 + signal.SIGTERM, err
    assert "stopped the workflow with SIGINT" in err, err
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.process_status WHERE status = 'processing'") == [(0,)]
