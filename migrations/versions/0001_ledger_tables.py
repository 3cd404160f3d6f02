"""The ledger's tables: requests, sessions, outcomes.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_money = sa.Numeric(24, 12)
_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("api_key_id", sa.String(), nullable=True),
        sa.Column("requested_model", sa.String(), nullable=False),
        sa.Column("tier", sa.String(16), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("rule", sa.String(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("signals", _json, nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("tokens_cached", sa.Integer(), nullable=False),
        sa.Column("cost_usd", _money, nullable=False),
        sa.Column("wasted_cost_usd", _money, nullable=False),
        sa.Column("counterfactual_usd", _money, nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_class", sa.String(), nullable=True),
        sa.Column("compression_tokens_before", sa.Integer(), nullable=True),
        sa.Column("compression_tokens_after", sa.Integer(), nullable=True),
        sa.Column("prompt", _json, nullable=True),
    )
    op.create_index("ix_requests_created_at", "requests", ["created_at"])
    op.create_index("ix_requests_session_id", "requests", ["session_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("task_id", sa.String(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=False), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=False), nullable=False),
        sa.Column("step_count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("metric", sa.String(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.CheckConstraint("(request_id IS NULL) <> (session_id IS NULL)", name="ck_outcomes_one_target"),
    )
    op.create_index("ix_outcomes_request_id", "outcomes", ["request_id"])
    op.create_index("ix_outcomes_session_id", "outcomes", ["session_id"])


def downgrade() -> None:
    op.drop_table("outcomes")
    op.drop_table("sessions")
    op.drop_table("requests")
