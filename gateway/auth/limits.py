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
import contextlib
import logging
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine, case, func, select

from gateway.auth.counters import CounterStore, CountersUnavailable, Increment, MemoryCounters, RedisCounters
from gateway.auth.keys import ApiKey
from gateway.auth.limit_settings import LimitsSettings
from gateway.ledger.models import RequestRow
from gateway.ledger.pricing import MONEY_QUANTUM, quantize
from gateway.ledger.writer import Ledger
from router.catalog import ModelCatalog
from router.chat import Caller, ChatRequest
from router.errors import BudgetExceeded, ModelNotFound, RateLimited
from router.service import Finisher
from router.signals import MESSAGE_OVERHEAD_TOKENS, estimate_tokens
from router.trace import RequestTrace

log = logging.getLogger("tiergate.limits")

PREFIX = "tiergate:"
_DAY_TTL_S = 2 * 86_400
_MONTH_TTL_S = 32 * 86_400
_RESERVED_TTL_S = 3600
"""A reservation that is never settled (a replica that died mid-request) is forgotten an hour after the key's last
reservation."""
_FIRST_LOAD_WAIT_S = 5.0
_WARN_EVERY_S = 10.0


def build_counters(settings: LimitsSettings) -> CounterStore:
    if settings.redis_url:
        return RedisCounters(settings.redis_url, settings.redis_timeout_s, settings.redis_retry_after_s)
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


def reserved_key(key_id: str) -> str:
    """What the key's requests in flight have reserved of its budgets (one counter for the day and the month)."""
    return f"{PREFIX}reserved:{key_id}"


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


class RequestsLimited(RateLimited):
    """429: the key's requests per window are used up."""

    refusal: ClassVar[str] = "rate_limit_requests"


class TokensLimited(RateLimited):
    """429: the key's tokens per window are used up."""

    refusal: ClassVar[str] = "rate_limit_tokens"


@dataclass(frozen=True, slots=True)
class Reservation:
    """An estimate of a request's frontier cost, added to its key's reserved counter at admission (rides on the
    request's `Caller` to the finisher, which replaces it by the real cost)."""

    key_id: str
    picodollars: int
    in_store: bool
    """False when the counter store did not answer at admission: only this replica knows of it."""


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
        self._seen: dict[str, int] = {}
        """Spend counters: the highest value the store reported (or the ledger's figure at start-up)."""
        self._unsynced: dict[str, int] = {}
        """Spend counted here that the store has not confirmed yet (it failed, or the flush is on its way)."""
        self._unsent: dict[str, Increment] = {}
        """Spend increments the store missed: sent with the next call that reaches it."""
        self._reserved_here: dict[str, int] = {}
        """Per key id: what this replica's requests in flight have reserved (budgets while the store is away)."""
        self._copy_day = ""
        self._spend_known = False
        """Whether the keys' spend of this day and month was read from the ledger; until then budgets are unknown."""
        self._loader: asyncio.Task[None] | None = None
        self._loader_waited_out = False
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
        Waits a few seconds for the first try; a ledger that cannot answer is asked again every `spend_retry_s` in
        the background, and until it answers keys with a budget are treated as over budget."""
        self._loader = asyncio.create_task(self._load_spend(), name="tiergate-limits-spend")
        await asyncio.wait({self._loader}, timeout=_FIRST_LOAD_WAIT_S)
        if not self._spend_known:
            self._loader_waited_out = True
            log.warning(
                "limits: the keys' frontier spend is not read from the ledger yet; until it is, keys with a budget "
                "are treated as over budget (their over-budget policy applies: local, or refuse)"
            )

    async def _load_spend(self) -> None:
        failures = 0
        while True:
            periods = Periods.at(time.time())
            try:
                await self._ledger.flush()  # rows spooled by the last run reach the database first
                spend = await asyncio.to_thread(spend_from_ledger, self._ledger.engine, periods)
            except Exception as exc:
                if failures == 0:
                    log.warning(
                        "limits: could not read spend from the ledger (%s: %s); keys with a budget are treated as "
                        "over budget until it can be read (trying again every %g s)",
                        type(exc).__name__,
                        str(exc).strip().split("\n")[0],
                        self.settings.spend_retry_s,
                    )
                failures += 1
                await asyncio.sleep(self.settings.spend_retry_s)
                continue
            break
        try:
            for key_id, (day, month) in spend.items():
                await self._counters.seed(day_spend_key(key_id, periods), to_picodollars(day), _DAY_TTL_S)
                await self._counters.seed(month_spend_key(key_id, periods), to_picodollars(month), _MONTH_TTL_S)
        except CountersUnavailable as exc:
            self._store_failed(exc)
        self._forget_old_days(periods)
        for key_id, (day, month) in spend.items():
            for counter, amount in ((day_spend_key(key_id, periods), day), (month_spend_key(key_id, periods), month)):
                self._seen[counter] = max(self._seen.get(counter, 0), to_picodollars(amount))
        self._spend_known = True
        if failures or self._loader_waited_out:
            log.info("limits: frontier spend read from the ledger after %d failed tries; budgets apply again", failures)
        if spend:
            log.info("limits: frontier spend of %d keys loaded from the ledger", len(spend))

    async def close(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._counters.close()

    # --- admission -----------------------------------------------------------------------------------------------

    async def admit(self, key: ApiKey, caller: Caller, model: str, request: ChatRequest | None = None) -> Caller:
        """Count this request and check the key's limits. Raises `RateLimited` or `BudgetExceeded` (429); returns
        the caller with its escalation bias raised, or with the frontier tier closed, as the budget stands.

        A budgeted key's request that may reach the frontier tier reserves an estimate of its cost in the same
        atomic step that reads the spend, so that requests in flight together cannot spend past the budget: each
        is judged by the spend so far plus what the others in flight have reserved."""
        now = time.time()
        window = int(now // self.settings.window_s)
        periods = Periods.at(now)
        increments = (
            [Increment(rpm_key(key.id, window), 1, 2 * self.settings.window_s)] if key.requests_per_minute else []
        )
        reads = [tpm_key(key.id, window)] if key.tokens_per_minute else []
        budgeted = key.budget_usd_per_day is not None or key.budget_usd_per_month is not None
        reserve = 0
        if budgeted and self._spend_known:
            reads += [day_spend_key(key.id, periods), month_spend_key(key.id, periods)]
            reserve = self._estimate(caller, model, request)
            if reserve:
                increments.append(Increment(reserved_key(key.id), reserve, _RESERVED_TTL_S))
            else:
                reads.append(reserved_key(key.id))
        if not increments and not reads and not budgeted:
            return caller
        exchanged = await self._exchange(increments, reads) if increments or reads else ([], [])
        reservation = Reservation(key.id, reserve, exchanged is not None) if reserve else None
        others = self._reserved_here.get(key.id, 0)  # the store is away: this replica's own requests in flight
        if reservation is not None:
            self._reserved_here[key.id] = others + reserve
        totals, values = exchanged if exchanged is not None else ([], [])
        spend_read = None
        if exchanged is not None and budgeted and self._spend_known:
            first = 1 if key.tokens_per_minute else 0
            spend_read = values[first : first + 2]
            others = totals[-1] - reserve if reserve else values[first + 2]
        try:
            admitted = self._judge(key, caller, model, now, window, totals, values)
            if budgeted:
                admitted = self._judge_spend(key, admitted, model, now, periods, spend_read, max(others, 0))
        except BaseException:
            self._release(reservation)
            raise
        if reservation is not None and admitted.frontier_allowed:
            return replace(admitted, reservation=reservation)
        self._release(reservation)
        return admitted

    def _judge(
        self, key: ApiKey, caller: Caller, model: str, now: float, window: int, totals: list[int], values: list[int]
    ) -> Caller:
        retry_s = max(1, math.ceil((window + 1) * self.settings.window_s - now))
        if totals and key.requests_per_minute is not None and totals[0] > key.requests_per_minute:
            raise RequestsLimited(
                f"Rate limit reached for API key {key.name!r}: {key.requests_per_minute} requests per "
                f"{self._window_name()}. Try again in {retry_s} s.",
                retry_after_s=retry_s,
            )
        if values and key.tokens_per_minute is not None and values[0] >= key.tokens_per_minute:
            raise TokensLimited(
                f"Rate limit reached for API key {key.name!r}: {key.tokens_per_minute} tokens per "
                f"{self._window_name()} used ({values[0]}). Try again in {retry_s} s.",
                retry_after_s=retry_s,
            )
        return caller

    def _judge_spend(
        self,
        key: ApiKey,
        caller: Caller,
        model: str,
        now: float,
        periods: Periods,
        spend_read: list[int] | None,
        others_reserved: int,
    ) -> Caller:
        if not self._spend_known:
            return self._judge_unknown(key, caller, model, now)
        day_spent, month_spent = self._spend(periods, key.id, spend_read)
        budgets = self._budgets(key, periods, day_spent + others_reserved, month_spent + others_reserved)
        return self._judge_budget(key, caller, model, budgets, now)

    def _judge_unknown(self, key: ApiKey, caller: Caller, model: str, now: float) -> Caller:
        """The key's spend could not be read from the ledger yet: its over-budget policy applies until it can."""
        why = f"API key {key.name!r} has a frontier budget and its spend cannot be read from the ledger yet"
        retry_s = max(1, math.ceil(self.settings.spend_retry_s))
        if key.over_budget == "refuse":
            raise BudgetExceeded(f"{why}; its requests are refused until it can.", retry_after_s=retry_s)
        if self._names_tier(model) == "frontier":
            raise BudgetExceeded(
                f"{why}: until it can, its requests stay on the local tier, and model `{model}` is a frontier "
                "model. Use model `auto` or `local`.",
                retry_after_s=retry_s,
            )
        return replace(caller, frontier_allowed=False)

    def _estimate(self, caller: Caller, model: str, request: ChatRequest | None) -> int:
        """Picodollars to reserve for a request that may reach the frontier tier (0 for one that cannot): its
        prompt as the router estimates it plus its max_tokens (or `reserve_completion_tokens`), at the price of
        the frontier model it names, else the frontier tier's default."""
        tier = self._names_tier(model)
        if not caller.frontier_allowed or tier == "local":
            return 0
        backend = self._catalog.resolve(model) if tier == "frontier" else self._catalog.default("frontier")
        price = self._ledger.pricing.token_price(backend.name) if backend is not None else None
        if price is None:
            return 0
        prompt = completion = 0
        if request is not None:
            prompt = sum(estimate_tokens(m.content or "") + MESSAGE_OVERHEAD_TOKENS for m in request.messages)
            completion = request.sampling.max_tokens or 0
        completion = completion or self.settings.reserve_completion_tokens
        return to_picodollars(quantize(price.cost(prompt, completion)))

    def _release(self, reservation: Reservation | None) -> None:
        """Give back a reservation that will not be settled (the request was refused or kept local)."""
        if reservation is None:
            return
        self._forget_reservation(reservation)
        if reservation.in_store:
            self._in_background(self._apply_quietly([_unreserve(reservation)]))

    def _forget_reservation(self, reservation: Reservation) -> None:
        left = self._reserved_here.get(reservation.key_id, 0) - reservation.picodollars
        if left > 0:
            self._reserved_here[reservation.key_id] = left
        else:
            self._reserved_here.pop(reservation.key_id, None)

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
        if self._names_tier(model) == "frontier":
            raise BudgetExceeded(
                f"API key {key.name!r} has spent its frontier {what}: until {when} its requests stay on the local "
                f"tier, and model `{model}` is a frontier model. Use model `auto` or `local`.",
                retry_after_s=retry_s,
            )
        return replace(caller, frontier_allowed=False)

    def _names_tier(self, model: str) -> str | None:
        try:
            return self._catalog.resolve(model).tier
        except ModelNotFound:
            return None  # `auto`, or a name the router will answer 404 for

    # --- the spend counters --------------------------------------------------------------------------------------

    def _spend(self, periods: Periods, key_id: str, read: list[int] | None) -> tuple[int, int]:
        """The key's spend today and this month: the store's figure (or the highest it ever reported, where it
        reports less: Redis lost it) plus what this replica counted that the store has not confirmed."""
        day_key, month_key = day_spend_key(key_id, periods), month_spend_key(key_id, periods)
        self._forget_old_days(periods)
        if read is not None:
            for counter, value in zip((day_key, month_key), read, strict=True):
                self._observed(counter, value, 0, _DAY_TTL_S if counter == day_key else _MONTH_TTL_S)
        return (
            self._seen.get(day_key, 0) + self._unsynced.get(day_key, 0),
            self._seen.get(month_key, 0) + self._unsynced.get(month_key, 0),
        )

    def _observed(self, counter: str, value: int, added: int, ttl_s: int) -> None:
        """The store reported `value` for a spend counter, just after adding `added` to it. A counter that was
        empty (value == added) while this replica had seen it above zero was lost (a Redis restart or eviction):
        it is put back, as the maximum of its value and what was known, so that replicas doing it too agree."""
        seen = self._seen.get(counter, 0)
        if value == added and seen > 0:
            restored = seen + added
            log.warning("limits: spend counter %s was lost by the store; putting back %d", counter, restored)
            self._in_background(self._raise_quietly(counter, restored, ttl_s))
            value = restored
        self._seen[counter] = max(seen, value)

    async def _exchange(self, increments: list[Increment], reads: list[str]) -> tuple[list[int], list[int]] | None:
        """One call to the store, carrying the spend increments it missed before; None when it does not answer."""
        pending = list(self._unsent.values())
        self._unsent.clear()
        try:
            totals, values = await self._counters.apply([*increments, *pending], reads)
        except CountersUnavailable as exc:
            self._store_failed(exc)
            for inc in pending:
                self._keep_unsent(inc)
            return None
        for inc, total in zip(pending, totals[len(increments) :], strict=True):
            self._synced(inc.key, inc.amount)
            self._observed(inc.key, total, inc.amount, inc.ttl_s)
        return totals[: len(increments)], values

    def _keep_unsent(self, inc: Increment) -> None:
        earlier = self._unsent.get(inc.key)
        self._unsent[inc.key] = replace(inc, amount=inc.amount + (earlier.amount if earlier else 0))

    def _synced(self, counter: str, amount: int) -> None:
        left = self._unsynced.get(counter, 0) - amount
        if left > 0:
            self._unsynced[counter] = left
        else:
            self._unsynced.pop(counter, None)

    def _forget_old_days(self, periods: Periods) -> None:
        if periods.day != self._copy_day:
            current = (periods.day, periods.month)
            self._seen = {k: v for k, v in self._seen.items() if k.endswith(current)}
            self._unsynced = {k: v for k, v in self._unsynced.items() if k.endswith(current)}
            self._copy_day = periods.day

    def _window_name(self) -> str:
        return "minute" if self.settings.window_s == 60 else f"{self.settings.window_s} s window"

    def _store_failed(self, exc: Exception) -> None:
        self.store_errors.inc()
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("limits: the counter store failed (%s); rate limits are not applied meanwhile", exc)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _apply_quietly(self, increments: list[Increment]) -> None:
        with contextlib.suppress(CountersUnavailable):  # a lost reservation expires with its counter
            await self._counters.apply(increments, [])

    async def _raise_quietly(self, counter: str, value: int, ttl_s: int) -> None:
        try:
            await self._counters.raise_to(counter, value, ttl_s)
        except CountersUnavailable as exc:
            self._store_failed(exc)

    # --- after a request -----------------------------------------------------------------------------------------

    def finisher(self) -> Finisher:
        """The `ChatService` hook that adds a finished request's tokens and frontier cost to its key's counters,
        and gives back what it reserved at admission. Pricing is a dictionary read per attempt; the counting itself
        runs as a task, off the request's latency."""

        def finish(trace: RequestTrace, request: ChatRequest) -> None:
            key_id = request.caller.key_id
            reservation = request.caller.reservation
            reserved = reservation if isinstance(reservation, Reservation) else None
            if key_id is None or (not trace.attempts and reserved is None):
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
            self._in_background(self._count(key_id, tokens, to_picodollars(cost), reserved))

        return finish

    async def _count(self, key_id: str, tokens: int, picodollars: int, reserved: Reservation | None) -> None:
        now = time.time()
        window = int(now // self.settings.window_s)
        periods = Periods.at(now)
        increments = [Increment(tpm_key(key_id, window), tokens, 2 * self.settings.window_s)] if tokens else []
        spend = (
            [
                Increment(day_spend_key(key_id, periods), picodollars, _DAY_TTL_S),
                Increment(month_spend_key(key_id, periods), picodollars, _MONTH_TTL_S),
            ]
            if picodollars
            else []
        )
        if reserved is not None:
            self._forget_reservation(reserved)
        unreserve = [_unreserve(reserved)] if reserved is not None and reserved.in_store else []
        self._forget_old_days(periods)
        for inc in spend:  # counted here at once: budgets see it even before (or without) the store
            self._unsynced[inc.key] = self._unsynced.get(inc.key, 0) + inc.amount
        if not increments and not spend and not unreserve:
            return
        exchanged = await self._exchange([*increments, *spend, *unreserve], [])
        if exchanged is None:
            for inc in spend:  # the store missed it: sent with the next call that reaches it
                self._keep_unsent(inc)
            return
        totals = exchanged[0][len(increments) : len(increments) + len(spend)]
        for inc, total in zip(spend, totals, strict=True):
            self._synced(inc.key, inc.amount)
            self._observed(inc.key, total, inc.amount, inc.ttl_s)


def _unreserve(reservation: Reservation) -> Increment:
    return Increment(reserved_key(reservation.key_id), -reservation.picodollars, _RESERVED_TTL_S)


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
