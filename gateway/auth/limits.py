"""Per-key limits: requests and tokens per minute, and a frontier budget in USD per UTC day and month.

    authenticated request --> Limiter.admit(key, caller, model) --> 429, or the Caller the router obeys
                                 one counter-store round trip: count the request in its window, read the
                                 window's tokens and the key's spend today and this month
    finished request ------> Limiter.finisher --> add its tokens and its frontier attempts' cost (off the path)

Windows are fixed: a request counts in the window `floor(now / window_s)`; simple, one counter per key and window,
and the same in memory and in Redis. Its known weakness (up to twice the limit across a window's edge) is the
usual price of a fixed window; a client that waits for `Retry-After` never sees it.

As the tighter of a key's budgets runs down below `bias_start_fraction` remaining, the caller's escalation bias
rises linearly to `bias_max` at nothing left: the router adds it to every score threshold, so fewer requests
escalate. Once a budget is spent, policy `local` keeps the key's requests on the local tier (a request naming a
frontier model gets 429 `budget_exceeded`) and policy `refuse` answers every request with 429 `budget_exceeded`.

If the shared store (Redis) does not answer, rate limits fail open (a warning, and
`tiergate_limit_store_errors_total`): an outage of a counter must not take every client down with it, and a
minute without rate limits costs little. Budgets do not: they are judged from this replica's last known spend plus
what it has spent since, so a key that was out of budget stays out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine, case, func, select

from gateway.auth.counters import CounterStore, CountersUnavailable, Increment, MemoryCounters, RedisCounters
from gateway.auth.keys import ApiKey
from gateway.auth.limit_settings import LimitsSettings
from gateway.ledger.models import RequestRow
from gateway.ledger.pricing import MONEY_QUANTUM
from gateway.ledger.writer import Ledger
from router.catalog import ModelCatalog
from router.chat import Caller, ChatRequest
from router.errors import BudgetExceeded, ModelNotFound, RateLimited
from router.service import Finisher
from router.trace import RequestTrace

log = logging.getLogger("tiergate.limits")

PREFIX = "tiergate:"
_DAY_TTL_S = 2 * 86_400
_MONTH_TTL_S = 32 * 86_400
_WARN_EVERY_S = 10.0


def build_counters(settings: LimitsSettings) -> CounterStore:
    if settings.redis_url:
        return RedisCounters(settings.redis_url, settings.redis_timeout_s)
    return MemoryCounters()


def to_picodollars(amount: Decimal) -> int:
    return int(amount / MONEY_QUANTUM)


def from_picodollars(amount: int) -> Decimal:
    return Decimal(amount) * MONEY_QUANTUM


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC day and month a moment falls in: their bounds, and their names as parts of counter keys."""

    day_start: datetime
    month_start: datetime

    @classmethod
    def at(cls, now: float) -> Periods:
        day_start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(day_start, day_start.replace(day=1))

    @property
    def day(self) -> str:
        return self.day_start.strftime("%Y-%m-%d")

    @property
    def month(self) -> str:
        return self.month_start.strftime("%Y-%m")

    @property
    def day_ends(self) -> datetime:
        return self.day_start + timedelta(days=1)

    @property
    def month_ends(self) -> datetime:
        return (self.month_start + timedelta(days=32)).replace(day=1)


def rpm_key(key_id: str, window: int) -> str:
    return f"{PREFIX}rpm:{key_id}:{window}"


def tpm_key(key_id: str, window: int) -> str:
    return f"{PREFIX}tpm:{key_id}:{window}"


def day_spend_key(key_id: str, periods: Periods) -> str:
    return f"{PREFIX}spend:day:{key_id}:{periods.day}"


def month_spend_key(key_id: str, periods: Periods) -> str:
    return f"{PREFIX}spend:month:{key_id}:{periods.month}"


@dataclass(frozen=True, slots=True)
class Budget:
    """One of a key's budgets as it stands now."""

    name: str
    """`daily` or `monthly`, for messages."""
    limit: Decimal
    spent: Decimal
    resets_at: datetime

    @property
    def remaining_fraction(self) -> float:
        if self.limit <= 0:
            return 0.0
        return float((self.limit - self.spent) / self.limit)


class Limiter:
    def __init__(
        self,
        settings: LimitsSettings,
        counters: CounterStore,
        catalog: ModelCatalog,
        ledger: Ledger,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self._counters = counters
        self._catalog = catalog
        self._ledger = ledger
        self._spend_copy: dict[str, int] = {}
        """Spend counters as last read or added here: what budgets are judged by while the store is away."""
        self._copy_day = ""
        self._last_warning = float("-inf")
        self._background: set[asyncio.Task[None]] = set()
        self.store_errors = Counter(
            "tiergate_limit_store_errors",
            "Calls to the shared limit counters (Redis) that failed; rate limits were not applied to those requests.",
            registry=registry,
        )

    # --- start-up ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load each key's frontier spend of this UTC day and month from the ledger, so a restart keeps budgets.
        One query, once; a ledger that cannot answer leaves the counters as they are, with a warning."""
        periods = Periods.at(time.time())
        try:
            await self._ledger.flush()  # rows spooled by the last run reach the database first
            spend = await asyncio.to_thread(spend_from_ledger, self._ledger.engine, periods)
        except Exception as exc:
            log.warning("limits: could not read spend from the ledger (%s); budgets start from the counters", exc)
            return
        try:
            for key_id, (day, month) in spend.items():
                await self._counters.seed(day_spend_key(key_id, periods), to_picodollars(day), _DAY_TTL_S)
                await self._counters.seed(month_spend_key(key_id, periods), to_picodollars(month), _MONTH_TTL_S)
        except CountersUnavailable as exc:
            self._store_failed(exc)
        for key_id, (day, month) in spend.items():
            self._spend_copy[day_spend_key(key_id, periods)] = to_picodollars(day)
            self._spend_copy[month_spend_key(key_id, periods)] = to_picodollars(month)
        self._copy_day = periods.day
        if spend:
            log.info("limits: frontier spend of %d keys loaded from the ledger", len(spend))

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._counters.close()

    # --- admission -----------------------------------------------------------------------------------------------

    async def admit(self, key: ApiKey, caller: Caller, model: str) -> Caller:
        """Count this request and check the key's limits. Raises `RateLimited` or `BudgetExceeded` (429); returns
        the caller with its escalation bias raised, or with the frontier tier closed, as the budget stands."""
        now = time.time()
        window = int(now // self.settings.window_s)
        periods = Periods.at(now)
        increments = (
            [Increment(rpm_key(key.id, window), 1, 2 * self.settings.window_s)] if key.requests_per_minute else []
        )
        reads = [tpm_key(key.id, window)] if key.tokens_per_minute else []
        budgeted = key.budget_usd_per_day is not None or key.budget_usd_per_month is not None
        if budgeted:
            reads += [day_spend_key(key.id, periods), month_spend_key(key.id, periods)]
        if not increments and not reads:
            return caller
        try:
            totals, values = await self._counters.apply(increments, reads)
        except CountersUnavailable as exc:
            self._store_failed(exc)
            totals, values = [], []
        retry_s = max(1, math.ceil((window + 1) * self.settings.window_s - now))
        if totals and key.requests_per_minute is not None and totals[0] > key.requests_per_minute:
            raise RateLimited(
                f"Rate limit reached for API key {key.name!r}: {key.requests_per_minute} requests per "
                f"{self._window_name()}. Try again in {retry_s} s.",
                retry_after_s=retry_s,
            )
        if values and key.tokens_per_minute is not None and values[0] >= key.tokens_per_minute:
            raise RateLimited(
                f"Rate limit reached for API key {key.name!r}: {key.tokens_per_minute} tokens per "
                f"{self._window_name()} used ({values[0]}). Try again in {retry_s} s.",
                retry_after_s=retry_s,
            )
        if not budgeted:
            return caller
        day_spent, month_spent = self._spend(periods, key.id, values[-2:] if values else None)
        return self._judge_budget(key, caller, model, self._budgets(key, periods, day_spent, month_spent), now)

    def _budgets(self, key: ApiKey, periods: Periods, day_spent: int, month_spent: int) -> list[Budget]:
        budgets = []
        if key.budget_usd_per_day is not None:
            budgets.append(Budget("daily", key.budget_usd_per_day, from_picodollars(day_spent), periods.day_ends))
        if key.budget_usd_per_month is not None:
            budgets.append(
                Budget("monthly", key.budget_usd_per_month, from_picodollars(month_spent), periods.month_ends)
            )
        return budgets

    def _judge_budget(self, key: ApiKey, caller: Caller, model: str, budgets: list[Budget], now: float) -> Caller:
        remaining = min(b.remaining_fraction for b in budgets)
        if remaining > 0:
            start = self.settings.bias_start_fraction
            if remaining >= start:
                return caller
            bias = self.settings.bias_max * (start - remaining) / start
            return replace(caller, escalation_bias=caller.escalation_bias + bias)
        spent = [b for b in budgets if b.remaining_fraction <= 0]
        resets_at = max(b.resets_at for b in spent)
        retry_s = max(1, math.ceil(resets_at.timestamp() - now))
        what = " and ".join(f"{b.name} budget ${b.limit} (spent ${b.spent.normalize():f})" for b in spent)
        when = resets_at.strftime("%Y-%m-%d %H:%M UTC")
        if key.over_budget == "refuse":
            raise BudgetExceeded(
                f"API key {key.name!r} has spent its frontier {what}; its requests are refused until {when}.",
                retry_after_s=retry_s,
            )
        if self._names_frontier_model(model):
            raise BudgetExceeded(
                f"API key {key.name!r} has spent its frontier {what}: until {when} its requests stay on the local "
                f"tier, and model `{model}` is a frontier model. Use model `auto` or `local`.",
                retry_after_s=retry_s,
            )
        return replace(caller, frontier_allowed=False)

    def _names_frontier_model(self, model: str) -> bool:
        try:
            return self._catalog.resolve(model).tier == "frontier"
        except ModelNotFound:
            return False  # `auto`, or a name the router will answer 404 for

    def _spend(self, periods: Periods, key_id: str, read: list[int] | None) -> tuple[int, int]:
        day_key, month_key = day_spend_key(key_id, periods), month_spend_key(key_id, periods)
        self._forget_old_days(periods)
        if read is not None:
            self._spend_copy[day_key], self._spend_copy[month_key] = read
        return self._spend_copy.get(day_key, 0), self._spend_copy.get(month_key, 0)

    def _forget_old_days(self, periods: Periods) -> None:
        if periods.day != self._copy_day:
            self._spend_copy = {k: v for k, v in self._spend_copy.items() if k.endswith((periods.day, periods.month))}
            self._copy_day = periods.day

    def _window_name(self) -> str:
        return "minute" if self.settings.window_s == 60 else f"{self.settings.window_s} s window"

    def _store_failed(self, exc: Exception) -> None:
        self.store_errors.inc()
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("limits: the counter store failed (%s); rate limits are not applied meanwhile", exc)

    # --- after a request -----------------------------------------------------------------------------------------

    def finisher(self) -> Finisher:
        """The `ChatService` hook that adds a finished request's tokens and frontier cost to its key's counters.
        Pricing is a dictionary read per attempt; the counting itself runs as a task, off the request's latency."""

        def finish(trace: RequestTrace, request: ChatRequest) -> None:
            key_id = request.caller.key_id
            if key_id is None or not trace.attempts:
                return
            tokens = sum(a.usage.total_tokens for a in trace.attempts)
            pricing = self._ledger.pricing
            cost = sum(
                (
                    pricing.attempt_cost(
                        a.tier, a.model, a.usage.prompt_tokens, a.usage.completion_tokens, a.usage.cached_tokens, 0.0
                    )
                    for a in trace.attempts
                    if a.tier == "frontier"
                ),
                Decimal(0),
            )
            task = asyncio.get_running_loop().create_task(self._count(key_id, tokens, to_picodollars(cost)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        return finish

    async def _count(self, key_id: str, tokens: int, picodollars: int) -> None:
        now = time.time()
        window = int(now // self.settings.window_s)
        periods = Periods.at(now)
        increments = [Increment(tpm_key(key_id, window), tokens, 2 * self.settings.window_s)] if tokens else []
        if picodollars:
            increments += [
                Increment(day_spend_key(key_id, periods), picodollars, _DAY_TTL_S),
                Increment(month_spend_key(key_id, periods), picodollars, _MONTH_TTL_S),
            ]
        if not increments:
            return
        self._forget_old_days(periods)
        try:
            totals, _ = await self._counters.apply(increments, [])
        except CountersUnavailable as exc:
            self._store_failed(exc)
            if picodollars:  # the store missed it: this replica still remembers what it spent
                for inc in increments[-2:]:
                    self._spend_copy[inc.key] = self._spend_copy.get(inc.key, 0) + picodollars
            return
        if picodollars:
            self._spend_copy[increments[-2].key], self._spend_copy[increments[-1].key] = totals[-2:]


def spend_from_ledger(engine: Engine, periods: Periods) -> dict[str, tuple[Decimal, Decimal]]:
    """Frontier spend per key id this UTC day and month: the cost of requests the frontier tier answered. (A
    request's wasted attempt is always a local one, which costs no budget.)"""
    cost = RequestRow.cost_usd
    today = func.sum(case((RequestRow.created_at >= periods.day_start, cost), else_=0))
    query = (
        select(RequestRow.api_key_id, today, func.sum(cost))
        .where(
            RequestRow.api_key_id.is_not(None),
            RequestRow.tier == "frontier",
            RequestRow.created_at >= periods.month_start,
        )
        .group_by(RequestRow.api_key_id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {str(key_id): (_money(day), _money(month)) for key_id, day, month in rows}


def _money(value: object) -> Decimal:
    """A SUM as the driver returns it (Decimal from PostgreSQL, a float or int from SQLite), to the ledger's scale."""
    return Decimal(str(value or 0)).quantize(MONEY_QUANTUM)
