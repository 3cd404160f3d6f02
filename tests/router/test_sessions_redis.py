"""The Redis session store against the real server: counting steps, atomic step numbers across replicas, a sliding
time to live, and requests that go on when Redis cannot be reached."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest
import redis.asyncio
from support.redis_server import forget_sessions, require_redis, unique_session

from router.sessions import NO_SESSION, RedisSessionStore, SessionState, StepOutcome

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def session() -> Iterator[str]:
    name = unique_session("unit")
    yield name
    forget_sessions(name)


def test_steps_and_outcomes_add_up(redis_url: str, session: str) -> None:
    other = session + "-other"

    async def run() -> tuple[SessionState, SessionState, list[int]]:
        store = RedisSessionStore(redis_url)
        try:
            assert await store.get(session) == NO_SESSION
            steps = [(await store.record(session, StepOutcome())).steps]
            steps.append((await store.record(session, StepOutcome(correction=True, escalated=True))).steps)
            steps.append((await store.record(session, StepOutcome(stall=True, escalated=True))).steps)
            await store.record(other, StepOutcome(stall=True))
            return await store.get(session), await store.get(other), steps
        finally:
            await store.close()

    try:
        state, other_state, steps = asyncio.run(run())
    finally:
        forget_sessions(other)
    assert state == SessionState(steps=3, corrections=1, stalls=1, escalations=2)
    assert other_state == SessionState(steps=1, stalls=1)
    assert steps == [1, 2, 3]


def test_two_replicas_counting_one_session_at_once_get_distinct_step_numbers(redis_url: str, session: str) -> None:
    async def run() -> tuple[list[int], SessionState]:
        replica_a, replica_b = RedisSessionStore(redis_url), RedisSessionStore(redis_url)
        try:
            states = await asyncio.gather(
                *(
                    (replica_a if i % 2 else replica_b).record(session, StepOutcome(escalated=i % 3 == 0))
                    for i in range(60)
                )
            )
            return [s.steps for s in states], await replica_b.get(session)
        finally:
            await replica_a.close()
            await replica_b.close()

    steps, final = asyncio.run(run())
    assert sorted(steps) == list(range(1, 61))
    assert final == SessionState(steps=60, escalations=20)


def test_each_use_restarts_a_sessions_time_to_live(redis_url: str, session: str) -> None:
    """Read from Redis itself (PTTL) rather than inferred from sleeps, so a busy machine cannot flip it."""

    async def run() -> tuple[int, int, int]:
        store = RedisSessionStore(redis_url, ttl_s=30.0)
        probe = redis.asyncio.Redis.from_url(redis_url)
        key = RedisSessionStore.KEY_PREFIX + session
        try:
            await store.record(session, StepOutcome())
            await probe.pexpire(key, 5_000)  # as if 25 s had passed since the step
            aged = await probe.pttl(key)
            await store.get(session)
            after_read = await probe.pttl(key)
            await probe.pexpire(key, 5_000)
            await store.record(session, StepOutcome())
            return aged, after_read, await probe.pttl(key)
        finally:
            await store.close()
            await probe.aclose()

    aged, after_read, after_write = asyncio.run(run())
    assert 0 < aged <= 5_000
    assert after_read > 20_000 and after_write > 20_000  # back to about 30 s


def test_an_unused_session_expires_after_its_ttl(redis_url: str, session: str) -> None:
    async def run() -> tuple[SessionState, SessionState]:
        store = RedisSessionStore(redis_url, ttl_s=1.0)
        try:
            await store.record(session, StepOutcome())
            fresh = await store.get(session)
            await asyncio.sleep(2.5)  # well past the 1 s time to live
            return fresh, await store.get(session)
        finally:
            await store.close()

    fresh, expired = asyncio.run(run())
    assert fresh.steps == 1
    assert expired == NO_SESSION


def test_unreachable_redis_routes_without_state_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once the socket is closed

    async def run() -> tuple[SessionState, SessionState, int]:
        store = RedisSessionStore(f"redis://127.0.0.1:{port}/0", retry_after_s=0.0)
        try:
            written = await store.record("any", StepOutcome(escalated=True))
            read = await store.get("any")
            return written, read, store.failures
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING, logger="tiergate.sessions"):
        written, read, failures = asyncio.run(run())
    assert written == NO_SESSION and read == NO_SESSION and failures == 2
    warnings = [r for r in caplog.records if r.name == "tiergate.sessions"]
    assert len(warnings) == 1 and "session store unreachable" in warnings[0].getMessage()


def test_a_hung_redis_costs_one_timeout_then_is_left_alone_for_a_while() -> None:
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        async def run() -> tuple[float, float, SessionState]:
            store = RedisSessionStore(url, timeout_s=0.3, retry_after_s=30.0)
            try:
                started = time.perf_counter()
                await store.get("any")
                first = time.perf_counter() - started
                started = time.perf_counter()
                state = await store.record("any", StepOutcome())
                return first, time.perf_counter() - started, state
            finally:
                await store.close()

        first, second, state = asyncio.run(run())
    assert 0.25 <= first < 2.0
    assert second < 0.05 and state == NO_SESSION


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RedisSessionStore("redis://127.0.0.1:6379/0", ttl_s=0)
