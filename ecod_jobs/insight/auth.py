"""Who may read the dashboard: this host alone on the loopback, else whoever has its token.

Bound to the loopback (127.0.0.0/8, ::1, localhost) the dashboard answers anyone on
this host, for local Host names only (``dashboard.allowed_hosts``). Bound to any other
address it would show every batch's paths, errors, users and hosts to the network,
so every request, on every route, needs the token:

* ``Authorization: Bearer TOKEN`` (or ``X-ECOD-Jobs-Token: TOKEN``), for scripts;
* ``?token=TOKEN`` once, in a browser: the answer is a redirect to the same address
  without it (so the token leaves the address bar and the history) that sets a cookie,
  HttpOnly and SameSite=Strict (not Secure: the dashboard speaks plain http).

The token comes from ``$ECOD_JOBS_DASHBOARD_TOKEN``, else the config's
``dashboard.token``, else ``secrets.token_urlsafe(32)`` made at start. Comparisons
are constant-time. Nothing here logs, and no message carries the token.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from ..exceptions import ConfigurationError, ValidationError

TOKEN_ENV = "ECOD_JOBS_DASHBOARD_TOKEN"
TOKEN_HEADER = "x-ecod-jobs-token"
QUERY = "token"
COOKIE = "ecod_jobs_dashboard"
# Visible ASCII (a header value), at least 16 characters; the schema's dashboard.token says the same.
_GOOD_TOKEN = re.compile(r"[!-~]{16,}")
DENIED = (
    "this dashboard needs its token: open the address with ?token=TOKEN that 'ecod-jobs dashboard'"
    " gave, or send the header 'Authorization: Bearer TOKEN'"
)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine. A host name other
    than localhost counts as reachable from elsewhere, whatever it resolves to now."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Token:
    """The dashboard's token and where it came from (the value stays out of ``repr``)."""

    value: str = field(repr=False)
    source: str

    @property
    def generated(self) -> bool:
        return self.source == "generated"


def resolve_token(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Token:
    """The token, first found: the environment variable, ``dashboard.token``, a new one.
    An empty variable counts as unset (``VAR= ecod-jobs ...`` is how a shell unsets one)."""
    environ = os.environ if environ is None else environ
    if value := environ.get(TOKEN_ENV):
        if not _GOOD_TOKEN.fullmatch(value):
            # the value itself is never shown: only its length
            raise ConfigurationError(
                f"environment variable {TOKEN_ENV}: the dashboard token must be at least 16 visible ASCII"
                f" characters without spaces (it has {len(value)} characters)",
                {"variable": TOKEN_ENV},
            )
        return Token(value, f"environment variable {TOKEN_ENV}")
    if value := (config.get("dashboard") or {}).get("token"):
        return Token(value, "config key dashboard.token")  # checked by the config's schema
    return Token(secrets.token_urlsafe(32), "generated")


def link_file(port: int) -> Path:
    """Where a made token's address goes when standard output is not a terminal."""
    return Path.home() / ".ecod_jobs" / f"dashboard-{socket.gethostname()}-{port}.url"


def write_link(path: Path, url: str) -> None:
    """Write the address with the token, readable by its owner alone (0600, in a 0700
    directory made if missing); a usage error, naming the way round it, if it cannot."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # a file left by an earlier run may have another mode
            handle.write(url + "\n")
    except OSError as exc:
        raise ValidationError(
            f"cannot write the dashboard's address to {path}: {exc.strerror or exc};"
            f" set {TOKEN_ENV} to a token of your own instead",
            {"path": str(path)},
        ) from None


def cookie_value(token: str) -> str:
    """What the cookie holds: an HMAC of the token, not the token. Any token then makes a
    valid cookie (hex), and the browser's cookie store never holds the token itself."""
    return hmac.new(token.encode(), b"ecod-jobs dashboard cookie", hashlib.sha256).hexdigest()


def _same(expected: bytes, given: str) -> bool:
    return hmac.compare_digest(expected, given.encode("utf-8", "surrogateescape"))


def _cookie_name(scope: Scope) -> str:
    # cookies ignore ports: two dashboards on one host would overwrite each other's
    server = scope.get("server")
    return f"{COOKIE}_{server[1]}" if server and server[1] else COOKIE


class TokenMiddleware:
    """One check before every route (pages, API, static files, and any route added
    later): a request without the token gets 401 and nothing else."""

    def __init__(self, app: ASGIApp, token: str, headers: Mapping[str, str] | None = None) -> None:
        self.app = app
        self._token = token.encode()
        self._cookie = cookie_value(token).encode()
        self._headers = dict(headers or {})

    def _authorised(self, conn: HTTPConnection) -> bool:
        scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(self._token, credentials.strip()):
            return True
        if TOKEN_HEADER in conn.headers and _same(self._token, conn.headers[TOKEN_HEADER]):
            return True
        cookie = conn.cookies.get(_cookie_name(conn.scope))
        return cookie is not None and _same(self._cookie, cookie)

    def _denied(self, path: str) -> Response:
        headers = {**self._headers, "WWW-Authenticate": 'Bearer realm="ecod-jobs dashboard"'}
        if path.startswith("/api/"):
            return JSONResponse({"error": DENIED}, status_code=401, headers=headers)
        return PlainTextResponse(DENIED, status_code=401, headers=headers)

    def _welcome(self, scope: Scope, headers: Headers) -> Response:
        """The redirect that trades ``?token=`` for the cookie: to the same path and other
        query parameters. Relative, and with one leading '/', so it cannot leave the site.

        A 303, but for a link followed from another site (``Sec-Fetch-Site: cross-site``):
        a browser then withholds a SameSite=Strict cookie from the whole redirect chain, and
        the page would answer 401 even on reload. That one gets a page that moves on by
        itself (a meta refresh, no script), a navigation of this site, which sends it."""
        query = scope.get("query_string", b"").decode("latin-1")
        rest = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != QUERY]
        target = "/" + quote(scope["path"].lstrip("/"), safe="/:@!$&()*+,;=-._~")
        if rest:
            target += "?" + urlencode(rest)
        response: Response
        if headers.get("sec-fetch-site") == "cross-site":
            link = html.escape(target)
            page = (
                '<!doctype html><meta charset="utf-8">'
                f'<meta http-equiv="refresh" content="0; url=\'{link}\'">'
                f'<title>ecod-jobs dashboard</title><p><a href="{link}">Open the dashboard</a></p>'
            )
            response = HTMLResponse(page, headers=self._headers)
        else:
            response = RedirectResponse(target, status_code=303, headers=self._headers)
        response.set_cookie(
            _cookie_name(scope), self._cookie.decode(), path="/", httponly=True, samesite="strict"
        )
        return response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        if scope["type"] == "websocket":  # the dashboard has none; never unauthenticated
            if self._authorised(conn):
                await self.app(scope, receive, send)
            else:
                await WebSocketClose(code=1008)(scope, receive, send)
            return
        if QUERY in conn.query_params:
            given = conn.query_params.getlist(QUERY)
            ok = len(given) == 1 and _same(self._token, given[0])
            await (self._welcome(scope, conn.headers) if ok else self._denied(scope["path"]))(
                scope, receive, send
            )
        elif self._authorised(conn):
            await self.app(scope, receive, send)
        else:
            await self._denied(scope["path"])(scope, receive, send)
