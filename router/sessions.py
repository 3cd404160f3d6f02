"""Per-session state: what earlier steps of one agent run (or chat) tell the router about the next one.

A session is named by the `X-Tiergate-Session` header, else the request's `user` field. Its state counts what a
single request cannot show: how many steps it has taken, how often the user corrected the answer, how often it
stalled, how often it escalated. The store is an interface so a shared (Redis) one can follow the in-memory one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace


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
        """Add one finished step to the session and return its new state."""

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
