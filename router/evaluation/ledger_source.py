"""Logged traffic for calibration, replay and training: auto-routed requests read back from the gateway's ledger.

A row carries what the router knew when it decided: its signals (compact JSON: fields that were zero, false or
empty left out, see `Signals.as_dict`) and, where prompt storage was on, the messages. `signals_from_dict` undoes
the compaction, so a stored request can be re-scored and re-decided under any rules file exactly as the router
would have, without its text; conditions on message text need the stored prompt (`request_from_prompt`).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError
from sqlalchemy import Engine, inspect, select

from gateway.ledger.models import OutcomeRow, RequestRow
from gateway.ledger.settings import LedgerSettings, MetricSettings, normalize_database_url
from gateway.wire import ChatCompletionRequest
from router.chat import ChatRequest
from router.errors import InvalidRequest
from router.signals import SIGNAL_TYPES, Signals

if TYPE_CHECKING:
    from gateway.settings import Settings

AUTO_MODEL: Final = "auto"
"""Only requests to `auto` were decided by the rules; pinned requests say nothing about a threshold."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SourceError(Exception):
    """The ledger or config cannot be used as asked; the message says why."""


def add_ledger_arguments(parser: argparse.ArgumentParser, *, since_default: str) -> None:
    parser.add_argument("--config", type=Path, default=None, help="gateway YAML config (ledger, models, prices)")
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL of the ledger (default: from the config)")
    parser.add_argument(
        "--since",
        default=since_default,
        help=f"window of logged traffic: a duration back from now (30m, 24h, 7d, 2w) or an ISO date/time "
        f"(default {since_default})",
    )


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `30m` back from `now`, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SourceError(f"--since must be a duration (30m, 24h, 7d) or an ISO date/time, not {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def load_gateway_settings(config: Path | None) -> Settings:
    from gateway.settings import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as exc:
        raise SourceError(str(exc)) from None


def database_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.database_url:
        return normalize_database_url(args.database_url)
    ledger: LedgerSettings = settings.ledger
    return ledger.resolved_database_url(settings.cache_dir)


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    id: str
    created_at: datetime
    session_id: str | None
    tier: str
    model: str | None
    rule: str | None
    score: float | None
    signals: dict[str, Any] | None
    prompt: list[dict[str, Any]] | None
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    cost_usd: Decimal
    wasted_cost_usd: Decimal
    escalated: bool
    """A local answer failed verification and the frontier tier answered: the rules had decided `local`."""
    outcome: float | None
    """The latest feedback on the chosen metric: the request's own, else its session's."""

    @property
    def decided_tier(self) -> str:
        """The tier the rules chose (an escalated request was decided local and answered by the frontier tier)."""
        return "local" if self.escalated else self.tier


def read_auto_routed(
    engine: Engine, since: datetime | None, metric: str | None = None, *, auto_only: bool = True
) -> list[LoggedRequest]:
    """Requests to `auto` (every request, with `auto_only` false) that were routed (have a tier), oldest first,
    with their outcome on `metric`."""
    query = select(RequestRow).where(RequestRow.tier.is_not(None))
    if auto_only:
        query = query.where(RequestRow.requested_model == AUTO_MODEL)
    if since is not None:
        query = query.where(RequestRow.created_at >= since)
    with engine.connect() as connection:
        if not inspect(connection).has_table(RequestRow.__tablename__):
            url = engine.url.render_as_string(hide_password=True)
            raise SourceError(f"{url} has no ledger tables: point --config or --database-url at the gateway's ledger")
        rows = connection.execute(query.order_by(RequestRow.created_at, RequestRow.id)).all()
        by_request, by_session = _latest_outcomes(connection, metric) if metric else ({}, {})
    found = []
    for row in rows:
        outcome = by_request.get(row.id)
        if outcome is None and row.session_id is not None:
            outcome = by_session.get(row.session_id)
        found.append(
            LoggedRequest(
                id=row.id,
                created_at=row.created_at,
                session_id=row.session_id,
                tier=row.tier,
                model=row.model,
                rule=row.rule,
                score=row.score,
                signals=row.signals,
                prompt=row.prompt,
                tokens_in=row.tokens_in,
                tokens_out=row.tokens_out,
                tokens_cached=row.tokens_cached,
                cost_usd=Decimal(row.cost_usd),
                wasted_cost_usd=Decimal(row.wasted_cost_usd),
                escalated=bool(row.escalated),
                outcome=outcome,
            )
        )
    return found


def _latest_outcomes(connection: Any, metric: str) -> tuple[dict[str, float], dict[str, float]]:
    # Ascending ids, so a later feedback overwrites an earlier one: the latest wins, as in the cost report.
    query = select(OutcomeRow.request_id, OutcomeRow.session_id, OutcomeRow.value).where(OutcomeRow.metric == metric)
    by_request: dict[str, float] = {}
    by_session: dict[str, float] = {}
    for request_id, session_id, value in connection.execute(query.order_by(OutcomeRow.id)):
        if request_id is not None:
            by_request[request_id] = value
        else:
            by_session[session_id] = value
    return by_request, by_session


def succeeded(outcome: float | None, spec: MetricSettings) -> bool | None:
    return None if outcome is None else spec.succeeded(outcome)


def signals_from_dict(stored: dict[str, Any]) -> Signals:
    """The `Signals` a ledger row's compact JSON came from: left-out fields were 0, false or empty."""
    values: dict[str, Any] = {}
    for name, kind in SIGNAL_TYPES.items():
        value = stored.get(name)
        if kind is tuple:
            values[name] = tuple(value or ())
        elif value is None:
            values[name] = kind()
        else:
            values[name] = kind(value)
    return Signals(**values)


def request_from_prompt(request_id: str, messages: list[dict[str, Any]]) -> ChatRequest:
    """A chat request of the stored messages (tools and response format are not stored, so they are absent)."""
    body = {"model": AUTO_MODEL, "messages": messages}
    try:
        return ChatCompletionRequest.model_validate(body).to_internal(request_id, body)
    except (ValidationError, InvalidRequest) as exc:
        raise SourceError(f"request {request_id}: stored prompt is not a valid chat request: {exc}") from None
