"""Per-session state: what earlier steps of one agent run (or chat) tell the router about the next one.

A session is named by the `X-Tiergate-Session` header, else the request's `user` field. Its state counts what a
single request cannot show: how many steps it has taken, how often the user corrected the answer, how often it
stalled, how often it escalated. `InMemorySessionStore` serves one process; `RedisSessionStore` is shared by
replicas, so that a session's steps may land on any of them and still count as one run.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("tiergate.sessions")


@dataclass(frozen=True, slots=True)
class SessionState:
    steps: int = 0
    corrections: int = 0
    stalls: int = 0
    escalations: int = 0


NO_SESSION = SessionState()
"""The state of a request that names no session, or of a session seen for the first time."""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one finished step adds to its session.

    `correction` and `stall` should be the signals that are new in this step (`Signals.correction_now`,
    `Signals.stalled`), not facts of the whole resent history, or every later step would count them again.
    `escalated` is true when the step was answered by the frontier tier (by rule, score or verification).
    """

    correction: bool = False
    stall: bool = False
    escalated: bool = False


class SessionStore(ABC):
    """Holds the state of recent sessions. Async so that a store over the network fits the same interface."""

    @abstractmethod
    async def get(self, session_id: str) -> SessionState:
        """The session's state; `NO_SESSION` for one not seen (or forgotten)."""

    @abstractmethod
    async def record(self, session_id: str, outcome: StepOutcome) -> SessionState:
        """Add one finished step to the session and return its new state (whose `steps` is this step's number).

        A store that could not count the step (a shared store out of reach) returns `NO_SESSION`."""

    @abstractmethod
    async def close(self) -> None:
        """Release what the store holds (connections, memory)."""


class InMemorySessionStore(SessionStore):
    """A bounded LRU of sessions with a sliding time-to-live, for one gateway process.

    Written here rather than taken from `cachetools` (not a dependency) because it is a few lines on an
    `OrderedDict`: the least recently used entry is always first, and with a sliding TTL it is also the first to
    expire, so both bounds are enforced by popping from the front. Every method runs to completion without awaiting,
    so it is safe on one event loop without a lock.
    """

    def __init__(
        self, *, max_sessions: int = 10_000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, SessionState]] = OrderedDict()
        self.evicted = 0
        """Sessions dropped because the store was full (expired ones are not counted)."""

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._entries)

    async def get(self, session_id: str) -> SessionState:
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(session_id)
        if entry is None:
            return NO_SESSION
        self._entries[session_id] = (now, entry[1])
        self._entries.move_to_end(session_id)
        return entry[1]

    async def record(self, session_id: str, outcome: StepOutcome) -> SessionState:
        now = self._clock()
        self._expire(now)
        entry = self._entries.pop(session_id, None)
        old = entry[1] if entry is not None else NO_SESSION
        new = replace(
            old,
            steps=old.steps + 1,
            corrections=old.corrections + outcome.correction,
            stalls=old.stalls + outcome.stall,
            escalations=old.escalations + outcome.escalated,
        )
        self._entries[session_id] = (now, new)
        while len(self._entries) > self.max_sessions:
            self._entries.popitem(last=False)
            self.evicted += 1
        return new

    async def close(self) -> None:
        self._entries.clear()

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            seen, _ = next(iter(entries.values()))
            if now - seen < self.ttl_s:
                return
            entries.popitem(last=False)


class RedisSessionStore(SessionStore):
    """Session state in Redis, shared by every gateway replica that points at the same server.

    One hash per session (`tiergate:session:<id>`, fields `steps`, `corrections`, `stalls`, `escalations`). A step
    is one MULTI/EXEC of four HINCRBYs and a PEXPIRE: atomic, so two replicas recording steps of one session at
    once each get their own step number, and the hash's new counts come back with it (no second round trip). The
    time to live slides on every read and write, as in the in-memory store; there is no size bound because Redis
    evicts by its own `maxmemory` policy.

    Redis being unreachable never fails a request: reads answer `NO_SESSION`, writes are lost (their returned
    state has `steps == 0`), a warning is logged at most once per `warn_interval_s`, and for `retry_after_s`
    after a failure the store does not try again, so a hung server costs one timeout, not one per request.
    """

    KEY_PREFIX = "tiergate:session:"
    _FIELDS = ("steps", "corrections", "stalls", "escalations")

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 3600.0,
        timeout_s: float = 0.25,
        retry_after_s: float = 5.0,
        warn_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        # Imported here, not at the top: only deployments that configure a shared store pay for the import.
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # No client-side retries: a lost step is cheaper than a request that waits through several timeouts.
            retry=Retry(NoBackoff(), 0),
        )
        self._retry_after_s = retry_after_s
        self._warn_interval_s = warn_interval_s
        self._clock = clock
        self._down_until = float("-inf")
        self._warned_at = float("-inf")
        self.failures = 0
        """Reads and writes that fell back because Redis could not be reached (or were skipped while it was down)."""

    async def get(self, session_id: str) -> SessionState:
        key = self.KEY_PREFIX + session_id
        if not self._available():
            return NO_SESSION
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(key, self._FIELDS)
                pipe.pexpire(key, self.ttl_ms)
                values, _ = await pipe.execute()
        except Exception as exc:  # RedisError, OSError, and whatever a broken connection raises: never fail a request
            self._failed("read", exc)
            return NO_SESSION
        if values[0] is None:
            return NO_SESSION
        return SessionState(*(int(v or 0) for v in values))

    async def record(self, session_id: str, outcome: StepOutcome) -> SessionState:
        key = self.KEY_PREFIX + session_id
        if not self._available():
            return NO_SESSION
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "steps", 1)
                pipe.hincrby(key, "corrections", int(outcome.correction))
                pipe.hincrby(key, "stalls", int(outcome.stall))
                pipe.hincrby(key, "escalations", int(outcome.escalated))
                pipe.pexpire(key, self.ttl_ms)
                *counts, _ = await pipe.execute()
        except Exception as exc:
            self._failed("write", exc)
            return NO_SESSION
        return SessionState(*(int(c) for c in counts))

    async def close(self) -> None:
        await self._redis.aclose()

    def _available(self) -> bool:
        if self._clock() < self._down_until:
            self.failures += 1
            return False
        return True

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        now = self._clock()
        self._down_until = now + self._retry_after_s
        if now - self._warned_at >= self._warn_interval_s:
            self._warned_at = now
            log.warning(
                "session store unreachable (%s failed: %s: %s); routing without session state for %.0f s "
                "(%d failures so far)",
                what,
                type(exc).__name__,
                exc,
                self._retry_after_s,
                self.failures,
            )
