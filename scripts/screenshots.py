"""README screenshots from the demo batch: docs/img/report.png, dashboard-list.png, dashboard-batch.png.

    make screenshots        (or: .venv/bin/python scripts/screenshots.py [--out DIR])

Runs `make demo` on an embedded PostgreSQL of its own (under .ecod_jobs/screenshots/,
emptied first, so the dashboard lists the demo batch alone and the checkout's own
.ecod_jobs/pgdata is left as it was) with `ecod-jobs dashboard` serving it, and
photographs, with Debian's headless Chromium through selenium and chromedriver
(scripts/browser-deps installs both):

- dashboard-batch.png: the demo batch's page while the demo runs it (a live run,
  some of its chunks finished);
- report.png: the demo batch's report, as make demo writes it;
- dashboard-list.png: the list of batches once the demo has finished.

Each is the top of its page at a fixed width, so a new run gives the same pictures
but for the demo's times, names and run ids.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
WIDTH = 1300
TALL = 1400  # report and batch page: counts, plots, requests against use, the slowest chunks


def step(message: str) -> None:
    print(f"== {message}", flush=True)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        time.sleep(0.2)


def demo_config(work: Path) -> Path:
    """The repository's config/config.yml with a database and work root of our own."""
    config = yaml.safe_load((REPO / "config" / "config.yml").read_text())
    config["database"] = {"embedded": True, "data_dir": str(work / "pgdata")}
    config.setdefault("pipeline", {})["work_root"] = str(work / "work")
    path = work / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dashboard(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecod_jobs.cli", "dashboard", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"screenshots: the dashboard exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/batches", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, "the dashboard to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def chromium() -> Iterator[Any]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        raise SystemExit("screenshots: chromium or chromedriver is missing (run scripts/browser-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WIDTH},{TALL}")
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()


PLOTS_DRAWN = "return document.querySelectorAll('.figure .main-svg').length >= 3"
# the batch page with a live run that has finished some of its items, drawn
LIVE_AND_DRAWN = (
    "const p = document.getElementById('progress');"
    "return !!document.getElementById('live') && !!p && p.value > 0 && p.value < 1"
    " && document.querySelectorAll('.figure .main-svg').length >= 3"
)
LISTED = "return !!document.getElementById('progress-1')"
CONTENT_BOTTOM = "return Math.ceil(document.getElementById('app').getBoundingClientRect().bottom)"


def shoot(
    browser: Any, url: str, ready: str, out: Path, height: int | None = None, timeout: float = 60
) -> None:
    """Open ``url``, wait until the script ``ready`` says it is drawn, photograph the top of
    the page ``height`` pixels high (default: as high as the page, for short pages)."""
    browser.get(url)
    wait_for(lambda: browser.execute_script(ready), timeout, f"{url} to draw")
    time.sleep(1)  # plotly's transitions
    if not browser.execute_script(ready):
        raise SystemExit(f"screenshots: {url} changed while it was being photographed; run again")
    if height is None:  # the page's content and a margin below it
        height = int(browser.execute_script(CONTENT_BOTTOM)) + 24
    browser.set_window_size(WIDTH, height)
    inner = int(browser.execute_script("return window.innerHeight"))
    if inner != height:  # the window's frame, if any: make the viewport exact
        browser.set_window_size(WIDTH, 2 * height - inner)
    time.sleep(0.5)
    browser.save_screenshot(str(out))
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="default: docs/img")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    work = REPO / ".ecod_jobs" / "screenshots"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOD_")}
    env["ECOD_CONFIG_PATH"] = str(demo_config(work))
    env["DEMO_DIR"] = str(work / "demo")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"

    cli = [sys.executable, "-m", "ecod_jobs.cli"]
    subprocess.run([*cli, "db", "init"], cwd=REPO, env=env, check=True)  # the dashboard needs the schema
    try:
        with chromium() as browser, dashboard(env, work / "dashboard.log") as url:
            step(f"make demo, on an embedded PostgreSQL of its own, with the dashboard at {url}")
            demo = subprocess.Popen(["make", "demo"], cwd=REPO, env=env)
            try:

                def batch_exists() -> bool:
                    if demo.poll() is not None:
                        raise SystemExit(f"screenshots: make demo exited {demo.returncode} before its run")
                    try:
                        with urllib.request.urlopen(f"{url}/api/batches/1", timeout=5) as response:
                            return response.status == 200
                    except OSError:
                        return False

                wait_for(batch_exists, 300, "the demo batch")
                shoot(browser, url + "/batches/1", LIVE_AND_DRAWN, out / "dashboard-batch.png", TALL, 300)
            finally:
                if demo.wait() != 0:
                    raise SystemExit(f"screenshots: make demo exited {demo.returncode}")
            step("the report")
            shoot(browser, (work / "demo" / "report.html").as_uri(), PLOTS_DRAWN, out / "report.png", TALL)
            step("the list of batches")
            shoot(browser, url + "/", LISTED, out / "dashboard-list.png")
    finally:
        subprocess.run([*cli, "db", "stop"], cwd=REPO, env=env, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
