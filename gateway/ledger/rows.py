"""Rows: built from a `RequestRecord` (costs computed here, in the writer thread), encoded for the spool, inserted.

Inserts are idempotent (a request id already present is skipped), so a batch replayed from the spool after a
write whose commit was never confirmed cannot count twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, DateTime, Numeric, String, bindparam, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from gateway.ledger.models import RequestRow, SessionRow
from gateway.ledger.pricing import Pricing
from gateway.ledger.record import RequestRecord

Row = dict[str, Any]
"""A `requests` row as column name to value, plus `task_id` for the session it belongs to."""


def build_row(record: RequestRecord, pricing: Pricing) -> Row:
    """The row of one record. Prompt and response are stored as the record carries them: whether to keep them was
    decided when the record was built (`gateway.recording`), by the config and the client's key."""
    cost = pricing.attempt_cost(
        record.tier, record.model, record.tokens_in, record.tokens_out, record.tokens_cached, record.compute_ms
    )
    wasted = pricing.attempt_cost(
        record.wasted_tier,
        record.wasted_model,
        record.wasted_tokens_in,
        record.wasted_tokens_out,
        0,
        record.wasted_compute_ms,
    )
    return {
        "id": record.request_id,
        "created_at": record.created_at,
        "session_id": record.session_id,
        "task_id": record.task_id,
        "api_key_id": record.api_key_id,
        "requested_model": record.requested_model,
        "tier": record.tier,
        "model": record.model,
        "rule": record.rule,
        "score": record.score,
        "signals": record.signals,
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "tokens_cached": record.tokens_cached,
        "cost_usd": cost,
        "wasted_cost_usd": wasted,
        "counterfactual_usd": pricing.counterfactual_cost(record.tokens_in, record.tokens_out, record.tokens_cached),
        "escalated": record.escalated,
        "latency_ms": record.latency_ms,
        "ttft_ms": record.ttft_ms,
        "stream": record.stream,
        "status": record.status,
        "error_class": record.error_class,
        "compression_tokens_before": record.compression_tokens_before,
        "compression_tokens_after": record.compression_tokens_after,
        "prompt": record.prompt,
        "response": record.response,
        "step": record.step,
    }


def _decoders() -> dict[str, Callable[[Any], Any]]:
    decoders: dict[str, Callable[[Any], Any]] = {}
    for column in RequestRow.__table__.columns:
        kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
        if isinstance(kind, Numeric):
            decoders[column.name] = Decimal
        elif isinstance(kind, DateTime):
            decoders[column.name] = datetime.fromisoformat
    return decoders


_DECODERS = _decoders()


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in the spool")


def encode_row(row: Row) -> bytes:
    return orjson.dumps(row, default=_encode_default)


def decode_row(line: bytes) -> Row:
    row: Row = orjson.loads(line)
    for name, decode in _DECODERS.items():
        if row.get(name) is not None:
            row[name] = decode(row[name])
    return row


def insert_rows(connection: Connection, rows: Sequence[Row]) -> int:
    """Insert the rows not already present and bring their sessions up to date, in the caller's transaction;
    returns how many rows were new.

    A plain executemany, without RETURNING: with it SQLAlchemy sends one long multi-row statement, which psycopg
    re-parses for every batch (it caches only short statements) at about a millisecond per row. A session's step
    count is therefore counted from its rows in `requests` rather than from what this batch inserted, which also
    keeps it exact when a batch is replayed."""
    if not rows:
        return 0
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    params = [{k: v for k, v in row.items() if k != "task_id"} for row in rows]
    stmt = (
        dialect_insert(RequestRow)
        .on_conflict_do_nothing(index_elements=["id"])
        .execution_options(preserve_rowcount=True)
    )
    inserted = connection.execute(stmt, params).rowcount

    sessions: dict[str, Row] = {}
    for row in rows:
        session_id = row["session_id"]
        if session_id is None:
            continue
        seen = sessions.get(session_id)
        if seen is None:
            sessions[session_id] = {
                "id": session_id,
                "task_id": row["task_id"],
                "first_seen": row["created_at"],
                "last_seen": row["created_at"],
            }
            continue
        seen["first_seen"] = min(seen["first_seen"], row["created_at"])
        seen["last_seen"] = max(seen["last_seen"], row["created_at"])
        seen["task_id"] = seen["task_id"] or row["task_id"]
    if sessions:
        steps = (
            select(func.count())
            .select_from(RequestRow)
            .where(RequestRow.session_id == bindparam("session", type_=String))
            .scalar_subquery()
        )
        upsert = dialect_insert(SessionRow).values(step_count=steps)
        new, old = upsert.excluded, SessionRow
        stmt_sessions = upsert.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "first_seen": case((new.first_seen < old.first_seen, new.first_seen), else_=old.first_seen),
                "last_seen": case((new.last_seen > old.last_seen, new.last_seen), else_=old.last_seen),
                "step_count": new.step_count,
                "task_id": func.coalesce(old.task_id, new.task_id),
            },
        )
        # sorted, so that replicas upserting the same sessions take their row locks in one order
        connection.execute(stmt_sessions, [{**sessions[key], "session": key} for key in sorted(sessions)])
    return inserted
