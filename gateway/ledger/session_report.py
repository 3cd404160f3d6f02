"""Agent sessions as the ledger saw them: the recent ones, and one session's steps in order with its outcome.

The dashboard's session view reads these (never the chat request path). Both queries are bounded: a page of recent
sessions, and at most `MAX_STEPS` steps of one session. Steps are in the order they were received; the recorded step
number is shown as a label (the session store restarts its count when it forgets a session), else the position.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from gateway.ledger.database import call_db
from gateway.ledger.models import OutcomeRow, RequestRow, SessionRow
from gateway.ledger.report import money
from gateway.ledger.settings import MetricSettings
from gateway.ledger.writer import Ledger
from router.errors import InvalidRequest

MAX_SESSIONS = 200
DEFAULT_SESSIONS = 50
MAX_STEPS = 500


async def recent_sessions(ledger: Ledger, limit: str | None = None) -> dict[str, Any]:
    """`{"metric", "sessions": [{id, task_id, first_seen, last_seen, steps, spend_usd, outcome}]}`, newest first."""
    count = _limit(limit)
    metric = ledger.settings.report_metric()
    rows = await call_db(_recent, ledger.engine, count, metric, ledger.settings.metrics[metric])
    return {"metric": metric, "sessions": rows}


async def session_detail(ledger: Ledger, session_id: str) -> dict[str, Any] | None:
    """One session with its steps in order; None when the ledger has no such session."""
    metric = ledger.settings.report_metric()
    found = await call_db(_detail, ledger.engine, session_id, metric, ledger.settings.metrics[metric])
    return None if found is None else {"metric": metric, **found}


def _limit(value: str | None) -> int:
    if value is None or not value.strip():
        return DEFAULT_SESSIONS
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_SESSIONS:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_SESSIONS}, not {value!r}", param="limit")
    return int(value)


def _recent(engine: Engine, limit: int, metric: str, spec: MetricSettings) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        sessions = connection.execute(
            select(SessionRow).order_by(SessionRow.last_seen.desc(), SessionRow.id).limit(limit)
        ).all()
        ids = [row.id for row in sessions]
        if not ids:
            return []
        spend = dict(
            connection.execute(
                select(RequestRow.session_id, func.sum(RequestRow.cost_usd + RequestRow.wasted_cost_usd))
                .where(RequestRow.session_id.in_(ids))
                .group_by(RequestRow.session_id)
            ).all()
        )
        outcomes = _outcomes(connection, ids, metric, spec)
    return [
        {
            "id": row.id,
            "task_id": row.task_id,
            "first_seen": row.first_seen.isoformat(),
            "last_seen": row.last_seen.isoformat(),
            "steps": row.step_count,
            "spend_usd": money(Decimal(spend.get(row.id) or 0)),
            "outcome": outcomes.get(row.id),
        }
        for row in sessions
    ]


def _detail(engine: Engine, session_id: str, metric: str, spec: MetricSettings) -> dict[str, Any] | None:
    with engine.connect() as connection:
        session = connection.execute(select(SessionRow).where(SessionRow.id == session_id)).one_or_none()
        steps = connection.execute(
            select(
                RequestRow.id,
                RequestRow.step,
                RequestRow.created_at,
                RequestRow.requested_model,
                RequestRow.tier,
                RequestRow.model,
                RequestRow.rule,
                RequestRow.escalated,
                RequestRow.cost_usd,
                RequestRow.wasted_cost_usd,
                RequestRow.latency_ms,
                RequestRow.status,
            )
            .where(RequestRow.session_id == session_id)
            # Receive order (see the module docstring); the step number breaks ties within a clock tick.
            .order_by(RequestRow.created_at, RequestRow.step, RequestRow.id)
            .limit(MAX_STEPS)
        ).all()
        if session is None and not steps:
            return None
        outcome = _outcomes(connection, [session_id], metric, spec).get(session_id)
    spend = sum((row.cost_usd + row.wasted_cost_usd for row in steps), Decimal(0))
    return {
        "id": session_id,
        "task_id": session.task_id if session else None,
        "first_seen": session.first_seen.isoformat() if session else None,
        "last_seen": session.last_seen.isoformat() if session else None,
        "steps": [_step(position, row) for position, row in enumerate(steps, start=1)],
        "truncated": len(steps) == MAX_STEPS,
        "spend_usd": money(spend),
        "outcome": outcome,
    }


def _step(position: int, row: Any) -> dict[str, Any]:
    return {
        "step": row.step if row.step is not None else position,
        "request_id": row.id,
        "created_at": row.created_at.isoformat(),
        "requested_model": row.requested_model,
        "tier": row.tier,
        "model": row.model,
        "rule": row.rule,
        "escalated": row.escalated,
        "cost_usd": money(row.cost_usd + row.wasted_cost_usd),
        "wasted_usd": money(row.wasted_cost_usd),
        "latency_ms": round(row.latency_ms, 1),
        "status": row.status,
    }


def _outcomes(connection: Any, ids: Sequence[str], metric: str, spec: MetricSettings) -> dict[str, dict[str, Any]]:
    """The latest session-level outcome on `metric` for each of `ids` (as the cost report counts them)."""
    rows = connection.execute(
        select(OutcomeRow.session_id, OutcomeRow.value)
        .where(OutcomeRow.session_id.in_(ids), OutcomeRow.metric == metric)
        .order_by(OutcomeRow.created_at, OutcomeRow.id)
    ).all()
    latest = {session_id: value for session_id, value in rows}  # later rows overwrite earlier ones
    return {key: {"value": value, "success": spec.succeeded(value)} for key, value in latest.items()}
