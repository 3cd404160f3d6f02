"""Counters behind per-key limits: integers that expire, kept in this process or shared by replicas through Redis.

    CounterStore.apply(increments, reads)  one atomic step: add to some counters, read others
    CounterStore.seed(key, value, ttl_s)   set a counter only where it does not exist yet (start-up from the ledger)
    CounterStore.raise_to(key, value, ttl_s)  set a counter to at least `value` (a spend Redis lost is put back)

Both stores keep the same keys (`tiergate:...`, chosen by `gateway.auth.limits`) with the same meaning, so a test
or a deployment can swap one for the other. Money is counted in whole picodollars (the ledger's 12 decimal places)
so that Redis adds it exactly with INCRBY; INCRBYFLOAT would round.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError


class CountersUnavailable(Exception):
    """The shared store did not answer in time; the limiter decides what that means for the request."""


@dataclass(frozen=True, slots=True)
class Increment:
    key: str
    amount: int
    ttl_s: int
    """The counter's lifetime: long enough to outlive its window, so the store forgets old windows by itself."""


class CounterStore(ABC):
    @abstractmethod
    async def apply(self, increments: Sequence[Increment], reads: Sequence[str]) -> tuple[list[int], list[int]]:
        """Add each increment and read each other counter in one atomic step. Returns the increments' new totals
        and the values read (0 where a counter does not exist). Raises `CountersUnavailable`."""

    @abstractmethod
    async def seed(self, key: str, value: int, ttl_s: int) -> None:
        """Set a counter that does not exist yet; leave one that does (another replica is counting already)."""

    @abstractmethod
    async def raise_to(self, key: str, value: int, ttl_s: int) -> None:
        """Set a counter to `value` where it is lower (or missing), atomically; taking the maximum is idempotent, so
        replicas that all put back what they knew of a lost counter never count it twice."""

    async def close(self) -> None:
        return None


class MemoryCounters(CounterStore):
    """The single-process default: a dict of (value, expiry). Each event loop step is atomic, which is enough."""

    _SWEEP_EVERY = 1024

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._operations = 0

    async def apply(self, increments: Sequence[Increment], reads: Sequence[str]) -> tuple[list[int], list[int]]:
        now = time.monotonic()
        self._operations += 1
        if self._operations % self._SWEEP_EVERY == 0:
            self._sweep(now)
        totals = []
        for inc in increments:
            total = self._get(inc.key, now) + inc.amount
            self._values[inc.key] = (total, now + inc.ttl_s)
            totals.append(total)
        return totals, [self._get(key, now) for key in reads]

    async def seed(self, key: str, value: int, ttl_s: int) -> None:
        now = time.monotonic()
        if key not in self._values or self._values[key][1] <= now:
            self._values[key] = (value, now + ttl_s)

    async def raise_to(self, key: str, value: int, ttl_s: int) -> None:
        now = time.monotonic()
        if self._get(key, now) < value:
            self._values[key] = (value, now + ttl_s)

    def _get(self, key: str, now: float) -> int:
        entry = self._values.get(key)
        if entry is None or entry[1] <= now:
            return 0
        return entry[0]

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, expires) in self._values.items() if expires <= now]:
            del self._values[key]


class RedisCounters(CounterStore):
    """Counters shared by every replica. One MULTI/EXEC pipeline per call: INCRBY + EXPIRE per increment and GET
    per read travel in a single round trip and apply atomically (Redis runs a transaction without interleaving).

    After a failure Redis is left alone for `retry_after_s` (the session store's rule): calls in that time fail at
    once instead of each waiting out the timeout on a Redis that hangs."""

    _RAISE_TO = (
        "local v = tonumber(redis.call('GET', KEYS[1]) or '0') "
        "if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end return v"
    )

    def __init__(self, url: str, timeout_s: float, retry_after_s: float = 5.0) -> None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Short socket timeouts and no client-side retries: a Redis that hangs must cost a request milliseconds.
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
        )
        self._retry_after_s = retry_after_s
        self._down_until = float("-inf")

    async def apply(self, increments: Sequence[Increment], reads: Sequence[str]) -> tuple[list[int], list[int]]:
        self._check_up()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for inc in increments:
                    pipe.incrby(inc.key, inc.amount)
                    pipe.expire(inc.key, inc.ttl_s)
                for key in reads:
                    pipe.get(key)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        totals = [int(results[2 * i]) for i in range(len(increments))]
        read = [int(value) if value is not None else 0 for value in results[2 * len(increments) :]]
        return totals, read

    async def seed(self, key: str, value: int, ttl_s: int) -> None:
        self._check_up()
        try:
            await self._client.set(key, value, ex=ttl_s, nx=True)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc

    async def raise_to(self, key: str, value: int, ttl_s: int) -> None:
        self._check_up()
        try:
            await self._client.eval(self._RAISE_TO, 1, key, value, ttl_s)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc

    def _check_up(self) -> None:
        if time.monotonic() < self._down_until:
            raise CountersUnavailable(f"Redis failed less than {self._retry_after_s:g} s ago; not asked meanwhile")

    def _failed(self, exc: Exception) -> CountersUnavailable:
        self._down_until = time.monotonic() + self._retry_after_s
        return CountersUnavailable(f"Redis: {type(exc).__name__}: {exc}")

    async def close(self) -> None:
        await self._client.aclose()
