"""``ecod-jobs dashboard``: a read-only web page over the database, and its JSON API.

    GET /                                 the batch list (page)
    GET /batches/{id}                     one batch (page)
    GET /api/batches                      batches with counts and progress
    GET /api/batches/{id}                 one batch: counts, stages, jobs, plots, failures, runs
    GET /api/batches/{id}/failed          failed items, ``?limit=`` (<= 1000) and ``?offset=``
    GET /batches/{id}/items/{pid}/log     one item's attempts and output (page)
    GET /api/batches/{id}/items/{pid}/log ``?stage=&attempt=&full=1``: what ``ecod-jobs logs`` shows
    GET /static/{name}                    view.js, style.css, plotly.min.js (from the plotly wheel)

Read-only by construction: only GET routes, and every connection runs with
``default_transaction_read_only``. The page is drawn by the same ``view.js`` as
the report, from the same JSON, with textContent only. Bound beyond the loopback,
every route needs the dashboard's token (``auth.py``).
"""

from __future__ import annotations

import errno
import functools
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..db import Database, require_batch, snapshot
from ..exceptions import DatabaseError, DatabaseUnavailableError, ValidationError
from . import data, figures, item_logs
from .auth import Token, TokenMiddleware, is_loopback
from .data import require_schema
from .report import environment, plotly_js, static_text

DASHBOARD_JOB_LIMIT = 2000  # chunk jobs in the plots: the latest
FULL_LOG_LIMIT = 16 << 20  # bytes of each stream an item's page shows with ?full=1
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self';"
    " style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {
    "view.js": "text/javascript",
    "dashboard.js": "text/javascript",
    "style.css": "text/css",
    "plotly.min.js": "text/javascript",
}
LOCAL_NAMES = ["localhost", "127.0.0.1", "::1", "[::1]"]


def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers=SECURITY_HEADERS)


@functools.cache
def _static(name: str) -> bytes:
    text = plotly_js() if name == "plotly.min.js" else static_text(name)
    return text.encode("utf-8")


def allowed_hosts(bind: str) -> list[str]:
    """Host headers to answer. Bound to loopback, only local names: a web page elsewhere
    cannot point its own host name at 127.0.0.1 (DNS rebinding) and read the API.
    Bound elsewhere, any: the token guards every route then (a rebinding page has
    neither the token nor the cookie, which the browser keeps for the real name)."""
    if not is_loopback(bind):
        return ["*"]
    return sorted({*LOCAL_NAMES, bind})


def create_app(
    db: Database,
    hosts: list[str] | None = None,
    config: Mapping[str, Any] | None = None,
    token: str | None = None,
) -> Starlette:
    """The dashboard over ``db`` (whose connections should be read-only: see ``serve``);
    ``config`` defines the pipelines whose graphs a batch page draws. With ``token``,
    every request must carry it (one middleware, before routing: every route, any
    route added later, and unknown paths alike)."""
    guard = [Middleware(TokenMiddleware, token=token, headers=SECURITY_HEADERS)] if token else []

    def page(request: Request) -> HTMLResponse:
        batch_id = request.path_params.get("batch_id")
        item_id = request.path_params.get("process_id")
        html = environment().get_template("dashboard.html.j2").render(batch_id=batch_id, item_id=item_id)
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(
            _static(name),
            media_type=STATIC[name],
            headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"},
        )

    def api_batches(request: Request) -> JSONResponse:
        with snapshot(db) as snap:
            return _json({"batches": data.batches(snap)})

    def api_batch(request: Request) -> JSONResponse:
        with snapshot(db) as snap:
            view = data.batch_view(
                snap, request.path_params["batch_id"], jobs_limit=DASHBOARD_JOB_LIMIT, config=config
            )
        return _json(figures.attach(view))

    def api_failed(request: Request) -> JSONResponse:
        batch_id = request.path_params["batch_id"]
        limit = _int_param(request, "limit", 100, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        with snapshot(db) as snap:
            batch = require_batch(snap, batch_id)
            items = data.failed_items(snap, batch_id, batch.base_path, limit=limit, offset=offset)
        return _json({"batch_id": batch_id, "limit": limit, "offset": offset, "items": items})

    def api_item_log(request: Request) -> JSONResponse:
        attempt = _int_param(request, "attempt", 0, 1, 10**6) if "attempt" in request.query_params else None
        full = request.query_params.get("full") in ("1", "true")
        with snapshot(db) as snap:
            found = item_logs.item_log(
                snap,
                config or {},
                request.path_params["batch_id"],
                request.path_params["process_id"],
                stage=request.query_params.get("stage") or None,
                attempt=attempt,
            )
        return _json(item_logs.to_dict(found, None if full else item_logs.TAIL_LINES, FULL_LOG_LIMIT))

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        missing = isinstance(exc, item_logs.ItemNotFound) or "does not exist" in str(exc)
        return _json({"error": str(exc)}, 404 if missing else 400)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return _json({"error": str(exc)}, 503)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        return _json({"error": str(exc)}, 500)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/batches/{batch_id:int}", page),
            Route("/api/batches", api_batches),
            Route("/api/batches/{batch_id:int}", api_batch),
            Route("/api/batches/{batch_id:int}/failed", api_failed),
            Route("/batches/{batch_id:int}/items/{process_id:int}/log", page),
            Route("/api/batches/{batch_id:int}/items/{process_id:int}/log", api_item_log),
            Route("/static/{name}", static),
        ],
        middleware=[*guard, Middleware(TrustedHostMiddleware, allowed_hosts=hosts or LOCAL_NAMES)],
        exception_handlers={
            ValidationError: bad_request,
            DatabaseUnavailableError: unavailable,
            DatabaseError: database_error,
        },
    )


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"query parameter {name}={raw!r}: expected an integer") from None
    if not low <= value <= high:
        raise ValidationError(f"query parameter {name}={value}: expected {low} to {high}")
    return value


def read_only(db: Database) -> Database:
    """Make every later connection of this process read-only (libpq reads PGOPTIONS at
    connect). The schema check comes first: it may start the embedded server and
    create its database, which a read-only session could not."""
    require_schema(db)
    options = os.environ.get("PGOPTIONS", "")
    if "default_transaction_read_only" not in options:
        os.environ["PGOPTIONS"] = f"{options} -c default_transaction_read_only=on".strip()
    return db


def bind(host: str, port: int) -> socket.socket:
    """The dashboard's listening address, bound now: a port in use is a one-line error
    (exit 2) before anything is printed, not a server error after the banner."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValidationError(
                f"port {port} on {host} is already in use: stop what listens there or give another --port",
                {"host": host, "port": port},
            ) from None
        raise ValidationError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}", {"host": host, "port": port}
        ) from None
    return sock


def serve(
    db: Database,
    host: str = "127.0.0.1",
    port: int = 8050,
    announce: Callable[[], None] | None = None,
    config: Mapping[str, Any] | None = None,
    token: Token | None = None,
) -> None:
    """Serve the dashboard until interrupted; ``announce`` runs once the port is bound and
    the schema checked, so that its banner is never printed for a server that cannot start.
    Beyond the loopback ``token`` is required: no caller can open every batch by mistake."""
    import uvicorn

    if token is None and not is_loopback(host):
        raise ValidationError(
            f"the dashboard on {host} would be reachable from other hosts: it needs a token", {"host": host}
        )
    sock = bind(host, port)
    try:
        app = create_app(read_only(db), allowed_hosts(host), config, token.value if token else None)
        if announce is not None:
            announce()
        # No access log: it prints each request line, and a browser's first one has ?token=.
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
