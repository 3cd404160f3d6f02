"""Fixtures for the ledger's tests: databases (SQLite files, PostgreSQL schemas made per test), ledgers, a proxy
that can cut the way to PostgreSQL, and litellm's price map (imported once: it takes seconds)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ledger_testkit import PG_DATABASE, PG_HOST, PG_PORT, postgres_url
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from support.tcp_proxy import TcpProxy

from gateway.ledger.pricing import Pricing, load_price_map
from gateway.ledger.settings import LedgerSettings
from gateway.ledger.writer import Ledger


@pytest.fixture(scope="session")
def price_map() -> Mapping[str, Mapping[str, Any]]:
    return load_price_map()


def _postgres_user() -> tuple[str | None, str]:
    """The first of postgres and root that the server lets in, or None and why neither did."""
    import psycopg

    reasons = []
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DATABASE, user=user, connect_timeout=3):
                return user, ""
        except psycopg.Error as exc:
            reasons.append(f"{user}: {str(exc).strip().splitlines()[0]}")
    return None, "; ".join(reasons)


@pytest.fixture(scope="session")
def postgres_user() -> str:
    user, why = _postgres_user()
    if user is None:
        pytest.skip(f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT} (database {PG_DATABASE}): {why}")
    return user


@pytest.fixture
def postgres_schema(postgres_user: str) -> Iterator[str]:
    """A schema of its own for one test, dropped afterwards, so that runs never see each other's rows."""
    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url(postgres_user, "public"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(URL.create("sqlite", database=str(tmp_path / "db" / "ledger.sqlite3")))
    user = request.getfixturevalue("postgres_user")
    schema = request.getfixturevalue("postgres_schema")
    return postgres_url(user, schema)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(URL.create("sqlite", database=str(tmp_path / "db" / "ledger.sqlite3")))


LedgerFactory = Callable[..., Ledger]


@pytest.fixture
def make_ledger(tmp_path: Path, price_map: Mapping[str, Mapping[str, Any]]) -> LedgerFactory:
    """A (not yet started) ledger whose files live in this test's directory; fast batches unless told otherwise."""

    def build(database_url: str, **overrides: Any) -> Ledger:
        fields: dict[str, Any] = {"batch_interval_ms": 20, "retry_interval_ms": 50, "db_timeout_s": 0.2}
        fields.update(overrides)
        settings = LedgerSettings(database_url=database_url, **fields)
        return Ledger(settings, tmp_path / "cache", pricing=Pricing.from_settings(settings, price_map))

    return build


@pytest.fixture
def postgres_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy((PG_HOST, PG_PORT))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
