"""`tiergate db upgrade|downgrade` and `tiergate report`: each takes the arguments after its subcommand's name."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.ledger.database import (
    DatabaseUnreachable,
    current_revision,
    downgrade,
    is_transient,
    make_engine,
    on_engine,
    upgrade,
)
from gateway.ledger.report import GROUP_BY_CHOICES, build_cost_report, format_report_table, parse_report_query
from gateway.ledger.settings import LedgerSettings, normalize_database_url
from router.errors import InvalidRequest


def db_main(
    argv: list[str] | None = None, *, settings: LedgerSettings | None = None, cache_dir: Path | None = None
) -> int:
    parser = argparse.ArgumentParser(prog="tiergate db", description="Manage the ledger database's schema.")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("upgrade", help="apply migrations (to the latest unless a revision is given)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="revert migrations down to a revision (`base` removes every table)")
    down.add_argument("revision")
    sub.add_parser("current", help="print the schema's revision")
    for each in (up, down, sub.choices["current"]):
        _add_source_arguments(each)
    args = parser.parse_args(argv)
    try:
        url = _database_url(args, settings, cache_dir)
    except ValueError as exc:
        print(f"tiergate db: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "upgrade":
            upgrade(url, args.revision)
        elif args.action == "downgrade":
            downgrade(url, args.revision)
        engine = make_engine(url)
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:
        if not is_transient(exc):
            raise
        print(f"tiergate db: the database cannot be reached: {exc}", file=sys.stderr)
        return 1
    print(f"{_safe(url)}: schema at revision {revision or 'base (no ledger tables)'}")
    return 0


def report_main(
    argv: list[str] | None = None, *, settings: LedgerSettings | None = None, cache_dir: Path | None = None
) -> int:
    parser = argparse.ArgumentParser(prog="tiergate report", description="Print what each success cost.")
    parser.add_argument("--group-by", choices=GROUP_BY_CHOICES, default="tier")
    parser.add_argument("--since", default=None, help="ISO 8601 date or time (UTC unless it says otherwise)")
    parser.add_argument("--until", default=None, help="ISO 8601 date or time, exclusive")
    parser.add_argument("--metric", default=None, help="feedback metric that defines success (default: success)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_source_arguments(parser)
    args = parser.parse_args(argv)
    try:
        ledger_settings, resolved_cache = _ledger_settings(args, settings, cache_dir)
        url = _database_url(args, ledger_settings, resolved_cache)
        query = parse_report_query(
            ledger_settings.metrics,
            group_by=args.group_by,
            since=args.since,
            until=args.until,
            metric=args.metric,
            default_metric=ledger_settings.report_metric(),
        )
    except (ValueError, InvalidRequest) as exc:
        print(f"tiergate report: {exc}", file=sys.stderr)
        return 2
    try:
        report = on_engine(url, lambda engine: build_cost_report(engine, query))
    except DatabaseUnreachable as exc:
        print(f"tiergate report: cannot read {_safe(url)}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_report_table(report))
    return 0


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: from the config)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config file (default: embedded defaults)")


def _ledger_settings(
    args: argparse.Namespace, settings: LedgerSettings | None, cache_dir: Path | None
) -> tuple[LedgerSettings, Path]:
    """The ledger section and cache directory: as given by the caller, else from the config file and environment."""
    if settings is not None and cache_dir is not None:
        return settings, cache_dir
    from gateway.settings import ConfigError, load_settings

    try:
        loaded = load_settings(args.config)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    ledger: LedgerSettings = getattr(loaded, "ledger", None) or LedgerSettings()
    return settings or ledger, cache_dir or loaded.cache_dir


def _database_url(args: argparse.Namespace, settings: LedgerSettings | None, cache_dir: Path | None) -> str:
    if args.database_url:
        return normalize_database_url(args.database_url)
    ledger_settings, resolved_cache = _ledger_settings(args, settings, cache_dir)
    return ledger_settings.resolved_database_url(resolved_cache)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
