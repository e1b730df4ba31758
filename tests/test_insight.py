"""The HTML report and the dashboard: real local runs, a real server, headless Chromium.

The report's numbers are read back from the data block it embeds and from the
page Chromium draws, and compared with the database. Batch names and error
messages carry ``<script>`` and an ``onerror`` image: they must show as text and
never run (``window.__pwned`` stays undefined).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    REPO,
    connect_scratch,
    create_batch,
    free_port,
    q,
    run_cli,
    wait_for,
    write_config,
    write_items,
)

from ecod_jobs.insight import figures
from ecod_jobs.launch import run_batch

HOSTILE_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
HOSTILE_ERROR = "<script>window.__pwned=3</script> bad chain"
# Items whose id ends in 3 fail with a hostile message on stderr.
COMMAND = f"case {{item_id}} in *3) echo '{HOSTILE_ERROR}' >&2; exit 3;; esac; {{sleep}} echo ok"


def setup(
    tmp_path: Path, scratch_db: dict[str, Any], n: int, batch_size: int, sleep: str = ""
) -> tuple[Path, int]:
    data = tmp_path / "data"
    data.mkdir()
    lines = ["path\tprotein_id"]
    for i in range(1, n + 1):
        (data / f"chain{i}.fa").write_text(f">p{i}\nMKV\n")
        lines.append(f"data/chain{i}.fa\t{i}")
    (tmp_path / "items.tsv").write_text("\n".join(lines) + "\n")
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {
                "scan": {
                    "command": COMMAND.replace("{sleep}", sleep),
                    "batch_size": batch_size,
                    "memory": "1G",
                    "time": "00:05:00",
                }
            },
        },
    )
    return cfg, create_batch(cfg, tmp_path / "items.tsv", HOSTILE_NAME, tmp_path)


def db_counts(conn: Any, batch_id: int) -> dict[str, int]:
    rows = q(
        conn,
        "SELECT status, count(*) FROM ecod_schema.process_status WHERE batch_id = %s GROUP BY 1",
        batch_id,
    )
    return {s: int(n) for s, n in rows}


def embedded_data(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="ecod-report-data">(.*?)</script>', html, re.S)
    assert match, "the report embeds its data"
    return dict(json.loads(match.group(1)))


def page_state(browser: Any) -> dict[str, Any]:
    return dict(
        browser.execute_script(
            "const p = document.getElementById('progress');"
            "return {pwned: window.__pwned === undefined ? null : window.__pwned,"
            " progress: p ? Number(p.value) : null,"
            " name: (document.getElementById('batch-name') || {}).textContent || null,"
            " live: !!document.getElementById('live'),"
            " plots: document.querySelectorAll('.figure .main-svg').length,"
            " stage_parts: document.querySelectorAll('#section-stages *, svg.pipeline-graph').length,"
            " text: document.body.innerText}"
        )
    )


# --------------------------------------------------------------------------- report


def test_report_of_a_finished_run(
    tmp_path: Path, scratch_db: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db, n=14, batch_size=4)
    result = run_batch(batch_id, profile="local", config_path=cfg)
    assert result.returncode == 0
    out = tmp_path / "report.html"
    done = run_cli("--config", str(cfg), "report", "--batch", str(batch_id), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    html = out.read_text()
    conn = connect_scratch(scratch_db)

    # the numbers, from the data the page draws
    view = embedded_data(html)
    counts = db_counts(conn, batch_id)
    assert counts == {"success": 12, "error": 2}  # items 3 and 13
    assert {k: v for k, v in view["by_status"].items() if v} == counts
    assert view["total"] == 14 and view["finished"] == 14 and view["progress"] == 1.0
    assert view["stages"] is None  # no pipeline ran: no stage section at all
    assert view["batch"]["name"] == HOSTILE_NAME
    [group] = view["failures"]["groups"]
    assert group["count"] == 2 and group["error"] == f"exit code 3: {HOSTILE_ERROR}"
    failed = q(
        conn, "SELECT id, relative_path FROM ecod_schema.process_status WHERE status = 'error' ORDER BY id"
    )
    assert [(i["process_id"], i["path"]) for i in group["items"]] == [
        (i, str(tmp_path / p)) for i, p in failed
    ]
    assert [p for _, p in failed] == ["data/chain3.fa", "data/chain13.fa"]
    jobs = q(conn, "SELECT chunk_id, status, elapsed_seconds FROM ecod_schema.job ORDER BY id")
    assert [(j["chunk_id"], j["status"]) for j in view["jobs"]] == [(c, s) for c, s, _ in jobs]
    longest = max(e for _, _, e in jobs)
    assert view["resources"]["runtime"]["max"] == pytest.approx(longest)
    assert view["resources"]["runtime"]["requested"] == 300
    assert view["resources"]["runtime"]["suggested"] == max(60, -(-longest * 1.5 // 60) * 60)
    assert view["resources"]["memory"]["requested"] == 1024
    slowest = q(
        conn,
        "SELECT process_id, elapsed_seconds FROM ecod_schema.job_item"
        " ORDER BY elapsed_seconds DESC, process_id LIMIT 10",
    )
    assert [(i["process_id"], i["seconds"]) for i in view["slowest_items"]] == slowest
    [run] = view["runs"]
    [recorded] = q(conn, "SELECT run_id::text, config_hash, status FROM ecod_schema.ecod_jobs_run")
    assert (run["run_id"], run["config_hash"], run["status"]) == recorded
    assert run["config_hash"] and not run["live"]
    assert run["username"] == getpass.getuser() and run["host"] == socket.gethostname()
    assert run["profile"] and run["snakemake_version"] and run["ecod_jobs_version"]
    # escaped where the template writes text; no raw markup from the database anywhere
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "<script>window.__pwned" not in html and "<img src=x" not in html

    # drawn offline by Chromium: nothing fetched, hostile text shown as text
    browser.get(out.as_uri())
    state = wait_for(lambda: (s := page_state(browser))["plots"] >= 3 and s, 30, "the report's plots")
    assert state["pwned"] is None
    assert state["name"] == HOSTILE_NAME
    assert state["progress"] == view["progress"]
    assert f"exit code 3: {HOSTILE_ERROR}" in state["text"]
    assert "14 of 14 items finished (100%), 2 failed" in state["text"]
    assert state["stage_parts"] == 0 and "Pipeline stages" not in state["text"]
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in fetched if not u.startswith(("file:", "data:"))] == []
    browser.save_screenshot(str(artifacts / "report.png"))


def test_report_usage_errors(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db, n=2, batch_size=2)
    missing = run_cli("--config", str(cfg), "report", "--batch", "999", "-o", str(tmp_path / "r.html"))
    assert missing.returncode == 2 and "batch 999 does not exist" in missing.stderr
    no_dir = run_cli(
        "--config", str(cfg), "report", "--batch", str(batch_id), "-o", str(tmp_path / "no/r.html")
    )
    assert no_dir.returncode == 2 and "does not exist" in no_dir.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "no").exists()
    # a batch that never ran still has a report: counts, no plots data, no runs
    fresh = run_cli("--config", str(cfg), "report", "--batch", str(batch_id), "-o", str(tmp_path / "r.html"))
    assert fresh.returncode == 0, fresh.stderr
    view = embedded_data((tmp_path / "r.html").read_text())
    assert view["by_status"]["pending"] == 2 and view["progress"] == 0 and view["runs"] == []


# --------------------------------------------------------------------------- dashboard


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


@contextlib.contextmanager
def dashboard(cfg: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecod_jobs.cli", "--config", str(cfg), "dashboard", "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                return get(f"{url}/api/batches")[0] == 200
            except OSError:
                return False

        wait_for(up, 60, "the dashboard to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_dashboard_api_and_page(
    tmp_path: Path, scratch_db: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db, n=12, batch_size=4)
    assert run_batch(batch_id, profile="local", config_path=cfg).returncode == 0
    conn = connect_scratch(scratch_db)
    # three items back to pending (as a curator resetting them would): progress 9/12
    q(
        conn,
        "UPDATE ecod_schema.process_status SET status = 'pending'"
        " WHERE id IN (SELECT id FROM ecod_schema.process_status WHERE status = 'success'"
        " ORDER BY id LIMIT 3)"
        " RETURNING id",
    )
    counts = db_counts(conn, batch_id)
    assert counts == {"success": 8, "error": 1, "pending": 3}
    with dashboard(cfg, tmp_path) as url:
        status, listing = get(f"{url}/api/batches")
        assert status == 200
        [entry] = [b for b in listing["batches"] if b["id"] == batch_id]
        assert entry["name"] == HOSTILE_NAME and entry["progress"] == 9 / 12 and not entry["active"]
        status, view = get(f"{url}/api/batches/{batch_id}")
        assert status == 200
        assert {k: v for k, v in view["by_status"].items() if v} == counts
        assert set(view["figures"]) == {"timeline", "runtime", "memory"}
        assert view["stages"] is None
        assert view["failures"]["groups"][0]["error"] == f"exit code 3: {HOSTILE_ERROR}"
        status, failed = get(f"{url}/api/batches/{batch_id}/failed?limit=5")
        assert status == 200 and [i["error"] for i in failed["items"]] == [f"exit code 3: {HOSTILE_ERROR}"]
        # errors are JSON with a status that says what is wrong; nothing but GET exists
        assert get(f"{url}/api/batches/999") == (404, {"error": "batch 999 does not exist"})
        status, err = get(f"{url}/api/batches/{batch_id}/failed?limit=abc")
        assert status == 400 and "limit" in err["error"]
        assert get(f"{url}/api/batches", method="POST")[0] == 405
        assert get(f"{url}/api/batches/{batch_id}", method="DELETE")[0] == 405
        # a page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) gets nothing
        assert get(f"{url}/api/batches", headers={"Host": "evil.example"})[0] == 400

        browser.get(f"{url}/batches/{batch_id}")
        state = wait_for(lambda: (s := page_state(browser))["plots"] >= 3 and s, 30, "the batch page")
        assert state["progress"] == pytest.approx(9 / 12)
        assert state["pwned"] is None and state["name"] == HOSTILE_NAME
        assert f"exit code 3: {HOSTILE_ERROR}" in state["text"]
        assert "9 of 12 items finished (75%), 1 failed" in state["text"]
        assert state["stage_parts"] == 0 and "Pipeline stages" not in state["text"]
        browser.save_screenshot(str(artifacts / "dashboard-batch.png"))

        browser.get(url)
        wait_for(
            lambda: browser.execute_script("return !!document.getElementById('batches')"), 30, "the list"
        )
        listed = page_state(browser)
        assert listed["pwned"] is None and HOSTILE_NAME in listed["text"]
        value = browser.execute_script(f"return Number(document.getElementById('progress-{batch_id}').value)")
        assert value == pytest.approx(9 / 12)
        browser.save_screenshot(str(artifacts / "dashboard-list.png"))


def test_dashboard_follows_a_live_run(
    tmp_path: Path, scratch_db: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db, n=10, batch_size=1, sleep="sleep 2;")
    with dashboard(cfg, tmp_path) as url:
        browser.get(f"{url}/batches/{batch_id}")
        wait_for(lambda: page_state(browser)["progress"] == 0, 30, "the page before the run")
        outcome: dict[str, Any] = {}
        runner = threading.Thread(
            # two cores whatever the machine: the run lasts long enough (5 waves of 2 s) to watch
            target=lambda: outcome.update(
                result=run_batch(batch_id, profile="local", config_path=cfg, cores=2)
            )
        )
        runner.start()
        seen: list[float] = []
        live_seen = False
        while runner.is_alive():
            state = page_state(browser)
            live_seen = live_seen or state["live"]
            if state["progress"] is not None and (not seen or state["progress"] != seen[-1]):
                seen.append(state["progress"])
                if 0 < state["progress"] < 1 and not (artifacts / "dashboard-live.png").exists():
                    browser.save_screenshot(str(artifacts / "dashboard-live.png"))
            time.sleep(0.2)
        runner.join()
        assert outcome["result"].returncode == 0
        # the page catches the end by itself, and then agrees with the database
        wait_for(lambda: page_state(browser)["progress"] == 1, 30, "the page to show the finished run")
        counts = db_counts(connect_scratch(scratch_db), batch_id)
        assert counts == {"success": 9, "error": 1}
    assert live_seen, "the page showed the run as live"
    assert seen == sorted(seen), f"progress only grows: {seen}"
    assert [p for p in seen if 0 < p < 1], f"the page showed progress while the run went on: {seen}"


# --------------------------------------------------------------------------- pipeline stages

# A small pipeline of test_pipeline_run's stage.sh: two searches (fan-out), a gated stage,
# a fan-in whose domain -> summary edge spans a column. 6 items, 1-4 representatives;
# item 3 fails domain, so its deep and summary never run.
PIPELINE_STAGES = {
    "chain": {},
    "domain": {},
    "deep": {"after": ["chain", "domain"], "when": "is_representative and domain.coverage < 0.5"},
    "summary": {"after": ["domain", "deep"], "if_upstream_skipped": "run"},
}
EDGES = {("chain", "deep"), ("domain", "deep"), ("domain", "summary"), ("deep", "summary")}
STAGE_COUNTS = {
    "chain": {"pending": 0, "running": 0, "success": 6, "error": 0, "skipped": 0},
    "domain": {"pending": 0, "running": 0, "success": 5, "error": 1, "skipped": 0},
    "deep": {"pending": 1, "running": 0, "success": 3, "error": 0, "skipped": 2},  # 5, 6: gated out
    "summary": {"pending": 1, "running": 0, "success": 5, "error": 0, "skipped": 0},
}
HOSTILE_DESCRIPTION = '<img src=x onerror="window.__pwned=4"> searches, then the rest'


def setup_pipeline(tmp_path: Path, scratch_db: dict[str, Any], run: bool = True) -> tuple[Path, int]:
    """The batch, run once through the CLI (exit 1: an item failed) unless not ``run``."""
    from test_pipeline_run import STAGE_SCRIPT, stage_job

    (tmp_path / "stage.sh").write_text(STAGE_SCRIPT)
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "domain.3").touch()
    (tmp_path / "base" / "data").mkdir(parents=True)
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {
                name: stage_job(tmp_path, name, f"{name}_result", batch_size=size)
                for name, size in (("chain", 3), ("domain", 2), ("deep", 1), ("summary", 6))
            },
            "pipelines": {"full": {"description": HOSTILE_DESCRIPTION, "stages": PIPELINE_STAGES}},
        },
    )
    items = write_items(tmp_path / "items.tsv", [f"data/chain{i}.fa" for i in range(1, 7)])
    batch_id = create_batch(cfg, items, HOSTILE_NAME, tmp_path / "base")
    q(
        connect_scratch(scratch_db),
        "UPDATE ecod_schema.process_status SET is_representative = (id <= 4) RETURNING id",
    )
    if not run:
        return cfg, batch_id
    ran = run_cli(
        "--config", str(cfg), "run", "--batch", str(batch_id), "--pipeline", "full",
        cwd=tmp_path, env={"ECOD_TEST_DIR": str(tmp_path)},
    )  # fmt: skip
    assert ran.returncode == 1, ran.stdout + ran.stderr
    return cfg, batch_id


def stage_state(browser: Any) -> dict[str, Any] | None:
    """What the page shows of pipeline 'full': its table's numbers, and its SVG graph's
    nodes (texts, boxes) and edges (end points; stages whose boxes an edge crosses)."""
    return browser.execute_script(  # type: ignore[no-any-return]
        """
        const table = document.getElementById('stages-full'), svg = document.getElementById('graph-full');
        if (!table || !svg) return null;
        const rows = {};
        for (const tr of table.querySelectorAll('tbody tr')) {
          rows[tr.dataset.stage] = {};
          for (const td of tr.querySelectorAll('td[data-status]'))
            rows[tr.dataset.stage][td.dataset.status] = Number(td.textContent.replace(/,/g, ''));
        }
        const nodes = {}, boxes = {};
        for (const g of svg.querySelectorAll('g.stage-node')) {
          const m = g.transform.baseVal.consolidate().matrix, r = g.querySelector('rect.box');
          boxes[g.dataset.stage] = {x: m.e, y: m.f, w: r.width.baseVal.value, h: r.height.baseVal.value};
          nodes[g.dataset.stage] = Array.from(g.querySelectorAll('text'), (t) => t.textContent);
        }
        const inside = (p, b) => b.x < p.x && p.x < b.x + b.w && b.y < p.y && p.y < b.y + b.h;
        const edges = Array.from(svg.querySelectorAll('g.stage-edge'), (g) => {
          const path = g.querySelector('path'), length = path.getTotalLength();
          const crosses = new Set();
          for (let d = 0; d <= length; d += 2) {
            const p = path.getPointAtLength(d);
            for (const [stage, b] of Object.entries(boxes)) if (inside(p, b)) crosses.add(stage);
          }
          const tip = g.querySelector('polygon').points[0], start = path.getPointAtLength(0);
          return {from: g.dataset.from, to: g.dataset.to, start: [start.x, start.y], tip: [tip.x, tip.y],
                  crosses: Array.from(crosses)};
        });
        return {rows, nodes, boxes, edges, drawn: svg.getBoundingClientRect().width,
                text: document.getElementById('section-stages').innerText};
        """
    )


def assert_stages_shown(state: dict[str, Any]) -> None:
    assert state["rows"] == STAGE_COUNTS
    assert state["nodes"] == {
        "chain": ["chain", "6 ok / 0 err / 0 skipped"],
        "domain": ["domain", "5 ok / 1 err / 0 skipped"],
        "deep": ["deep", "3 ok / 0 err / 2 skipped", "1 pending"],
        "summary": ["summary", "5 ok / 0 err / 0 skipped", "1 pending"],
    }
    assert {(e["from"], e["to"]) for e in state["edges"]} == EDGES and len(state["edges"]) == len(EDGES)
    boxes = state["boxes"]
    for e in state["edges"]:
        up, down = boxes[e["from"]], boxes[e["to"]]
        assert (
            e["start"][0] == pytest.approx(up["x"] + up["w"]) and up["y"] < e["start"][1] < up["y"] + up["h"]
        )
        assert e["tip"][0] == pytest.approx(down["x"]) and down["y"] < e["tip"][1] < down["y"] + down["h"]
        assert e["crosses"] == [], f"{e['from']} -> {e['to']} crosses a stage's box"
    # columns: each stage right of what it waits for, the fan-out side by side
    assert boxes["chain"]["x"] == boxes["domain"]["x"] < boxes["deep"]["x"] < boxes["summary"]["x"]
    assert state["drawn"] > 0
    assert (
        HOSTILE_DESCRIPTION in state["text"]
        and "is_representative and domain.coverage < 0.5" in state["text"]
    )


def test_report_and_dashboard_show_pipeline_stages(
    tmp_path: Path, scratch_db: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database
    from ecod_jobs.pipeline_sync import stage_counts

    cfg, batch_id = setup_pipeline(tmp_path, scratch_db)
    assert stage_counts(Database(load_config(cfg)), batch_id) == STAGE_COUNTS  # what the pages must show

    out = tmp_path / "report.html"
    done = run_cli("--config", str(cfg), "report", "--batch", str(batch_id), "-o", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "<img src=x" not in html
    view = embedded_data(html)
    [pipeline] = view["stages"]["pipelines"]
    assert pipeline["name"] == "full" and pipeline["description"] == HOSTILE_DESCRIPTION
    assert {s["name"]: s["counts"] for s in pipeline["stages"]} == STAGE_COUNTS
    assert [s["name"] for s in pipeline["stages"]] == list(PIPELINE_STAGES)
    assert {(e["from"], e["to"]) for e in pipeline["graph"]["edges"]} == EDGES
    assert view["stages"]["unconfigured"] == [] and view["stages"]["other_stages"] == []

    browser.get(out.as_uri())
    state = wait_for(lambda: stage_state(browser), 30, "the report's stage graph")
    assert_stages_shown(state)
    assert page_state(browser)["pwned"] is None
    browser.save_screenshot(str(artifacts / "report-stages.png"))

    with dashboard(cfg, tmp_path) as url:
        status, api = get(f"{url}/api/batches/{batch_id}")
        assert status == 200
        assert {s["name"]: s["counts"] for s in api["stages"]["pipelines"][0]["stages"]} == STAGE_COUNTS
        browser.get(f"{url}/batches/{batch_id}")
        state = wait_for(lambda: stage_state(browser), 30, "the dashboard's stage graph")
        assert_stages_shown(state)
        assert page_state(browser)["pwned"] is None
        browser.save_screenshot(str(artifacts / "dashboard-stages.png"))

    # a config without the pipeline: the stages' numbers stay, by name, with no graph
    import yaml

    data = yaml.safe_load(cfg.read_text())
    del data["pipelines"]
    bare = write_config(tmp_path / "bare.yml", data)
    out = tmp_path / "bare.html"
    assert run_cli("--config", str(bare), "report", "--batch", str(batch_id), "-o", str(out)).returncode == 0
    stages = embedded_data(out.read_text())["stages"]
    assert stages["pipelines"] == [] and stages["unconfigured"] == ["full"]
    assert {s["name"]: s["counts"] for s in stages["other_stages"]} == STAGE_COUNTS
    browser.get(out.as_uri())
    shown = wait_for(
        lambda: browser.execute_script(
            "const t = document.getElementById('stages-other');"
            "return t && {rows: t.querySelectorAll('tbody tr').length,"
            " graphs: document.querySelectorAll('svg.pipeline-graph').length,"
            " note: document.getElementById('stages-unconfigured').textContent}"
        ),
        30,
        "the stages of a pipeline the config does not define",
    )
    assert shown["rows"] == 4 and shown["graphs"] == 0 and "pipeline full" in shown["note"]


def test_stage_view_of_pipelines_under_way_and_gone(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    """Without a run: recorded runs and item-stages as a pipeline leaves them midway."""
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database
    from ecod_jobs.insight import data

    cfg, batch_id = setup_pipeline(tmp_path, scratch_db, run=False)
    config = load_config(cfg)
    db = Database(config)
    assert data.stage_view(db, batch_id, config, 6) is None  # no pipeline ran
    conn = connect_scratch(scratch_db)
    for n, job_type in enumerate(("scan", "pipeline.full", "pipeline.gone")):
        q(
            conn,
            "INSERT INTO ecod_schema.ecod_jobs_run (run_id, batch_id, job_type, started_at)"
            " VALUES (gen_random_uuid(), %s, %s, now() + make_interval(secs => %s)) RETURNING run_id",
            batch_id, job_type, n,
        )  # fmt: skip
    assert data.pipelines_run(db, batch_id) == ["gone", "full"]  # the latest run's first; not 'scan'
    rows = [(1, "chain", "success"), (2, "chain", "success"), (3, "chain", "running"), (1, "old", "error")]
    for pid, stage_name, status in rows:
        q(
            conn,
            "INSERT INTO ecod_schema.ecod_jobs_item_stage (process_id, stage, batch_id, status)"
            " VALUES (%s, %s, %s, %s) RETURNING process_id",
            pid, stage_name, batch_id, status,
        )  # fmt: skip
    view = data.stage_view(db, batch_id, config, 6)
    assert view is not None
    [full] = view["pipelines"]
    assert [s["name"] for s in full["stages"]] == ["chain", "domain", "deep", "summary"]
    counts = {s["name"]: s["counts"] for s in full["stages"]}
    assert counts["chain"] == {"pending": 3, "running": 1, "success": 2, "error": 0, "skipped": 0}
    # a stage no item has reached yet: every item waits for it
    assert counts["domain"] == {"pending": 6, "running": 0, "success": 0, "error": 0, "skipped": 0}
    deep = full["stages"][2]
    assert deep["after"] == ["chain", "domain"] and deep["when"] == PIPELINE_STAGES["deep"]["when"]
    assert full["stages"][3]["if_upstream_skipped"] == "run" and full["stages"][0]["progress"] == 2 / 6
    # 'gone' is not in the config: its stages ('old' here) by name, with no graph
    assert view["unconfigured"] == ["gone"]
    assert [(s["name"], s["counts"]["error"], s["counts"]["pending"]) for s in view["other_stages"]] == [
        ("old", 1, 5)
    ]
    graph = figures.attach(data.batch_view(db, batch_id, config=config))["stages"]["pipelines"][0]["graph"]
    assert [n["stage"] for n in graph["nodes"]] == ["chain", "domain", "deep", "summary"]


# --------------------------------------------------------------------------- plots: few and many chunks

# each figure's title, mode bar and labels (requested, suggested) as drawn, and its first trace's type
FIGURE_BOXES = """
return Array.from(document.querySelectorAll('.figure'), (f) => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return {what: e.getAttribute('class') + ' ' + e.textContent, left: r.left, top: r.top, right: r.right,
            bottom: r.bottom}; };
  return {id: f.id, type: f.data && f.data.length ? f.data[0].type : null,
          boxes: Array.from(f.querySelectorAll('.gtitle, .modebar, .annotation'), box)};
});
"""


def add_chunk_jobs(conn: Any, batch_id: int, n: int) -> dict[str, float]:
    """``n`` completed chunk jobs as the sync records them (runtime 20-59 s, 200-699 MB):
    {chunk id: runtime}."""
    rows = q(
        conn,
        "INSERT INTO ecod_schema.job (batch_id, job_type, chunk_id, attempt, status, scheduler_state,"
        " node, items_count, start_time, completion_time, elapsed_seconds, max_rss_kb, req_mem_mb,"
        " req_time_seconds)"
        " SELECT %s, 'scan', 'c' || lpad(g::text, 5, '0'), 1, 'completed', 'COMPLETED',"
        "  'node' || mod(g, 4), 10,"
        "  timestamp '2026-11-24 10:00' + g * interval '15 s',"
        "  timestamp '2026-11-24 10:00' + g * interval '15 s' + (20 + mod(g * 37, 40)) * interval '1 s',"
        "  20 + mod(g * 37, 40), (200 + mod(g * 53, 500)) * 1024, 1024, 300"
        " FROM generate_series(1, %s) g RETURNING chunk_id, elapsed_seconds",
        batch_id, n,
    )  # fmt: skip
    return {chunk: seconds for chunk, seconds in rows}


def assert_plots_readable(browser: Any, few: bool) -> None:
    """Runtime and memory as points (few chunks) or histograms (many); no title, mode bar
    or label drawn over another."""
    figures_drawn = wait_for(
        lambda: (f := browser.execute_script(FIGURE_BOXES)) and all(x["type"] for x in f) and f,
        30,
        "the plots",
    )
    types = {f["id"]: f["type"] for f in figures_drawn}
    expected = "box" if few else "histogram"
    assert types == {"fig-timeline": "bar", "fig-runtime": expected, "fig-memory": expected}
    for figure in figures_drawn:
        boxes = figure["boxes"]
        assert [b for b in boxes if "gtitle" in b["what"]] and [b for b in boxes if "modebar" in b["what"]]
        assert len([b for b in boxes if "annotation" in b["what"]]) == (
            0 if figure["id"] == "fig-timeline" else 2
        )
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                apart = a["right"] <= b["left"] or b["right"] <= a["left"]
                assert apart or a["bottom"] <= b["top"] or b["bottom"] <= a["top"], (figure["id"], a, b)


def test_plots_of_few_and_many_chunks(
    tmp_path: Path, scratch_db: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    cfg, few_id = setup(tmp_path, scratch_db, n=2, batch_size=1)
    many_id = create_batch(cfg, tmp_path / "items.tsv", "many chunks", tmp_path)
    conn = connect_scratch(scratch_db)
    few = add_chunk_jobs(conn, few_id, 3)
    add_chunk_jobs(conn, many_id, 300)
    assert 3 < figures.STRIP_MAX <= 300

    for batch_id, name in ((few_id, "3-chunks"), (many_id, "300-chunks")):
        out = tmp_path / f"report-{name}.html"
        done = run_cli("--config", str(cfg), "report", "--batch", str(batch_id), "-o", str(out))
        assert done.returncode == 0, done.stderr
        browser.get(out.as_uri())
        assert_plots_readable(browser, few=batch_id == few_id)
        browser.save_screenshot(str(artifacts / f"report-plots-{name}.png"))
    # each point a chunk: the mouse over one names the chunk and its runtime
    browser.get((tmp_path / "report-3-chunks.html").as_uri())
    assert_plots_readable(browser, few=True)
    points = browser.find_elements(By.CSS_SELECTOR, "#fig-runtime .points path.point")
    assert len(points) == 3
    ActionChains(browser).move_to_element(points[1]).perform()
    hover = wait_for(
        lambda: browser.execute_script(
            "const t = document.querySelector('#fig-runtime .hovertext'); return t && t.textContent"
        ),
        10,
        "the hover label",
    )
    chunk, seconds = re.fullmatch(r"chunk (c\d{5}) attempt 1: ([\d.]+) s", hover).groups()  # type: ignore[union-attr]
    assert float(seconds) == pytest.approx(few[chunk], abs=0.05)

    # the dashboard draws the same figures with the same script
    with dashboard(cfg, tmp_path) as url:
        for batch_id, name in ((few_id, "3-chunks"), (many_id, "300-chunks")):
            browser.get(f"{url}/batches/{batch_id}")
            assert_plots_readable(browser, few=batch_id == few_id)
            browser.save_screenshot(str(artifacts / f"dashboard-plots-{name}.png"))
