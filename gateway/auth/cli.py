"""`tiergate keys create|list|revoke`: client API keys in the ledger database.

The secret is printed once, at creation; the database keeps only its SHA-256. A running gateway picks up a new or
revoked key within `auth.refresh_interval_s`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from gateway.auth.keys import digest, new_secret
from gateway.ledger.database import DatabaseUnreachable, on_engine, upgrade
from gateway.ledger.models import ApiKeyRow
from gateway.ledger.settings import normalize_database_url


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        url = _database_url(args)
    except ValueError as exc:
        print(f"tiergate keys: {exc}", file=sys.stderr)
        return 2
    try:
        return on_engine(url, lambda engine: _run(engine, url, args))
    except DatabaseUnreachable as exc:
        print(f"tiergate keys: the database cannot be reached: {exc}", file=sys.stderr)
        return 1


def _run(engine: Engine, url: str, args: argparse.Namespace) -> int:
    upgrade(url, engine=engine)
    if args.action == "create":
        return _create(engine, args)
    if args.action == "list":
        return _list(engine, as_json=args.json)
    return _revoke(engine, args.id)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate keys", description="Create, list and revoke client API keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("--name", required=True, help="who or what the key is for (shown in lists)")
    create.add_argument("--admin", action="store_true", help="admin scope: /admin/*, the dashboard, reports")
    create.add_argument("--rpm", type=_positive_int, default=None, help="requests per minute allowed")
    create.add_argument("--tpm", type=_positive_int, default=None, help="tokens per minute allowed")
    create.add_argument("--budget-day", type=_usd, default=None, help="frontier spend allowed per UTC day, USD")
    create.add_argument("--budget-month", type=_usd, default=None, help="frontier spend allowed per month, USD")
    create.add_argument(
        "--over-budget",
        choices=("local", "refuse"),
        default="local",
        help="once a budget is spent: stay on the local tier (default) or refuse with 429",
    )
    create.add_argument(
        "--policy-tag",
        action="append",
        default=[],
        metavar="TAG",
        help="a tag the escalation rules can match (repeatable), e.g. local-only",
    )
    create.add_argument("--store-prompts", action="store_true", help="store this key's prompts in the ledger")
    listing = sub.add_parser("list", help="every key with its scope and limits (never a secret)")
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    revoke = sub.add_parser("revoke", help="stop a key from working (it stays listed, as revoked)")
    revoke.add_argument("id", help="the key's id, as `keys create` and `keys list` show it")
    for each in (create, listing, revoke):
        each.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: the config's ledger)")
        each.add_argument("--config", type=Path, default=None, help="YAML config file (default: embedded defaults)")
    return parser


def _database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        return normalize_database_url(args.database_url)
    from gateway.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return settings.ledger.resolved_database_url(settings.cache_dir)


def _create(engine: Engine, args: argparse.Namespace) -> int:
    secret = new_secret()
    row = ApiKeyRow(
        id=f"key_{secrets.token_hex(8)}",
        name=args.name,
        key_hash=digest(secret),
        admin=args.admin,
        created_at=datetime.now(UTC),
        revoked_at=None,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        budget_usd_per_day=args.budget_day,
        budget_usd_per_month=args.budget_month,
        over_budget=args.over_budget,
        policy_tags=sorted(set(args.policy_tag)),
        store_prompts=args.store_prompts,
    )
    with engine.begin() as connection:
        connection.execute(insert(ApiKeyRow).values(**_columns(row)))
    scope = "admin" if args.admin else "client"
    print(f"created {scope} key {row.id} ({args.name})")
    print("secret (shown only now; the database keeps only its SHA-256):", file=sys.stderr)
    print(secret)
    return 0


def _columns(row: ApiKeyRow) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in ApiKeyRow.__table__.columns}


def _list(engine: Engine, *, as_json: bool) -> int:
    with Session(engine) as session:
        described = [_describe(row) for row in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]
    if as_json:
        print(json.dumps(described, indent=2))
    elif not described:
        print("no API keys yet: create one with `tiergate keys create --name NAME`")
    else:
        print(_table(described))
    return 0


def _describe(row: ApiKeyRow) -> dict[str, Any]:
    """What a list shows of a key: never the secret (unknown) nor its digest (a lookup handle)."""
    return {
        "id": row.id,
        "name": row.name,
        "scope": "admin" if row.admin else "client",
        "requests_per_minute": row.requests_per_minute,
        "tokens_per_minute": row.tokens_per_minute,
        "budget_usd_per_day": _money(row.budget_usd_per_day),
        "budget_usd_per_month": _money(row.budget_usd_per_month),
        "over_budget": row.over_budget,
        "policy_tags": list(row.policy_tags or ()),
        "store_prompts": bool(row.store_prompts),
        "created": row.created_at.isoformat(timespec="seconds"),
        "revoked": row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else None,
    }


def _table(keys: Sequence[dict[str, Any]]) -> str:
    headers = (
        "id",
        "name",
        "scope",
        "rpm",
        "tpm",
        "usd/day",
        "usd/month",
        "over",
        "tags",
        "prompts",
        "created",
        "revoked",
    )
    lines = [
        (
            k["id"],
            k["name"],
            k["scope"],
            _dash(k["requests_per_minute"]),
            _dash(k["tokens_per_minute"]),
            _dash(k["budget_usd_per_day"]),
            _dash(k["budget_usd_per_month"]),
            k["over_budget"],
            ",".join(k["policy_tags"]) or "-",
            "stored" if k["store_prompts"] else "-",
            k["created"],
            k["revoked"] or "-",
        )
        for k in keys
    ]
    widths = [max(len(h), *(len(str(line[i])) for line in lines)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in (headers, *lines)
    )


def _revoke(engine: Engine, key_id: str) -> int:
    with engine.begin() as connection:
        row = connection.execute(select(ApiKeyRow.revoked_at).where(ApiKeyRow.id == key_id)).first()
        if row is None:
            print(f"tiergate keys: no key {key_id!r} (see `tiergate keys list`)", file=sys.stderr)
            return 1
        if row.revoked_at is not None:
            print(f"key {key_id} was already revoked at {row.revoked_at.isoformat(timespec='seconds')}")
            return 0
        connection.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(revoked_at=datetime.now(UTC)))
    print(f"revoked key {key_id}; running gateways refuse it within their auth.refresh_interval_s")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative amount in USD: {text!r}")
    return value


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _dash(value: object) -> str:
    return "-" if value is None else str(value)
