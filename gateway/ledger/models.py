"""The ledger's tables. The migrations in `migrations/versions` create them; these classes are how code reads them.

- `requests`: one row per request (not per HTTP retry), keyed by the request id the client saw.
- `sessions`: one row per agent session: when it was first and last seen, how many steps it took.
- `outcomes`: feedback that arrives later, for one request or a whole session, on a metric declared in the config.
- `api_keys`: client keys (only a SHA-256 digest of each), their scope, limits and budgets.

Static metadata (prices, rule definitions, metric directions and thresholds) stays in the config, not in rows:
a row holds what happened (names, tokens, seconds, the money it cost) and nothing that could be looked up.
There are no foreign keys on purpose: rows arrive in batches, and feedback may arrive before its request's row.
Times are stored as naive UTC (SQLite has no time zones) and read back as aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, DateTime, Float, Index, Integer, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

Money = Numeric(24, 12, asdecimal=True)
"""USD with 12 decimal places: PostgreSQL keeps it exact; SQLite keeps 15 significant digits, which is exact for
any single request's cost at this scale."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


CompactJSON = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    session_id: Mapped[str | None] = mapped_column(String)
    api_key_id: Mapped[str | None] = mapped_column(String)
    requested_model: Mapped[str] = mapped_column(String)
    tier: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String)
    rule: Mapped[str | None] = mapped_column(String)
    score: Mapped[float | None] = mapped_column(Float)
    signals: Mapped[dict[str, Any] | None] = mapped_column(CompactJSON)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    tokens_cached: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money)
    """The answering attempt's cost."""
    wasted_cost_usd: Mapped[Decimal] = mapped_column(Money)
    """The cost of a local attempt that failed verification and was escalated (0 when none was)."""
    counterfactual_usd: Mapped[Decimal] = mapped_column(Money)
    """What the answer's tokens would have cost on the default frontier model."""
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String)
    compression_tokens_before: Mapped[int | None] = mapped_column(Integer)
    compression_tokens_after: Mapped[int | None] = mapped_column(Integer)
    prompt: Mapped[list[dict[str, Any]] | None] = mapped_column(CompactJSON)
    """The messages as received; only where prompt storage is on (for the key, or `ledger.store_prompts`)."""
    response: Mapped[dict[str, Any] | None] = mapped_column(CompactJSON)
    """The assistant message returned (role, content, tool_calls); stored exactly when `prompt` is."""
    step: Mapped[int | None] = mapped_column(Integer)
    """The request's position in its session (1 for the first step), as the session store counted it."""

    __table_args__ = (
        Index("ix_requests_created_at", "created_at"),
        Index("ix_requests_session_id", "session_id"),
    )


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    task_id: Mapped[str | None] = mapped_column(String)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    step_count: Mapped[int] = mapped_column(Integer, default=0)


class OutcomeRow(Base):
    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str | None] = mapped_column(String)
    session_id: Mapped[str | None] = mapped_column(String)
    metric: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(Float)
    """Booleans are stored as 1.0 and 0.0."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("(request_id IS NULL) <> (session_id IS NULL)", name="ck_outcomes_one_target"),
        Index("ix_outcomes_request_id", "request_id"),
        Index("ix_outcomes_session_id", "session_id"),
    )


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    """The public id (shown in lists, stored on requests); the secret is never stored."""
    name: Mapped[str] = mapped_column(String)
    key_hash: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the secret key. Keys are 256-bit random, so a plain hash is enough (no password stretching)."""
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    budget_usd_per_day: Mapped[Decimal | None] = mapped_column(Money)
    budget_usd_per_month: Mapped[Decimal | None] = mapped_column(Money)
    over_budget: Mapped[str] = mapped_column(String(16), default="local")
    """What happens once a frontier budget is spent: `local` (stay on the local tier) or `refuse` (429)."""
    policy_tags: Mapped[list[str]] = mapped_column(CompactJSON, default=list)
    store_prompts: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ux_api_keys_key_hash", "key_hash", unique=True),)
