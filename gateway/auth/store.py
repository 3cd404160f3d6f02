"""The key set in memory: loaded from the ledger database at start-up, then reloaded in the background.

A request never touches the database: it hashes the presented secret and looks the digest up in a dict. Created
and revoked keys take effect at the next reload (`auth.refresh_interval_s`, 2 s by default). While the database is
unreachable the last good set stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.auth.keys import ApiKey, OverBudget, digest
from gateway.ledger.database import is_transient, make_engine
from gateway.ledger.models import ApiKeyRow

log = logging.getLogger("tiergate.auth")


def api_key_from_row(row: ApiKeyRow) -> ApiKey:
    over_budget: OverBudget = "refuse" if row.over_budget == "refuse" else "local"
    return ApiKey(
        id=row.id,
        name=row.name,
        admin=bool(row.admin),
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        budget_usd_per_day=row.budget_usd_per_day,
        budget_usd_per_month=row.budget_usd_per_month,
        over_budget=over_budget,
        policy_tags=frozenset(row.policy_tags or ()),
        store_prompts=bool(row.store_prompts),
    )


def load_active_keys(engine: Engine) -> dict[str, ApiKey]:
    """Every key not revoked, by the digest of its secret."""
    with Session(engine) as session:
        rows = session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))).all()
        return {row.key_hash: api_key_from_row(row) for row in rows}


class KeyStore:
    """The active keys by digest. `find` is all a request does; `start` loads them and keeps them fresh."""

    def __init__(self, database_url: str, *, refresh_interval_s: float, timeout_s: float) -> None:
        self.database_url = database_url
        self.refresh_interval_s = refresh_interval_s
        self._timeout_s = timeout_s
        self._engine: Engine | None = None
        self._by_digest: dict[str, ApiKey] = {}
        self._loaded = False
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def find(self, secret: str) -> ApiKey | None:
        # A plain dict lookup, not a constant-time comparison: what is compared is the SHA-256 of the presented
        # secret, which an attacker cannot steer byte by byte, so the time a lookup takes says nothing useful about
        # any stored digest, let alone a secret.
        return self._by_digest.get(digest(secret))

    @property
    def count(self) -> int:
        return len(self._by_digest)

    @property
    def retry_after_s(self) -> int:
        """When to try again while the keys are not loaded: the next reload, in whole seconds (at least 1)."""
        return max(1, math.ceil(self.refresh_interval_s))

    @property
    def loaded(self) -> bool:
        """Whether the keys were read from the database at least once."""
        return self._loaded

    async def start(self) -> None:
        """Load the keys (the ledger has applied the migrations by now), then reload them every interval."""
        self._engine = make_engine(self.database_url, timeout_s=self._timeout_s)
        await self.refresh()
        if self._loaded and not self._by_digest:
            log.warning("auth is on but the database holds no active API key: create one with `tiergate keys create`")
        self._task = asyncio.create_task(self._refresh_forever(), name="tiergate-auth-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    async def refresh(self) -> None:
        """Reload the key set; on failure keep the last good one and say so once per outage."""
        engine = self._engine
        if engine is None:
            return
        try:
            keys = await asyncio.to_thread(load_active_keys, engine)
        except Exception as exc:
            if not self._failing:
                # The error's class and first line name the database problem; no key material is ever in it.
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                log.log(
                    level,
                    "API keys cannot be reloaded (%s: %s); the last %d loaded keys stay in force",
                    type(exc).__name__,
                    first_line,
                    len(self._by_digest),
                )
            self._failing = True
            return
        if self._failing:
            log.info("API keys reloaded again: %d active", len(keys))
        self._failing = False
        self._by_digest = keys  # one reference swap: a request sees the old set or the new one, never a mix
        self._loaded = True

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            await self.refresh()
