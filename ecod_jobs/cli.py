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
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .config import is_embedded, load_config, redact
from .db import Database, create_batch, current_version, init_schema, list_batches
from .exceptions import USAGE_ERRORS, ECODError
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
    items = read_items(args.items)  # validate the whole file before touching the database
    db = Database(config)
    init_schema(db)
    ref_version = args.ref_version or config["pipeline"].get("ref_version", "unspecified")
    base_path = str(Path(args.base_path).resolve()) if args.base_path else ""
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
    db = Database(config)
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


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
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
    listing = add(batch_sub, "list", cmd_batch_list, "list batches")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _setup_logging(debug: bool, verbose: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.debug, args.verbose)
    try:
        config = load_config(args.config)
        return int(args.handler(args, config))
    except ECODError as exc:
        if args.debug:
            raise
        print(f"ecod-jobs: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, USAGE_ERRORS) else 1
    except KeyboardInterrupt:
        print("ecod-jobs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
