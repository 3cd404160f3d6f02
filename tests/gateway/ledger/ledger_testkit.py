"""Helpers for the ledger's tests (a module with a distinctive name, importable from the test files)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import URL

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow
from gateway.ledger.record import RequestRecord

PG_HOST, PG_PORT, PG_DATABASE = "127.0.0.1", 5432, "test"


def frontier_record(request_id: str, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "requested_model": "auto",
        "tier": "frontier",
        "model": "gpt-4.1",
        "tokens_in": 1200,
        "tokens_out": 300,
        "latency_ms": 850.0,
    }
    values.update(fields)
    return RequestRecord(request_id=request_id, **values)


def local_record(request_id: str, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "requested_model": "auto",
        "tier": "local",
        "model": "gemma3-270m",
        "tokens_in": 900,
        "tokens_out": 120,
        "compute_ms": 2100.0,
        "latency_ms": 2150.0,
    }
    values.update(fields)
    return RequestRecord(request_id=request_id, **values)


def postgres_url(user: str, schema: str, *, host: str = PG_HOST, port: int = PG_PORT) -> str:
    url = URL.create(
        "postgresql+psycopg",
        username=user,
        host=host,
        port=port,
        database=PG_DATABASE,
        query={"options": f"-csearch_path={schema}"},
    )
    return url.render_as_string(hide_password=False)


def count_rows(database_url: str, table: Any = RequestRow) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
