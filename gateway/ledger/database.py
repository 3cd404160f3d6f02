"""Engines for the ledger database, and the schema migrations (Alembic, configured from code)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from gateway.ledger.settings import normalize_database_url
from router.errors import Unavailable

T = TypeVar("T")


def make_engine(database_url: str, *, timeout_s: float = 5.0) -> Engine:
    """An engine shared by the writer thread and report threads. SQLite runs in WAL mode so that reports read while
    the writer writes; its parent directory is created. PostgreSQL connections are checked before use, so a
    restarted server is picked up again."""
    url = make_url(normalize_database_url(database_url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, json_serializer=_json_text, connect_args={"timeout": timeout_s})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        json_serializer=_json_text,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(2, round(timeout_s))},  # libpq ignores values under 2
    )


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()  # the signals column, per row: several times faster than json.dumps


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash; an OS crash may lose the tail
    cursor.close()


def is_transient(exc: BaseException) -> bool:
    """Whether a failed write should wait in the spool and be tried again (the database is down, locked, missing a
    table) rather than be set aside as a bad row (a constraint or value the database refuses)."""
    if isinstance(exc, IntegrityError | DataError):
        return False
    if isinstance(exc, DBAPIError):
        return True
    return not isinstance(exc, StatementError) and isinstance(exc, SQLAlchemyError | OSError)


def alembic_config(database_url: str, engine: Engine | None = None) -> Config:
    """Alembic's config built in code: the scripts ship inside the `migrations` package, so no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    # set_main_option interpolates %; the URL may hold a percent-encoded password
    config.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(database_url: str, revision: str = "head", *, engine: Engine | None = None) -> None:
    """Bring the schema to `revision` (the latest by default). Safe to run from several replicas at once on
    PostgreSQL: the environment takes an advisory lock first."""
    own = engine is None
    engine = engine or make_engine(database_url)
    try:
        command.upgrade(alembic_config(database_url, engine), revision)
    finally:
        if own:
            engine.dispose()


def downgrade(database_url: str, revision: str, *, engine: Engine | None = None) -> None:
    """Take the schema back to `revision` (`base` removes every ledger table)."""
    own = engine is None
    engine = engine or make_engine(database_url)
    try:
        command.downgrade(alembic_config(database_url, engine), revision)
    finally:
        if own:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class DatabaseUnreachable(Exception):
    """The database could not be reached (or was locked); the message is the driver's first line."""


def on_engine(database_url: str, work: Callable[[Engine], T]) -> T:
    """Run `work` on an engine of its own for a command-line tool, and dispose of it afterwards. A transient failure
    (see `is_transient`) becomes `DatabaseUnreachable`, for the tool to print in one line; anything else propagates."""
    engine = make_engine(database_url)
    try:
        return work(engine)
    except Exception as exc:
        if not is_transient(exc):
            raise
        lines = str(exc).strip().splitlines()
        raise DatabaseUnreachable(lines[0] if lines else type(exc).__name__) from exc
    finally:
        engine.dispose()


async def call_db(function: Callable[..., T], *args: Any) -> T:
    """Run a database call in a worker thread, so the event loop never waits on it; an unreachable database
    becomes `Unavailable` (503)."""
    try:
        return await asyncio.to_thread(function, *args)
    except Exception as exc:
        if is_transient(exc):
            raise Unavailable("the ledger database is unreachable; try again later") from exc
        raise
