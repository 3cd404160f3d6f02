"""A client API key as the gateway holds it in memory (loaded from the ledger's `api_keys` table)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

OverBudget = Literal["local", "refuse"]


def scoped_session_id(key_id: str, session_id: str) -> str:
    """A keyed request's session as stored everywhere (session store, ledger, feedback, dashboard): under its key's
    id, so that two keys naming the same session never share its state, rows or outcome."""
    return f"{key_id}/{session_id}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    """Public id: shown in lists and stored on ledger rows. The secret itself is never kept, only its digest."""
    name: str
    admin: bool = False
    """Admin scope: `/admin/*`, the dashboard, reports and feedback management."""
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget_usd_per_day: Decimal | None = None
    """Frontier spend allowed per UTC day; None is unlimited."""
    budget_usd_per_month: Decimal | None = None
    over_budget: OverBudget = "local"
    """Once a budget is spent: `local` keeps requests on the local tier, `refuse` answers 429."""
    policy_tags: frozenset[str] = frozenset()
    store_prompts: bool = False


SECRET_PREFIX = "tg-"


def new_secret() -> str:
    """A new client secret: 32 random bytes from the OS, URL-safe base64, prefixed so it is recognisable in a leak."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What the database stores and the gateway looks keys up by: the hex SHA-256 of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()
