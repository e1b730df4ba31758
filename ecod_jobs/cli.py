"""The ``ecod-jobs`` command line.

Exit codes: 0 success; 1 a run or operation failed; 2 usage, configuration or
input errors (and an unreachable database). Errors print one line without a
traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .config import is_embedded, load_config, redact
from .db import Database, create_batch, current_version, init_schema, list_batches, require_schema
from .exceptions import USAGE_ERRORS, ConfigurationError, ECODError, ValidationError
from .items import read_items

log = logging.getLogger("ecod_jobs.cli")

Handler = Callable[[argparse.Namespace, dict[str, Any]], int]


# --------------------------------------------------------------------------- commands


def cmd_config_show(args: argparse.Namespace, config: dict[str, Any]) -> int:
    body = {k: v for k, v in redact(config).items() if k != "_meta"}
    sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
    return 0


def cmd_config_validate(args: argparse.Namespace, config: dict[str, Any]) -> int:
    where = config.get("_meta", {}).get("config_path", "built-in defaults")
    job_types = ", ".join(config.get("job_types") or {}) or "none"
    print(f"configuration is valid ({where}); job types: {job_types}")
    return 0


def cmd_db_init(args: argparse.Namespace, config: dict[str, Any]) -> int:
    db = Database(config)
    applied = init_schema(db)
    version = current_version(db)
    what = f"applied migrations {applied}" if applied else "already up to date"
    print(f"schema {db.schema} on {db.info.describe()}: version {version} ({what})")
    return 0


def cmd_db_status(args: argparse.Namespace, config: dict[str, Any]) -> int:
    db = Database(config)
    version = current_version(db)
    from .db.schema import LATEST_VERSION

    state = (
        "up to date" if version == LATEST_VERSION else f"run 'ecod-jobs db init' ({LATEST_VERSION} available)"
    )
    print(f"{db.info.describe()} schema {db.schema}: version {version}, {state}")
    return 0


def cmd_db_stop(args: argparse.Namespace, config: dict[str, Any]) -> int:
    if not is_embedded(config):
        print("the configured database is an external server; nothing to stop")
        return 0
    from .db.embedded import data_dir, stop_embedded

    stopped = stop_embedded(config)
    print(f"embedded PostgreSQL in {data_dir(config)} {'stopped' if stopped else 'was not running'}")
    return 0


def cmd_batch_create(args: argparse.Namespace, config: dict[str, Any]) -> int:
    # Every argument and the whole items file are checked before touching the database.
    for flag, value in (
        ("--type", args.type),
        ("--ref-version", args.ref_version),
        ("--base-path", args.base_path),
    ):
        if value is not None and not value.strip():
            raise ValidationError(f"{flag} must not be empty", {"argument": flag})
    base_path = ""
    if args.base_path is not None:
        # A file or a missing directory would only fail at run time, after planning.
        if not Path(args.base_path).is_dir():
            raise ValidationError(
                f"--base-path {args.base_path}: not an existing directory", {"base_path": args.base_path}
            )
        base_path = str(Path(args.base_path).resolve())
    items = read_items(args.items, allow_duplicates=args.allow_duplicates)
    db = Database(config)
    init_schema(db)
    ref_version = args.ref_version or config["pipeline"].get("ref_version", "unspecified")
    batch_id = create_batch(
        db,
        args.name,
        items,
        batch_type=args.type,
        base_path=base_path,
        ref_version=ref_version,
    )
    print(f"created batch {args.name!r} with {len(items)} items", file=sys.stderr)
    print(batch_id)
    return 0


def cmd_batch_list(args: argparse.Namespace, config: dict[str, Any]) -> int:
    db = require_schema(Database(config), needed_by="batch list")
    batches = list_batches(db)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": b.id,
                        "name": b.batch_name,
                        "type": b.type,
                        "status": b.status,
                        "total_items": b.total_items,
                        "completed_items": b.completed_items,
                    }
                    for b in batches
                ],
                indent=2,
            )
        )
        return 0
    print(f"{'id':>6}  {'status':<12} {'done':>9} {'total':>9}  name")
    for b in batches:
        print(
            f"{b.id:>6}  {b.status or '':<12} {b.completed_items or 0:>9} {b.total_items:>9}  {b.batch_name}"
        )
    return 0


def cmd_run(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .head import Head
    from .launch import run_batch
    from .progress import ProgressView

    # on stderr: stdout keeps only the summary below; a detached run has its own view in
    # its head's log, and `ecod-jobs follow` attaches one here
    view = None if args.detach else ProgressView(sys.stderr)
    try:
        result = run_batch(
            args.batch,
            profile=args.profile,
            job_type=args.job_type,
            retry_failed=args.retry_failed,
            config_path=args.config,
            dry_run=args.dry_run,
            pipeline=args.pipeline,
            stages=args.stages.split(",") if args.stages else None,
            from_stage=args.from_stage,
            rerun=args.rerun,
            progress=None if view is None else view.update,
            detach=args.detach,
        )
    finally:
        if view is not None:
            view.close()
    if isinstance(result, Head):
        where = result.where() if result.kind == "slurm" else f"a daemon ({result.where()})"
        print(f"run {result.run_id}: its head runs as {where}")
        print(f"  log:    {result.log_path}")
        print(f"  follow: ecod-jobs follow --batch {args.batch}")
        print(f"  status: ecod-jobs status --batch {args.batch}")
        print(f"  stop:   ecod-jobs cancel --batch {args.batch}")
        return 0
    return print_run_result(result, args.batch, args.retry_failed)


def print_run_result(result: Any, batch_id: int, retry_failed: bool) -> int:
    """Print what a run did (``ecod-jobs run``, and a detached head into its log); returns
    the exit code."""
    if result.nothing_to_do:
        print(
            f"batch {batch_id}: nothing to do (no items need work"
            f"{'' if retry_failed else '; --retry-failed reruns failed ones'})"
        )
        return 0
    if result.dry_run:
        print(
            f"dry run: {result.planned_items} items would run; nothing was written"
            f" (Snakemake's plan in {result.log_path})"
        )
        return 0 if result.returncode == 0 else 1
    counts = result.by_status
    print(
        f"run {result.run_id}: {counts.get('success', 0)} succeeded, {counts.get('error', 0)} failed,"
        f" {result.unfinished} unfinished of {result.planned_items} items"
    )
    for item in result.failed_items[:20]:
        print(f"  failed {item['process_id']} {item['path']}: {item['error']}")
    if len(result.failed_items) > 20:
        print(f"  ... and {len(result.failed_items) - 20} more (ecod-jobs status --batch {batch_id})")
    if result.returncode != 0:
        print(
            f"ecod-jobs: the workflow did not finish cleanly (exit {result.returncode});"
            f" log: {result.log_path}",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


def cmd_profiles_show(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .bundle import PROFILES, shipped_profile

    print(shipped_profile(args.name) if args.name else PROFILES)
    return 0


def cmd_profiles_copy(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .bundle import SNAKEFILE, copy_profiles

    for target in copy_profiles(Path(args.dest), force=args.force):
        print(f"{target} (snakefile: {SNAKEFILE})")
    return 0


def cmd_status(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .launch import batch_status

    report = batch_status(require_schema(Database(config), needed_by="status"), args.batch, config=config)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"batch {report['batch_id']} {report['name']!r}: {report['status']}, {report['total']} items")
    for status, count in report["by_status"].items():
        print(f"  {status:<11} {count:>9}")
    jobs = report["jobs"]
    print(
        f"jobs: {jobs['submitted']} submitted ({jobs['running']} running now), {jobs['completed']} completed,"
        f" {jobs['failed']} failed"
    )
    for run in report["runs"]:
        if run["status"] == "running":
            print(f"run {run['run_id']} ({run['job_type']}): running on {run['host']} (pid {run['pid']})")
    for head in report["heads"]:
        print(f"{head['describe']}")
    if report["stages"]:
        columns = ("pending", "running", "success", "error", "skipped")
        width = max(len("stage"), *map(len, report["stages"]))
        print(f"{'stage':<{width}}" + "".join(f" {c:>9}" for c in columns))
        for stage, counts in report["stages"].items():
            print(f"{stage:<{width}}" + "".join(f" {counts[c]:>9}" for c in columns))
    if report["failed_items"]:
        print("failed items:")
        for item in report["failed_items"][:20]:
            print(f"  {item['process_id']} {item['path']}: {item['error']}")
    return 0


def cmd_follow(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .progress import BatchProgress, ProgressView, final_line, follow, plain_lines

    if args.interval <= 0:
        raise ValidationError(f"--interval {args.interval:g}: must be more than 0 seconds")
    source = BatchProgress(require_schema(Database(config), needed_by="follow"), args.batch, config)
    if args.once:
        state = source.read(fresh=True)
        for line in plain_lines(state.snapshot, None, None, datetime.now()):
            print(line)
        return 0
    view = ProgressView(sys.stdout)
    try:
        state = follow(source, view, interval=args.interval)
    except KeyboardInterrupt:
        view.close()
        # Only this view stops: follow never signals or writes anything of the run.
        print(
            f"ecod-jobs: left the view; batch {args.batch}'s runs go on"
            f" (ecod-jobs follow --batch {args.batch} comes back)",
            file=sys.stderr,
        )
        return 130
    view.close()
    print(final_line(state))
    return 0


def cmd_logs(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .insight import item_logs

    db = require_schema(Database(config), needed_by="logs")
    found = item_logs.item_log(db, config, args.batch, args.item, stage=args.stage, attempt=args.attempt)
    tail = None if args.full else args.tail
    if args.json:
        print(json.dumps(item_logs.to_dict(found, tail, limit=1 << 62), indent=2, ensure_ascii=False))
    else:
        item_logs.write_text(found, sys.stdout, tail)
    return 0


def cmd_sync(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .config import job_type_spec
    from .db import require_batch
    from .sync import sync_batch

    if args.job_type is not None:
        job_type_spec(config, args.job_type)  # an unknown job type: exit 2, naming it
    db = Database(config)
    init_schema(db)
    require_batch(db, args.batch)
    report = sync_batch(db, config, args.batch, args.job_type)
    print(
        f"batch {args.batch}: synced {report['runs']} runs, {report['chunks']} chunks,"
        f" {report['settled']} item results; {report['done']}/{report['total']} items done"
        + (
            f"; closed {report['finished_runs']} runs that ended while the database was away"
            if report["finished_runs"]
            else ""
        )
    )
    return 0


def cmd_files_register(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .process_files import register_files

    if args.pipeline is not None:
        from .pipelines import pipeline_spec

        outputs = [(ft, t) for _stage, ft, t in pipeline_spec(config, args.pipeline).outputs()]
    else:
        outputs = [
            (ft, t)
            for spec in (config.get("job_types") or {}).values()
            for ft, t in (spec.get("outputs") or {}).items()
        ]
    if not outputs:
        raise ConfigurationError(
            f"no outputs are declared{f' by pipeline {args.pipeline!r}' if args.pipeline else ''}:"
            " add job_types.NAME.outputs"
        )
    db = Database(config)
    init_schema(db)
    found = register_files(db, args.batch, outputs)
    print(
        f"batch {args.batch}: {found['files']} outputs of {found['items']} items scanned:"
        f" {found['present']} present, {found['missing']} missing;"
        f" process_file: {found['inserted']} rows added, {found['updated']} updated,"
        f" {found['unchanged']} unchanged"
    )
    return 0


def cmd_cancel(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .launch import cancel_batch

    report = cancel_batch(require_schema(Database(config), needed_by="cancel"), config, args.batch)
    for run_id, how in report["stopped"].items():
        print(f"stopped run {run_id} {how}")
    for run in report["not_stopped"]:
        print(f"not stopped: run {run} is alive on another host; run ecod-jobs cancel there", file=sys.stderr)
    for what in report["heads"]:
        print(what)
    print(
        f"batch {args.batch}: stopped {len(report['signalled_runs'])} runs,"
        f" cancelled {len(report['scancelled'])} SLURM jobs; {report['done']}/{report['total']} items done"
    )
    return 0


def cmd_report(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from .insight.data import require_schema
    from .insight.report import report_target, write_report

    given = args.output or f"batch_{args.batch}_report.html"
    out = report_target(given)  # refused before the database is read or anything written
    db = require_schema(Database(config))
    write_report(db, args.batch, out, config)
    via = f" (through the symlink {given})" if Path(given).is_symlink() else ""
    print(f"batch {args.batch}: report written to {out}{via}")
    return 0


def cmd_dashboard(args: argparse.Namespace, config: dict[str, Any]) -> int:
    import signal
    import socket
    from urllib.parse import quote

    from .insight.auth import is_loopback, link_file, resolve_token, write_link
    from .insight.dashboard import serve
    from .launch import Stopped

    def _stopped(signum: int, _frame: Any) -> None:
        raise Stopped(signum)  # as `run` stops: exit 128 + the signal's number

    local = is_loopback(args.host)
    token = None if local else resolve_token(config)  # a bad token in the environment: exit 2 now
    if args.host in ("127.0.0.1", "::1"):
        shown = "localhost"
    elif args.host in ("0.0.0.0", "::", ""):
        shown = socket.gethostname()  # what another host can reach it by
    else:
        shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    written: list[Path] = []

    def banner() -> None:
        print(f"ecod-jobs dashboard (read-only) on {url}  (Ctrl-C stops it)", flush=True)
        if args.host in ("127.0.0.1", "localhost", "::1"):
            print(
                f"  from your laptop: ssh -N -L {args.port}:localhost:{args.port} {socket.gethostname()},"
                f" then open {url}",
                flush=True,
            )
        if token is None:
            return
        print(
            f"warning: the dashboard listens on {args.host or 'every address'}, not on the loopback alone:"
            f" anyone who can reach port {args.port} and has the token sees every batch"
            " (paths, errors, users, hosts)",
            file=sys.stderr,
            flush=True,
        )
        if not token.generated:
            print(
                f"  every request needs the token of {token.source}: open {url}?token=TOKEN once in a"
                " browser, or send the header 'Authorization: Bearer TOKEN'",
                flush=True,
            )
            return
        link = f"{url}?token={quote(token.value, safe='')}"
        if sys.stdout.isatty():
            # the user's own terminal: the one place the token made for this run is shown
            print(
                f"  open once (the token made for this run; it then leaves the address bar): {link}",
                flush=True,
            )
        else:
            # output that is not a terminal usually ends in a log file (nohup, a batch job's output)
            path = link_file(args.port)
            write_link(path, link)
            written.append(path)
            # SIGTERM and SIGHUP end the dashboard as Ctrl-C does, through the `finally` that
            # removes the file (uvicorn re-raises them once stopped: by default, a death)
            for signum in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, _stopped)
            print(
                f"  the address to open once, with the token made for this run, is in {path}"
                " (readable by you alone; removed when the dashboard stops)",
                flush=True,
            )

    try:
        serve(Database(config), args.host, args.port, announce=banner, config=config, token=token)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    # One declaration of every command and option, read top to bottom like `--help`;
    # splitting it would only scatter the CLI's shape over several functions.
    parser = argparse.ArgumentParser(
        prog="ecod-jobs",
        description="Run ECOD batches on local cores or SLURM, tracked in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"ecod-jobs {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $ECOD_CONFIG_PATH, else config/config.yml)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    config_p = sub.add_parser("config", help="show or validate the configuration")
    config_sub = config_p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    add(config_sub, "show", cmd_config_show, "print the effective configuration (password masked)")
    add(config_sub, "validate", cmd_config_validate, "check the configuration and exit")

    db_p = sub.add_parser("db", help="database schema and the embedded server")
    db_sub = db_p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    add(db_sub, "init", cmd_db_init, "create or upgrade the schema (idempotent, additive)")
    add(db_sub, "status", cmd_db_status, "show the schema version")
    add(db_sub, "stop", cmd_db_stop, "stop the embedded PostgreSQL server")

    batch_p = sub.add_parser("batch", help="create and list batches")
    batch_sub = batch_p.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    create = add(batch_sub, "create", cmd_batch_create, "register a batch from an items TSV")
    create.add_argument("--name", required=True, help="batch name (at most 100 characters)")
    create.add_argument(
        "--items",
        required=True,
        metavar="FILE",
        help="TSV with a header: path (required), protein_id, is_representative",
    )
    create.add_argument("--type", default="generic", help="batch type (default: generic)")
    create.add_argument("--base-path", metavar="DIR", help="directory item paths are relative to")
    create.add_argument("--ref-version", help="ECOD reference version (default: pipeline.ref_version)")
    create.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="accept a path listed more than once (each line becomes its own item)",
    )
    listing = add(batch_sub, "list", cmd_batch_list, "list batches")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    run = add(sub, "run", cmd_run, "run a batch's items needing work through the workflow")
    run.add_argument("--batch", type=int, required=True, help="batch id")
    run.add_argument("--profile", default="local", help="local, slurm or a profile directory (default local)")
    run.add_argument("--job-type", help="job type (default: pipeline.default_job_type or the first)")
    run.add_argument("--pipeline", help="run this pipeline's stages (pipelines.NAME) instead of one job type")
    run.add_argument("--stages", metavar="S1,S2", help="only these stages of the pipeline")
    run.add_argument(
        "--from", dest="from_stage", metavar="STAGE", help="this stage and everything downstream"
    )
    run.add_argument("--rerun", metavar="STAGE", help="force this stage and its downstream, even where done")
    run.add_argument("--retry-failed", action="store_true", help="also rerun items (item-stages) that failed")
    run.add_argument("--dry-run", action="store_true", help="show what would run; write nothing")
    run.add_argument(
        "--detach",
        action="store_true",
        help="start the run's head in the background (a SLURM job with --profile slurm, else a daemon)"
        " and return; follow it with ecod-jobs follow",
    )

    profiles_p = sub.add_parser("profiles", help="where the installed Snakemake profiles are; copy them out")
    profiles_p.set_defaults(needs_config=False)
    profiles_sub = profiles_p.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    show = add(
        profiles_sub,
        "show",
        cmd_profiles_show,
        "print the directory of the installed profiles, or of profile NAME (for snakemake --profile)",
    )
    show.add_argument("name", nargs="?", metavar="NAME", help="local or slurm")
    copy = add(
        profiles_sub,
        "copy",
        cmd_profiles_copy,
        "copy the profiles into DEST/local and DEST/slurm, naming the installed Snakefile",
    )
    copy.add_argument("dest", metavar="DEST", help="directory to copy into (created if missing)")
    copy.add_argument("--force", action="store_true", help="replace DEST/local and DEST/slurm if present")

    follow_help = (
        "attach a live view (items done, failed, running, rate, ETA, stages, open runs) to the batch's"
        " runs, wherever they were started; it exits 0 once no run is open, and Ctrl-C leaves it with"
        " exit 130 without stopping any run"
    )
    follow_p = sub.add_parser(
        "follow",
        aliases=["watch"],
        help="a live view of the batch's runs (Ctrl-C leaves it; the runs go on)",
        description=follow_help,
    )
    follow_p.set_defaults(handler=cmd_follow)
    follow_p.add_argument("--batch", type=int, required=True, help="batch id")
    follow_p.add_argument(
        "--once", action="store_true", help="print one snapshot as plain lines and exit 0 (for scripts)"
    )
    follow_p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two polls of the database (default 2)",
    )

    status = add(sub, "status", cmd_status, "counts by status, jobs, failed items of a batch")
    status.add_argument("--batch", type=int, required=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    logs = add(
        sub, "logs", cmd_logs, "an item's command, exit, node and output: its latest attempt, or another"
    )
    logs.add_argument("--batch", type=int, required=True)
    logs.add_argument("--item", type=int, required=True, metavar="PROCESS_ID", help="the item's process id")
    logs.add_argument("--stage", help="a pipeline stage (default: the latest failed, else the latest)")
    logs.add_argument(
        "--attempt",
        type=_positive,
        metavar="N",
        help="the item's Nth attempt, oldest first (default: latest)",
    )
    logs.add_argument("--full", action="store_true", help="all of stdout and stderr, not their tails")
    logs.add_argument(
        "--tail", type=_positive, default=40, metavar="LINES", help="lines of each stream shown (default 40)"
    )
    logs.add_argument("--json", action="store_true", help="machine-readable output")

    sync = add(sub, "sync", cmd_sync, "rebuild the batch's database state from its result files")
    sync.add_argument("--batch", type=int, required=True)
    sync.add_argument("--job-type", help="only this job type")

    cancel = add(sub, "cancel", cmd_cancel, "stop the batch's runs and cancel their jobs")
    cancel.add_argument("--batch", type=int, required=True)

    files_p = sub.add_parser("files", help="process_file: the outputs each item has")
    files_sub = files_p.add_subparsers(dest="files_command", required=True, metavar="ACTION")
    register = add(
        files_sub, "register", cmd_files_register, "scan the declared outputs on disk into process_file"
    )
    register.add_argument("--batch", type=int, required=True)
    register.add_argument("--pipeline", help="only this pipeline's outputs (default: every job type's)")

    report = add(sub, "report", cmd_report, "write a self-contained HTML report of a batch (opens offline)")
    report.add_argument("--batch", type=int, required=True)
    report.add_argument(
        "-o", "--output", metavar="FILE", help="the HTML file (default: batch_N_report.html here)"
    )

    dash = add(sub, "dashboard", cmd_dashboard, "serve a read-only web dashboard of all batches")
    dash.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this host only; any other address asks every request"
        " for a token)",
    )
    dash.add_argument("--port", type=_port, default=8050, help="TCP port (default 8050)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {value}: expected 1 or more")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: expected a number from 1 to 65535"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: expected 1 to 65535")
    return port


def _setup_logging(debug: bool, verbose: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.debug, args.verbose)
    try:
        config = load_config(args.config) if getattr(args, "needs_config", True) else {}
        return int(args.handler(args, config))
    except ECODError as exc:
        if args.debug:
            raise
        print(f"ecod-jobs: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, USAGE_ERRORS) else 1
    except KeyboardInterrupt as exc:  # Ctrl-C; SIGTERM and SIGHUP of `run` too (launch.Stopped)
        print(f"ecod-jobs: interrupted{f' by {exc}' if str(exc) else ''}", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", 2))


if __name__ == "__main__":
    sys.exit(main())
