"""The in-memory session store: counting steps, and staying within its size and time bounds."""

from __future__ import annotations

import asyncio

import pytest

from router.sessions import NO_SESSION, InMemorySessionStore, SessionState, StepOutcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_steps_and_outcomes_add_up() -> None:
    async def run() -> SessionState:
        store = InMemorySessionStore()
        assert await store.get("run-1") == NO_SESSION
        await store.record("run-1", StepOutcome())
        await store.record("run-1", StepOutcome(correction=True, escalated=True))
        await store.record("run-1", StepOutcome(stall=True, escalated=True))
        await store.record("run-2", StepOutcome(stall=True))
        return await store.get("run-1")

    assert asyncio.run(run()) == SessionState(steps=3, corrections=1, stalls=1, escalations=2)


def test_least_recently_used_session_is_evicted_first() -> None:
    async def run() -> InMemorySessionStore:
        store = InMemorySessionStore(max_sessions=2)
        await store.record("a", StepOutcome())
        await store.record("b", StepOutcome())
        await store.get("a")  # touching a makes b the least recently used
        await store.record("c", StepOutcome())
        return store

    store = asyncio.run(run())
    assert len(store) == 2 and store.evicted == 1
    assert asyncio.run(store.get("b")) == NO_SESSION
    assert asyncio.run(store.get("a")).steps == 1
    assert asyncio.run(store.get("c")).steps == 1


def test_sessions_expire_after_their_ttl_unless_used() -> None:
    clock = Clock()
    store = InMemorySessionStore(ttl_s=60, clock=clock)
    asyncio.run(store.record("idle", StepOutcome()))
    asyncio.run(store.record("busy", StepOutcome()))
    for _ in range(3):
        clock.now += 40
        asyncio.run(store.get("busy"))  # each use restarts its time to live
    assert asyncio.run(store.get("idle")) == NO_SESSION
    assert asyncio.run(store.get("busy")).steps == 1
    clock.now += 61
    assert len(store) == 0
    assert store.evicted == 0  # expiry is not eviction


def test_the_store_never_holds_more_than_its_bound() -> None:
    async def run() -> InMemorySessionStore:
        store = InMemorySessionStore(max_sessions=100)
        for i in range(1000):
            await store.record(f"s{i}", StepOutcome())
        return store

    store = asyncio.run(run())
    assert len(store) == 100 and store.evicted == 900
    assert asyncio.run(store.get("s999")).steps == 1
    assert asyncio.run(store.get("s0")) == NO_SESSION


def test_close_forgets_everything() -> None:
    store = InMemorySessionStore()
    asyncio.run(store.record("a", StepOutcome()))
    asyncio.run(store.close())
    assert len(store) == 0


@pytest.mark.parametrize(("size", "ttl"), [(0, 60.0), (10, 0.0)])
def test_bounds_must_be_positive(size: int, ttl: float) -> None:
    with pytest.raises(ValueError):
        InMemorySessionStore(max_sessions=size, ttl_s=ttl)
