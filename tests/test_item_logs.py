"""``ecod-jobs logs``: why an item failed, read back from real runs (local profile, SLURM).

One item's command prints 60 lines to stdout and 50 to stderr and exits 3; the first time
it runs it also kills its chunk's runner (SIGKILL, as SLURM's time limit would), so the
same run's retry of the chunk runs it again. Fixed, ``--retry-failed`` runs it a third
time. Its three attempts are then read back: the cut-short one, the failure, the success.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import create_batch, q, run_cli, setup_batch, wait_for, write_config, write_items

from ecod_jobs.launch import run_batch

# Item 2 fails while fail_2 exists (and kills its runner the first time it runs).
COMMAND = (
    "if [ -e {output_dir}/fail_{item_id} ]; then"
    "  if [ ! -e {output_dir}/seen_{item_id} ]; then"
    "    touch {output_dir}/seen_{item_id}; echo 'before the kill'; kill -9 $PPID; sleep 2;"
    "  fi;"
    '  for i in $(seq 1 60); do echo "out line $i of {item_id}"; done;'
    '  for i in $(seq 1 50); do echo "err line $i" >&2; done;'
    "  exit 3;"
    " fi;"
    " echo fine {item_id}"
)


def logs(cfg: Path, batch: int, item: int, *args: str) -> Any:
    return run_cli("--config", str(cfg), "logs", "--batch", str(batch), "--item", str(item), *args)


def section(text: str, name: str) -> list[str]:
    """The lines of one stream in the text output: after its heading, up to the next one."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"--- {name}:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("--- "))
    return lines[start + 1 : end]


def field(text: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}:\s+(.*)$", text, re.M)
    assert match, f"no {label} in:\n{text}"
    return match.group(1)


def test_logs_of_a_failed_then_retried_item(tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any) -> None:
    cfg, batch = setup_batch(
        tmp_path, scratch_db, paths=["a", "b", "c", "d", "e"], command=COMMAND, batch_size=5
    )
    out = tmp_path / "echo"
    out.mkdir()
    (out / "fail_2").touch()
    first = run_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr  # item 2 failed
    jobs = q(pg_conn, "SELECT chunk_id, attempt, status FROM ecod_schema.job ORDER BY attempt")
    assert jobs == [("c00000", 1, "failed"), ("c00000", 2, "completed")], "the chunk was killed and retried"

    shown = logs(cfg, batch, 2)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    command = COMMAND.replace("{output_dir}", shlex.quote(str(out))).replace("{item_id}", "2")
    assert field(text, "command") == command.split("\n")[0]
    assert field(text, "status") == "error, exit code 3"
    assert field(text, "error") == "exit code 3: err line 50"
    assert field(text, "chunk") == "c00000, its attempt 2"
    assert "job type echo: attempt 2 of 2" in text
    # the tails, separately: the last 40 lines of each
    assert section(text, "stdout") == [f"out line {i} of 2" for i in range(21, 61)]
    assert section(text, "stderr") == [f"err line {i}" for i in range(11, 51)]
    assert "the last 40 lines of" in text and "--full shows all" in text
    full = logs(cfg, batch, 2, "--full")
    assert full.returncode == 0, full.stderr
    assert section(full.stdout, "stdout") == [f"out line {i} of 2" for i in range(1, 61)]
    assert section(full.stdout, "stderr") == [f"err line {i}" for i in range(1, 51)]
    # the attempt the kill cut short: its output until then, its chunk attempt's failure
    cut = logs(cfg, batch, 2, "--attempt", "1")
    assert cut.returncode == 0, cut.stderr
    assert field(cut.stdout, "status") == "interrupted"
    assert field(cut.stdout, "chunk") == "c00000, its attempt 1"
    assert section(cut.stdout, "stdout") == ["before the kill"]
    assert field(cut.stdout, "command") == field(text, "command")

    # fixed and retried: three attempts, the latest a success
    (out / "fail_2").unlink()
    retry = run_cli("--config", str(cfg), "run", "--batch", str(batch), "--retry-failed", cwd=tmp_path)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    latest = logs(cfg, batch, 2, "--json")
    assert latest.returncode == 0, latest.stderr
    view = json.loads(latest.stdout)
    assert [(a["number"], a["status"], a["exit_code"]) for a in view["attempts"]] == [
        (1, "interrupted", None),
        (2, "error", 3),
        (3, "success", 0),
    ]
    assert len({a["run_id"] for a in view["attempts"]}) == 2
    assert view["attempt"]["number"] == 3 and view["attempt"]["stdout"]["text"] == "fine 2\n"
    assert view["attempt"]["stderr"]["text"] == "" and view["attempt"]["stderr"]["total_bytes"] == 0
    assert view["attempt"]["command"] == command.replace("\n", "")
    again = json.loads(logs(cfg, batch, 2, "--json", "--attempt", "2").stdout)["attempt"]
    assert again["status"] == "error" and again["stdout"]["text"].count("\n") == 40
    assert again["node"] and again["start"] and again["end"] and again["seconds"] is not None

    # usage errors: exit 2, saying which
    for args, message in (
        (("--batch", "999", "--item", "2"), "batch 999 does not exist"),
        (("--batch", str(batch), "--item", "4711"), f"item 4711 is not in batch {batch}"),
        (
            ("--batch", str(batch), "--item", "2", "--attempt", "5"),
            "item 2 has 3 attempts; --attempt 5 is out of range",
        ),
        (
            ("--batch", str(batch), "--item", "2", "--stage", "nope"),
            "item 2 has no stage 'nope'; its stages: echo",
        ),
        (("--batch", str(batch), "--item", "2", "--attempt", "0"), "--attempt: invalid number 0"),
    ):
        bad = run_cli("--config", str(cfg), "logs", *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)

    # records of an older runner (no command, no byte ranges): from the header and the stderr tail
    run1 = view["attempts"][1]["run_id"]
    results = next((tmp_path / "work").glob(f"batch_{batch}/echo/runs/{run1}/results"))
    for path in results.glob("c00000*.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text(
            "".join(
                json.dumps({k: v for k, v in r.items() if k not in ("log", "command")}) + "\n"
                for r in records
            )
        )
    older = logs(cfg, batch, 2, "--attempt", "2")
    assert older.returncode == 0, older.stderr
    assert field(older.stdout, "command") == field(text, "command")
    assert section(older.stdout, "stdout") == [f"out line {i} of 2" for i in range(21, 61)]
    assert section(older.stdout, "stderr") == [f"err line {i}" for i in range(11, 51)]
    assert section(logs(cfg, batch, 2, "--attempt", "1").stdout, "stdout") == ["before the kill"]

    # the log file gone: said so; stderr from the record's copy. (The cut-short attempt,
    # which only the log told, is no longer listed.)
    (results.parent / "logs" / "c00000.log").unlink()
    gone = logs(cfg, batch, 2, "--attempt", "1")
    assert gone.returncode == 0, gone.stderr
    assert field(gone.stdout, "status") == "error, exit code 3"
    assert f"--- stdout: the log file {results.parent / 'logs' / 'c00000.log'} is gone ---" in gone.stdout
    assert section(gone.stdout, "stderr")[-1] == "err line 50"


def test_logs_of_a_running_item_a_waiting_one_and_one_that_never_started(
    tmp_path: Path, scratch_db: dict[str, Any]
) -> None:
    # one chunk, one core: item 1 runs (5 s) while item 2 waits; item 3 has no input file
    cfg, batch = setup_batch(
        tmp_path, scratch_db, n=3, batch_size=3, command="echo started {item_id}; sleep 5"
    )
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(result=run_batch(batch, config_path=cfg, cores=1))
    )
    runner.start()
    try:
        running = wait_for(
            lambda: (
                (r := logs(cfg, batch, 1)).returncode == 0 and "status:    running" in r.stdout and r.stdout
            ),
            60,
            "item 1 to be shown running",
        )
        assert section(running, "stdout") == ["started 1"]
        assert "--- stderr: written once the item ends ---" in running
        waiting = logs(cfg, batch, 2).stdout
        assert field(waiting, "status") == "pending" and field(waiting, "command") == "(none: not run yet)"
    finally:
        runner.join()
    assert outcome["result"].returncode == 0
    never = logs(cfg, batch, 3)
    assert never.returncode == 0, never.stderr
    assert field(never.stdout, "command") == "(none: the command did not run)"
    assert field(never.stdout, "error").startswith("input path does not exist")
    assert "--- stdout: the command did not run ---" in never.stdout
    done = logs(cfg, batch, 1).stdout
    assert field(done, "status") == "success, exit code 0" and section(done, "stdout") == ["started 1"]


# --------------------------------------------------------------------------- pipelines


def test_logs_of_a_pipeline_item_by_stage(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    from test_pipeline_run import STAGE_SCRIPT, stage_job

    (tmp_path / "stage.sh").write_text(STAGE_SCRIPT)
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "domain.2").touch()  # item 2 fails domain: summary never runs for it
    (tmp_path / "base" / "data").mkdir(parents=True)
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {
                name: stage_job(tmp_path, name, f"{name}_result", batch_size=2)
                for name in ("chain", "domain", "summary")
            },
            "pipelines": {
                "p": {
                    "stages": {"chain": {}, "domain": {"after": ["chain"]}, "summary": {"after": ["domain"]}}
                }
            },
        },
    )
    items = write_items(tmp_path / "items.tsv", [f"data/chain{i}.fa" for i in range(1, 4)])
    batch = create_batch(cfg, items, "p", tmp_path / "base")
    ran = run_cli(
        "--config", str(cfg), "run", "--batch", str(batch), "--pipeline", "p",
        cwd=tmp_path, env={"ECOD_TEST_DIR": str(tmp_path)},
    )  # fmt: skip
    assert ran.returncode == 1, ran.stdout + ran.stderr

    # without --stage: the stage that failed
    shown = logs(cfg, batch, 2)
    assert shown.returncode == 0, shown.stderr
    assert "stage domain: attempt 1 of 1" in shown.stdout
    assert "stages: chain success; domain error; summary pending (not run: upstream stage domain failed)" in (
        shown.stdout
    )
    assert field(shown.stdout, "status") == "error, exit code 3"
    assert field(shown.stdout, "command").startswith(f"sh {tmp_path}/stage.sh domain 2 ")
    assert field(shown.stdout, "chunk").startswith("domain.w0000.c")
    assert section(shown.stdout, "stderr") == ["marked to fail: domain 2"]
    assert section(shown.stdout, "stdout") == []
    chain = json.loads(logs(cfg, batch, 2, "--stage", "chain", "--json").stdout)
    assert (
        chain["stage"] == "chain"
        and chain["pipeline"]
        and [s["name"] for s in chain["stages"]]
        == [
            "chain",
            "domain",
            "summary",
        ]
    )
    assert chain["attempt"]["status"] == "success" and chain["attempt"]["exit_code"] == 0
    assert chain["attempt"]["command"].startswith(f"sh {tmp_path}/stage.sh chain 2 ")
    assert chain["attempt"]["stderr"]["total_bytes"] == 0

    for args, message in (
        (("--stage", "deep"), "item 2 has no stage 'deep'; its stages: chain, domain"),
        (("--stage", "summary"), "item 2 never ran stage summary (not run: upstream stage domain failed)"),
        (("--attempt", "2"), "item 2 has 1 attempt of stage domain; --attempt 2 is out of range"),
    ):
        bad = logs(cfg, batch, 2, *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)


# --------------------------------------------------------------------------- the dashboard

HOSTILE_STDERR = '<script>window.__pwned=5</script><img src=x onerror="window.__pwned=6"> bad chain'
HOSTILE_STDOUT = "<b>bold</b> &amp; <i>more</i>"


def test_dashboard_links_a_failed_item_to_its_log(
    tmp_path: Path, scratch_db: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    from test_insight import dashboard, get

    command = (
        f"case {{item_id}} in 2) echo {shlex.quote(HOSTILE_STDOUT)}; echo {shlex.quote(HOSTILE_STDERR)} >&2;"
        " exit 3;; esac; echo ok"
    )
    cfg, batch = setup_batch(tmp_path, scratch_db, paths=["a", "b", "c"], command=command, batch_size=3)
    assert run_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path).returncode == 1
    with dashboard(cfg, tmp_path) as url:
        status, view = get(f"{url}/api/batches/{batch}/items/2/log")
        assert status == 200, view
        attempt = view["attempt"]
        assert attempt["command"] == command.replace("{item_id}", "2")
        assert attempt["exit_code"] == 3 and attempt["status"] == "error"
        assert attempt["stdout"]["text"] == HOSTILE_STDOUT + "\n"
        assert attempt["stderr"]["text"] == HOSTILE_STDERR + "\n"
        assert [a["number"] for a in view["attempts"]] == [1]
        assert get(f"{url}/api/batches/{batch}/items/99/log") == (
            404,
            {"error": f"item 99 is not in batch {batch}"},
        )
        assert get(f"{url}/api/batches/{batch}/items/2/log?attempt=2")[0] == 404
        assert get(f"{url}/api/batches/{batch}/items/2/log?attempt=abc")[0] == 400
        assert get(f"{url}/api/batches/{batch}/items/2/log", method="POST")[0] == 405

        # from the batch page's failed items, by the link
        browser.get(f"{url}/batches/{batch}")
        href = wait_for(
            lambda: browser.execute_script(
                "const a = document.querySelector('#failed-items a.item-log');"
                "if (!a) return null; a.closest('details').open = true; return a.getAttribute('href');"
            ),
            30,
            "the failed item's link",
        )
        assert href == f"/batches/{batch}/items/2/log"
        browser.find_element("css selector", "#failed-items a.item-log").click()
        shown = wait_for(
            lambda: browser.execute_script(
                "const e = document.getElementById('stderr'), o = document.getElementById('stdout');"
                "return e && o && {stderr: e.textContent, stdout: o.textContent,"
                " markup: document.querySelectorAll('pre.log *').length,"
                " command: document.getElementById('command').textContent,"
                " attempts: document.querySelectorAll('#attempts tbody tr').length,"
                " pwned: window.__pwned === undefined ? null : window.__pwned, url: location.pathname,"
                " nulls: document.getElementById('app').innerText.includes('null')}"
            ),
            30,
            "the item's page",
        )
        assert shown == {
            "stderr": HOSTILE_STDERR + "\n",
            "stdout": HOSTILE_STDOUT + "\n",
            "markup": 0,
            "command": attempt["command"],
            "attempts": 1,
            "pwned": None,
            "url": href,
            "nulls": False,
        }
        browser.save_screenshot(str(artifacts / "dashboard-item-log.png"))
        browser.get(f"{url}/batches/{batch}/items/99/log")
        error = wait_for(
            lambda: browser.execute_script(
                "const e = document.getElementById('log-error'); return e && e.textContent"
            ),
            30,
            "the page's error",
        )
        assert error == f"item 99 is not in batch {batch}"


# --------------------------------------------------------------------------- SLURM


@pytest.mark.slurm
def test_logs_name_the_node_and_the_slurm_array_task(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    slurm_cluster: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    command = "case {item_id} in 3) echo 'looked at 3'; echo 'no hits for 3' >&2; exit 3;; esac; echo ok"
    cfg, batch = setup_batch(tmp_path, scratch_db, paths=["a", "b", "c", "d"], command=command, batch_size=2)
    result = run_batch(
        batch, profile="slurm", config_path=cfg, ecod_slurm_init_seconds_before_status_checks=5
    )
    assert result.returncode == 0, result.log_path.read_text()[-3000:]
    [(slurm_id, node)] = q(
        pg_conn,
        "SELECT j.slurm_job_id, j.node FROM ecod_schema.job j"
        " JOIN ecod_schema.job_item ji ON ji.job_id = j.id WHERE ji.process_id = 3",
    )
    assert re.fullmatch(r"[0-9]+_[0-9]+", slurm_id), slurm_id  # an array task: JOB_TASK
    shown = logs(cfg, batch, 3)
    assert shown.returncode == 0, shown.stderr
    assert field(shown.stdout, "SLURM id") == slurm_id
    assert field(shown.stdout, "node") == node and node
    assert field(shown.stdout, "status") == "error, exit code 3"
    assert section(shown.stdout, "stdout") == ["looked at 3"]
    assert section(shown.stdout, "stderr") == ["no hits for 3"]
