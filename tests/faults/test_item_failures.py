"""Item-level failures are errors of their items, never of the chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import create_batch, write_config

from ecod_jobs.launch import run_batch


def test_missing_input_nonzero_exit_and_hang_are_item_errors(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ok.fa", "fails.fa", "hangs.fa"):
        (tmp_path / name).write_text(">x\nM\n")
    (tmp_path / "items.tsv").write_text("path\nok.fa\nmissing.fa\nfails.fa\nhangs.fa\n")
    command = "case {path} in *fails*) echo 'bad residue' >&2; exit 4;; *hangs*) sleep 300;; esac"
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work")},
            "job_types": {"t": {"command": command, "batch_size": 10, "item_timeout": 2}},
        },
    )
    batch = create_batch(cfg, tmp_path / "items.tsv", "f", tmp_path)
    result = run_batch(batch, config_path=cfg, cores=1)
    assert result.returncode == 0  # the chunk itself succeeded
    with pg_conn.cursor() as cur:
        cur.execute("SELECT relative_path, status, error_message FROM ecod_schema.process_status ORDER BY id")
        rows = cur.fetchall()
        cur.execute("SELECT status, error_text FROM ecod_schema.job")
        jobs = cur.fetchall()
    assert rows[0] == ("ok.fa", "success", None)
    assert rows[1][1] == "error" and rows[1][2].startswith("input path does not exist")
    assert rows[2] == ("fails.fa", "error", "exit code 4: bad residue")
    assert rows[3] == ("hangs.fa", "error", "timed out after 2 s")
    assert jobs == [("completed", "3 of 4 items failed")]
