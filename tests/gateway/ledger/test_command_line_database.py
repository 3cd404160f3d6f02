"""The command-line tools' one way to reach the ledger database: a fresh engine, disposed of, and one readable line
(never a traceback) when the database cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.ledger.cli import report_main
from gateway.ledger.database import DatabaseUnreachable, on_engine
from gateway.ledger.settings import LedgerSettings

CLOSED_PORT = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def test_work_runs_on_its_own_engine(sqlite_url: str) -> None:
    def count(engine: Engine) -> int:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT 41 + 1")).scalar_one())

    assert on_engine(sqlite_url, count) == 42


def test_an_unreachable_database_is_one_line() -> None:
    def connect(engine: Engine) -> None:
        with engine.connect():
            pass

    with pytest.raises(DatabaseUnreachable) as caught:
        on_engine(CLOSED_PORT, connect)
    assert "\n" not in str(caught.value) and str(caught.value)


def test_a_programming_error_is_not_disguised_as_an_outage(sqlite_url: str) -> None:
    def broken(_: Engine) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        on_engine(sqlite_url, broken)


def test_tiergate_report_says_the_database_cannot_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = report_main(["--database-url", CLOSED_PORT], settings=LedgerSettings(), cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("tiergate report: cannot read") and "Traceback" not in err
