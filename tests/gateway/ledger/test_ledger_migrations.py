"""The schema's migrations, on an empty SQLite file and an empty PostgreSQL schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from gateway.ledger.cli import db_main
from gateway.ledger.database import downgrade, make_engine, upgrade
from gateway.ledger.models import Base
from gateway.ledger.settings import LedgerSettings

LEDGER_TABLES = {"requests", "sessions", "outcomes", "api_keys"}


def _tables(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_the_tables_the_models_describe_and_downgrade_removes_them(database_url: str) -> None:
    assert _tables(database_url) & LEDGER_TABLES == set()

    upgrade(database_url)
    assert _tables(database_url) >= LEDGER_TABLES
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], "the migrations and gateway.ledger.models disagree"

    upgrade(database_url)  # already at head: nothing to do, no error
    downgrade(database_url, "base")
    assert _tables(database_url) & LEDGER_TABLES == set()


def test_tiergate_db_upgrades_and_downgrades(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, cache = LedgerSettings(), tmp_path / "cache"

    assert db_main(["upgrade", "--database-url", sqlite_url], settings=settings, cache_dir=cache) == 0
    assert "revision 0002" in capsys.readouterr().out
    assert _tables(sqlite_url) >= LEDGER_TABLES

    assert db_main(["downgrade", "base", "--database-url", sqlite_url], settings=settings, cache_dir=cache) == 0
    assert "no ledger tables" in capsys.readouterr().out
    assert _tables(sqlite_url) & LEDGER_TABLES == set()


def test_tiergate_db_defaults_to_the_sqlite_file_in_the_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert db_main(["upgrade"], settings=LedgerSettings(), cache_dir=cache) == 0
    assert (cache / "ledger.sqlite3").is_file()
    assert _tables(f"sqlite:///{cache / 'ledger.sqlite3'}") >= LEDGER_TABLES


def test_tiergate_db_reports_an_unreachable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    closed_port = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    assert db_main(["upgrade", "--database-url", closed_port], settings=LedgerSettings(), cache_dir=tmp_path) == 1
    assert "cannot be reached" in capsys.readouterr().err
