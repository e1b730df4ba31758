"""The dashboard beyond the loopback: every route asks for the token, which no log shows.

Real servers over a scratch database: the app in a uvicorn thread for the route-by-route
checks (its routes enumerated, so a route added later is checked too), and the real
``ecod-jobs dashboard --host 0.0.0.0`` in a subprocess for what it prints and logs.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
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

from ecod_jobs.config import config_hash, load_config
from ecod_jobs.db import Database
from ecod_jobs.exceptions import ConfigurationError, ValidationError
from ecod_jobs.insight import auth
from ecod_jobs.insight.dashboard import allowed_hosts, create_app, serve

TOKEN = "s3cret-Token-for-the-dashboard-0123456789"
NAME = "batch-seen-only-with-the-token"
# the routes of today, each answering 200 with the token; a route added later is held to 401 without it
KNOWN = {
    "/",
    "/batches/{batch_id:int}",
    "/api/batches",
    "/api/batches/{batch_id:int}",
    "/api/batches/{batch_id:int}/failed",
    "/static/{name}",
}


def setup(
    tmp_path: Path, scratch_db: dict[str, Any], dashboard: dict[str, Any] | None = None
) -> tuple[Path, int]:
    (tmp_path / "data").mkdir()
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {"scan": {"command": "echo {item_id}"}},
            **({"dashboard": dashboard} if dashboard else {}),
        },
    )
    items = write_items(tmp_path / "items.tsv", ["data/a.fa", "data/b.fa"])
    return cfg, create_batch(cfg, items, NAME, tmp_path)


def request(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    """One request, redirects not followed: the response with its body read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        response.text = response.read().decode()  # type: ignore[attr-defined]
        return response
    finally:
        conn.close()


def example_paths(app: Any, batch_id: int, item_id: int) -> dict[str, str]:
    """A concrete path for each route of the app: {template: path}."""

    def value(match: re.Match[str]) -> str:
        name, kind = match.group(1), match.group(2) or ""
        if kind == ":int":
            return str(batch_id if "batch" in name else item_id)
        return "view.js" if name == "name" else "x"

    return {r.path: re.sub(r"\{(\w+)(:\w+)?\}", value, r.path) for r in app.routes}


@contextlib.contextmanager
def served(app: Any) -> Iterator[int]:
    """The app behind a real uvicorn server in a thread, on 127.0.0.1; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the server to start")
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def test_every_route_needs_the_token(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db)
    config = load_config(cfg, environ={})
    [(item_id,)] = q(connect_scratch(scratch_db), "SELECT min(id) FROM ecod_schema.process_status")
    app = create_app(Database(config), allowed_hosts("0.0.0.0"), config, token=TOKEN)
    paths = example_paths(app, batch_id, item_id)
    assert set(paths) >= KNOWN, "a route of today is missing: update KNOWN"
    with served(app) as port:
        for template, path in {**paths, "unknown path": "/no/such/page"}.items():
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-of-the-same-size-0123456789abc"},
                {"Authorization": f"Basic {TOKEN}"},
                {"X-ECOD-Jobs-Token": TOKEN[:-1]},
                {"Cookie": f"ecod_jobs_dashboard_{port}={TOKEN}"},  # the token is not the cookie
                {"Host": "evil.example"},
            ):
                denied = request(port, path, headers)
                assert denied.status == 401, (template, headers)
                assert NAME not in denied.text and str(tmp_path) not in denied.text and len(denied.text) < 300
                assert denied.getheader("WWW-Authenticate", "").startswith("Bearer")
            # before routing: a method the route lacks is refused the same way, not with 405
            assert request(port, path, method="POST").status == 401
            assert request(port, f"{path}?token=not-the-token").status == 401
            sep = "&" if "?" in path else "?"
            assert request(port, f"{path}{sep}token={TOKEN}&token={TOKEN}").status == 401  # one, or none

            for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"X-ECOD-Jobs-Token": TOKEN}):
                allowed = request(port, path, headers)
                if template in KNOWN:
                    assert allowed.status == 200, (template, allowed.text)
                else:
                    assert allowed.status != 401, template
        assert request(port, "/no/such/page", {"Authorization": f"bearer {TOKEN}"}).status == 404
        listing = request(port, "/api/batches", {"Authorization": f"Bearer {TOKEN}"})
        assert NAME in listing.text and listing.getheader("Cache-Control") == "no-store"


def test_token_in_the_address_becomes_a_cookie(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db)
    config = load_config(cfg, environ={})
    [(item_id,)] = q(connect_scratch(scratch_db), "SELECT min(id) FROM ecod_schema.process_status")
    app = create_app(Database(config), allowed_hosts("0.0.0.0"), config, token=TOKEN)
    with served(app) as port:
        # the same address, the token taken out (other parameters kept), and a cookie
        welcome = request(port, f"/api/batches/{batch_id}/failed?limit=5&token={TOKEN}")
        assert welcome.status == 303
        assert welcome.getheader("Location") == f"/api/batches/{batch_id}/failed?limit=5"
        set_cookie = welcome.getheader("Set-Cookie")
        name, value = set_cookie.split(";")[0].split("=", 1)
        flags = {f.strip().lower() for f in set_cookie.split(";")[1:]}
        assert name == f"ecod_jobs_dashboard_{port}" and value == auth.cookie_value(TOKEN)
        assert {"httponly", "samesite=strict", "path=/"} <= flags and "secure" not in flags
        assert TOKEN not in set_cookie and TOKEN not in welcome.text
        assert welcome.getheader("Referrer-Policy") == "no-referrer"
        cookie = {"Cookie": f"{name}={value}"}
        for template, path in example_paths(app, batch_id, item_id).items():
            answer = request(port, path, cookie)
            assert answer.status == 200 if template in KNOWN else answer.status != 401, template
        assert request(port, "/api/batches", {"Cookie": f"{name}={value[:-1]}0"}).status == 401
        # the redirect stays on this site: '//evil.example' would be another host's address
        escape = request(port, f"//evil.example/x?token={TOKEN}")
        assert escape.status == 303 and escape.getheader("Location") == "/evil.example/x"
        assert request(port, f"/?token={TOKEN}").getheader("Location") == "/"
        # a link followed from another site: a page that moves on by itself (see the browser test)
        moved = request(port, f"/batches/{batch_id}?token={TOKEN}", {"Sec-Fetch-Site": "cross-site"})
        assert moved.status == 200 and moved.getheader("Set-Cookie").startswith(f"{name}={value};")
        assert f'<meta http-equiv="refresh" content="0; url=\'/batches/{batch_id}\'">' in moved.text
        assert TOKEN not in moved.text


def test_browser_opens_the_address_with_the_token(
    tmp_path: Path, scratch_db: dict[str, Any], browser: Any, artifacts: Path
) -> None:
    """Chromium: typed in, or followed from another site's link (a SameSite=Strict cookie's
    hard case), the address with the token opens the page, which then reads the API with
    the cookie alone, and the token has left the address bar."""
    from selenium.webdriver.common.by import By

    cfg, batch_id = setup(tmp_path, scratch_db)
    config = load_config(cfg, environ={})
    app = create_app(Database(config), allowed_hosts("0.0.0.0"), config, token=TOKEN)
    with served(app) as port:
        url = f"http://127.0.0.1:{port}"

        def shown() -> str | None:
            return browser.execute_script(  # type: ignore[no-any-return]
                "const n = document.getElementById('batch-name'); return n && n.textContent"
            )

        browser.get(f"{url}/batches/{batch_id}")
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(f"{url}/batches/{batch_id}?token={TOKEN}")
        assert wait_for(shown, 30, "the batch page") == NAME
        assert browser.current_url == f"{url}/batches/{batch_id}"
        browser.save_screenshot(str(artifacts / "dashboard-token.png"))
        browser.delete_all_cookies()
        browser.get(f"{url}/batches/{batch_id}")
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text

        link = tmp_path / "link.html"
        link.write_text(f'<a id="go" href="{url}/batches/{batch_id}?token={TOKEN}">the dashboard</a>')
        browser.get(link.as_uri())
        browser.find_element(By.ID, "go").click()
        assert wait_for(shown, 30, "the batch page, from another site's link") == NAME
        assert browser.current_url == f"{url}/batches/{batch_id}"
        browser.delete_all_cookies()


def test_loopback_needs_no_token(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db)
    config = load_config(cfg, environ={})
    [(item_id,)] = q(connect_scratch(scratch_db), "SELECT min(id) FROM ecod_schema.process_status")
    app = create_app(Database(config), allowed_hosts("127.0.0.1"), config)
    with served(app) as port:
        for template, path in example_paths(app, batch_id, item_id).items():
            if template in KNOWN:
                assert request(port, path).status == 200, template
        # the Host allow-list as before: a page elsewhere cannot rebind its name to 127.0.0.1
        assert request(port, "/api/batches", {"Host": "evil.example"}).status == 400
        assert request(port, "/api/batches", {"Host": f"localhost:{port}"}).status == 200
    # nor can a caller serve beyond the loopback without a token
    with pytest.raises(ValidationError, match="needs a token"):
        serve(Database(config), "0.0.0.0", free_port())


def test_what_counts_as_loopback() -> None:
    for host in ("127.0.0.1", "127.4.5.6", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert auth.is_loopback(host), host
        assert allowed_hosts(host) != ["*"]
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.7", "fe80::1", "node17", "localhost.example"):
        assert not auth.is_loopback(host), host
        assert allowed_hosts(host) == ["*"]  # the token guards these


def test_where_the_token_comes_from() -> None:
    env, conf = "E" * 20, "C" * 20
    with_conf = {"dashboard": {"token": conf}}
    assert auth.resolve_token(with_conf, {auth.TOKEN_ENV: env}).value == env
    assert auth.resolve_token(with_conf, {}).value == conf
    assert auth.resolve_token(with_conf, {auth.TOKEN_ENV: ""}).source == "config key dashboard.token"
    made = auth.resolve_token({}, {})
    assert made.generated and len(made.value) >= 43 and made.value != auth.resolve_token({}, {}).value
    assert made.value not in repr(made)
    for bad in ("short", "with a space in the middle", "non-ascii-token-é-0123456"):
        with pytest.raises(ConfigurationError) as info:
            auth.resolve_token(with_conf, {auth.TOKEN_ENV: bad})
        assert bad not in str(info.value) and auth.TOKEN_ENV in str(info.value)


def test_config_key_is_validated_and_masked(tmp_path: Path) -> None:
    base = {"job_types": {"scan": {"command": "echo {item_id}"}}}
    plain = write_config(tmp_path / "plain.yml", base)
    cfg = write_config(tmp_path / "c.yml", {**base, "dashboard": {"token": TOKEN}})
    assert load_config(cfg, environ={})["dashboard"]["token"] == TOKEN
    # the dashboard does not change what a run does: nor its config hash
    assert config_hash(load_config(cfg, environ={})) == config_hash(load_config(plain, environ={}))
    shown = run_cli("--config", str(cfg), "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert TOKEN not in shown.stdout and yaml.safe_load(shown.stdout)["dashboard"]["token"] == "********"
    # set through the environment, too; masked the same
    via_env = run_cli("--config", str(plain), "config", "show", env={"ECOD_DASHBOARD__TOKEN": TOKEN})
    assert via_env.returncode == 0 and TOKEN not in via_env.stdout and "********" in via_env.stdout
    for bad in ("weak-token", "a token with spaces in it"):
        path = write_config(tmp_path / "bad.yml", {**base, "dashboard": {"token": bad}})
        result = run_cli("--config", str(path), "config", "validate")
        assert result.returncode == 2 and "dashboard.token" in result.stderr and bad not in result.stderr
    unknown = write_config(tmp_path / "unknown.yml", {**base, "dashboard": {"tokn": TOKEN}})
    result = run_cli("--config", str(unknown), "config", "validate")
    assert result.returncode == 2 and "unknown key 'tokn'" in result.stderr


# --------------------------------------------------------------------------- the real command


@contextlib.contextmanager
def dashboard_process(
    cfg: Path, port: int, env: dict[str, str], stdout: Any, stderr: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """``ecod-jobs --debug dashboard --host 0.0.0.0`` (--debug: every log it can write)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecod_jobs.cli", "--debug", "--config", str(cfg), "dashboard",
         "--host", "0.0.0.0", "--port", str(port)],
        cwd=REPO, env={**os.environ, **env}, stdout=stdout, stderr=stderr,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def answers(proc: subprocess.Popen[bytes], port: int) -> bool:
    assert proc.poll() is None, "the dashboard stopped"
    try:
        return request(port, "/api/batches").status == 401
    except OSError:
        return False


def test_command_never_shows_a_given_token(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch_id = setup(tmp_path, scratch_db)
    port, out, err = free_port(), tmp_path / "out.log", tmp_path / "err.log"
    wrong = "wrong-token-that-must-not-be-logged-either"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        env = {auth.TOKEN_ENV: TOKEN, "HOME": str(tmp_path / "home")}
        with dashboard_process(cfg, port, env, stdout, stderr) as proc:
            wait_for(lambda: answers(proc, port), 60, "the dashboard to answer")
            welcome = request(port, f"/batches/{batch_id}?token={TOKEN}")
            assert welcome.status == 303 and welcome.getheader("Location") == f"/batches/{batch_id}"
            assert request(port, f"/api/batches?token={wrong}").status == 401
            assert request(port, "/api/batches", {"Authorization": f"Bearer {wrong}"}).status == 401
            assert request(port, f"/api/batches/999?token={TOKEN}").status == 303
            assert request(port, "/api/batches/999", {"Authorization": f"Bearer {TOKEN}"}).status == 404
            listing = request(port, "/api/batches", {"Authorization": f"Bearer {TOKEN}"})
            assert listing.status == 200 and NAME in listing.text
    printed, logged = out.read_text(), err.read_text()
    for secret in (TOKEN, wrong):
        assert secret not in printed and secret not in logged
    assert f"token of environment variable {auth.TOKEN_ENV}" in printed
    warnings = [line for line in logged.splitlines() if "not on the loopback alone" in line]
    assert len(warnings) == 1, logged
    assert f"anyone who can reach port {port} and has the token sees every batch" in warnings[0]
    assert not (tmp_path / "home").exists()  # nothing written: the user chose the token


def test_command_writes_a_made_token_for_its_owner_alone(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    """Output that is not a terminal may end in a log: the address goes to a 0600 file."""
    cfg, batch_id = setup(tmp_path, scratch_db)
    port, out, err, home = free_port(), tmp_path / "out.log", tmp_path / "err.log", tmp_path / "home"
    env = {"HOME": str(home)}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        with dashboard_process(cfg, port, env, stdout, stderr) as proc:
            wait_for(lambda: answers(proc, port), 60, "the dashboard to answer")
            [link_file] = (home / ".ecod_jobs").iterdir()
            assert stat.S_IMODE(link_file.stat().st_mode) == 0o600
            assert stat.S_IMODE(link_file.parent.stat().st_mode) == 0o700
            link = link_file.read_text().strip()
            match = re.fullmatch(rf"http://[^/]+:{port}/\?token=([A-Za-z0-9_-]{{43}})", link)
            assert match, link
            token = match.group(1)
            assert request(port, f"/?token={token}").status == 303
            assert request(port, f"/batches/{batch_id}", {"Authorization": f"Bearer {token}"}).status == 200
        printed, logged = out.read_text(), err.read_text()
        assert f"is in {link_file}" in printed
        assert token not in printed and token not in logged
        assert not link_file.exists(), "removed when the dashboard stops"
        assert proc.returncode == 128 + signal.SIGTERM and "interrupted by SIGTERM" in logged


def test_command_shows_a_made_token_on_its_terminal(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    """On a terminal (a pseudo-terminal here) the one-time address is printed there, only there."""
    cfg, batch_id = setup(tmp_path, scratch_db)
    port, err = free_port(), tmp_path / "err.log"
    primary, secondary = os.openpty()
    seen = b""
    home = {"HOME": str(tmp_path / "home")}
    with err.open("wb") as stderr, dashboard_process(cfg, port, home, secondary, stderr) as proc:
        os.close(secondary)

        def printed_link() -> re.Match[bytes] | None:
            nonlocal seen
            assert proc.poll() is None, seen.decode(errors="replace")
            if select.select([primary], [], [], 0.5)[0]:
                seen += os.read(primary, 65536)
            return re.search(rb"open once .*: (http://\S+:%d/\?token=([A-Za-z0-9_-]{43}))" % port, seen)

        match = wait_for(printed_link, 60, "the one-time address on the terminal")
        token = match.group(2).decode()
        wait_for(lambda: answers(proc, port), 60, "the dashboard to answer")
        assert request(port, f"/?token={token}").status == 303
        assert request(port, f"/batches/{batch_id}", {"Authorization": f"Bearer {token}"}).status == 200
    os.close(primary)
    assert token not in err.read_text()
    assert not (tmp_path / "home").exists()
