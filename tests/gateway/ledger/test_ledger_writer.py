"""The writer: batches, a bounded queue that never blocks, the spool while the database is away, flush on close."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import LedgerFactory
from ledger_testkit import count_rows, frontier_record, local_record, postgres_url, wait_until
from sqlalchemy import select
from support.tcp_proxy import TcpProxy

from gateway.ledger.database import make_engine, upgrade
from gateway.ledger.models import SessionRow


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def test_a_full_batch_is_written_at_once_and_the_rest_when_the_interval_is_up(
    sqlite_url: str, make_ledger: LedgerFactory
) -> None:
    async def scenario() -> None:
        ledger = make_ledger(sqlite_url, batch_max_rows=10, batch_interval_ms=60_000)
        await ledger.start()
        for i in range(25):
            ledger.record(frontier_record(f"r{i}"))
        assert await asyncio.to_thread(wait_until, lambda: ledger.stats().written == 20)
        await asyncio.sleep(0.2)
        assert (ledger.stats().written, ledger.stats().queued, ledger.stats().batches) == (20, 5, 2)
        await ledger.close()
        assert (ledger.stats().written, ledger.stats().queued) == (25, 0)

    asyncio.run(scenario())
    assert count_rows(sqlite_url) == 25


def test_a_partial_batch_is_written_after_the_interval(sqlite_url: str, make_ledger: LedgerFactory) -> None:
    async def scenario() -> None:
        ledger = make_ledger(sqlite_url, batch_max_rows=1000, batch_interval_ms=50)
        await ledger.start()
        for i in range(3):
            ledger.record(local_record(f"r{i}"))
        assert await asyncio.to_thread(wait_until, lambda: ledger.stats().written == 3, 5.0)
        assert count_rows(sqlite_url) == 3
        await ledger.close()

    asyncio.run(scenario())


def test_a_full_queue_drops_counts_and_logs_without_blocking(
    sqlite_url: str, make_ledger: LedgerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = make_ledger(sqlite_url, queue_max_rows=5)
    records = [frontier_record(f"r{i}") for i in range(1000)]
    with caplog.at_level(logging.WARNING, logger="tiergate.ledger"):
        started = time.perf_counter()
        for record in records:  # nothing drains the queue: the writer is not started yet
            ledger.record(record)
        elapsed = time.perf_counter() - started
    stats = ledger.stats()
    assert (stats.accepted, stats.queued, stats.dropped) == (5, 5, 995)
    assert elapsed < 0.5, f"1000 record() calls took {elapsed:.3f} s"
    drop_logs = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_logs) == 1, "drops are logged, but not once per row"

    async def scenario() -> None:
        await ledger.start()
        await ledger.close()

    asyncio.run(scenario())
    assert count_rows(sqlite_url) == 5


def test_close_writes_everything_accepted(database_url: str, make_ledger: LedgerFactory) -> None:
    async def scenario() -> None:
        ledger = make_ledger(database_url, batch_max_rows=100_000, batch_interval_ms=60_000)
        await ledger.start()
        for i in range(1234):
            ledger.record(frontier_record(f"r{i}", session_id=f"s{i % 7}"))
        await ledger.close()
        assert ledger.stats().written == 1234

    asyncio.run(scenario())
    assert count_rows(database_url) == 1234


def test_record_after_close_is_dropped_not_raised(sqlite_url: str, make_ledger: LedgerFactory) -> None:
    async def scenario() -> None:
        ledger = make_ledger(sqlite_url)
        await ledger.start()
        await ledger.close()
        ledger.record(frontier_record("late"))
        assert ledger.stats().dropped == 1

    asyncio.run(scenario())
    assert count_rows(sqlite_url) == 0


def test_sessions_count_their_steps_once_each(database_url: str, make_ledger: LedgerFactory) -> None:
    async def scenario() -> None:
        ledger = make_ledger(database_url, batch_max_rows=2)
        await ledger.start()
        for i in range(5):
            ledger.record(local_record(f"step{i}", session_id="run-1", task_id="task-9" if i == 2 else None))
        ledger.record(local_record("step0", session_id="run-1"))  # the same request again: one row, one step
        await ledger.close()
        assert ledger.stats().written == 5

    asyncio.run(scenario())
    assert count_rows(database_url) == 5
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            session = connection.execute(select(SessionRow)).one()
    finally:
        engine.dispose()
    assert (session.id, session.task_id, session.step_count) == ("run-1", "task-9", 5)
    assert session.first_seen <= session.last_seen


def test_rows_wait_in_the_spool_while_sqlite_is_locked_and_are_written_after(
    sqlite_url: str, make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    upgrade(sqlite_url)
    # Another process holding the write lock is the database being unwritable, whoever runs the test
    # (file permissions do not stop root).
    blocker = sqlite3.connect(_sqlite_path(sqlite_url), isolation_level=None)

    async def scenario() -> None:
        ledger = make_ledger(sqlite_url)
        await ledger.start()
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(50):
            ledger.record(frontier_record(f"r{i}"))
        await ledger.flush()
        stats = ledger.stats()
        assert (stats.written, stats.spooled, stats.spool_pending) == (0, 50, 50)
        assert list((tmp_path / "cache" / "ledger-spool").glob("*.jsonl"))

        blocker.execute("ROLLBACK")
        assert await asyncio.to_thread(wait_until, lambda: ledger.stats().spool_pending == 0)
        assert ledger.stats().written == 50
        await ledger.close()

    try:
        asyncio.run(scenario())
    finally:
        blocker.close()
    assert count_rows(sqlite_url) == 50
    assert not list((tmp_path / "cache" / "ledger-spool").glob("*.jsonl"))


def test_spooled_rows_survive_a_restart(sqlite_url: str, make_ledger: LedgerFactory) -> None:
    upgrade(sqlite_url)
    blocker = sqlite3.connect(_sqlite_path(sqlite_url), isolation_level=None)

    async def first_run() -> None:
        ledger = make_ledger(sqlite_url)
        await ledger.start()
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(20):
            ledger.record(local_record(f"r{i}", session_id="s"))
        await ledger.close()  # the database is still locked: everything goes to the spool
        assert (ledger.stats().spooled, ledger.stats().spool_pending) == (20, 20)

    async def second_run() -> None:
        ledger = make_ledger(sqlite_url)
        await ledger.start()
        assert await asyncio.to_thread(wait_until, lambda: ledger.stats().spool_pending == 0)
        await ledger.close()
        assert ledger.stats().written == 20

    try:
        asyncio.run(first_run())
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    assert count_rows(sqlite_url) == 0
    asyncio.run(second_run())
    assert count_rows(sqlite_url) == 20


@pytest.mark.postgres
def test_rows_wait_in_the_spool_while_postgres_is_unreachable(
    postgres_user: str, postgres_schema: str, postgres_proxy: TcpProxy, make_ledger: LedgerFactory
) -> None:
    through_proxy = postgres_url(postgres_user, postgres_schema, port=postgres_proxy.port)

    async def scenario() -> None:
        ledger = make_ledger(through_proxy)
        await ledger.start()
        ledger.record(frontier_record("before"))
        await ledger.flush()
        assert ledger.stats().written == 1

        postgres_proxy.stop()
        for i in range(30):
            ledger.record(frontier_record(f"r{i}"))
        await ledger.flush()
        assert (ledger.stats().written, ledger.stats().spool_pending) == (1, 30)

        postgres_proxy.start()
        assert await asyncio.to_thread(wait_until, lambda: ledger.stats().spool_pending == 0)
        assert ledger.stats().written == 31
        await ledger.close()

    asyncio.run(scenario())
    assert count_rows(postgres_url(postgres_user, postgres_schema)) == 31


@pytest.mark.postgres
def test_a_server_down_at_start_up_gets_its_schema_and_rows_when_it_comes_back(
    postgres_user: str, postgres_schema: str, postgres_proxy: TcpProxy, make_ledger: LedgerFactory
) -> None:
    postgres_proxy.stop()
    through_proxy = postgres_url(postgres_user, postgres_schema, port=postgres_proxy.port)

    async def scenario() -> None:
        ledger = make_ledger(through_proxy)
        await ledger.start()
        for i in range(10):
            ledger.record(local_record(f"r{i}"))
        await ledger.flush()
        assert ledger.stats().spool_pending == 10
        postgres_proxy.start()
        assert await asyncio.to_thread(wait_until, lambda: ledger.stats().spool_pending == 0)
        assert ledger.stats().written == 10
        await ledger.close()

    asyncio.run(scenario())
    assert count_rows(postgres_url(postgres_user, postgres_schema)) == 10


def test_a_row_the_database_refuses_is_set_aside_and_the_rest_written(
    database_url: str, make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    async def scenario() -> None:
        ledger = make_ledger(database_url, batch_max_rows=100)
        await ledger.start()
        for i in range(9):
            ledger.record(frontier_record(f"r{i}"))
        ledger.record(frontier_record("bad", requested_model=None))  # NOT NULL: the database refuses it
        await ledger.close()
        stats = ledger.stats()
        assert (stats.written, stats.rejected, stats.spool_pending) == (9, 1, 0)

    asyncio.run(scenario())
    assert count_rows(database_url) == 9
    set_aside = list((tmp_path / "cache" / "ledger-spool" / "rejected").glob("*.jsonl"))
    assert len(set_aside) == 1 and b'"id":"bad"' in set_aside[0].read_bytes()
