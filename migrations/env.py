"""Alembic runs this for every command. It migrates the engine handed over in `config.attributes["engine"]`, or
one built from the `sqlalchemy.url` option, and only online: the ledger has no use for SQL scripts."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from gateway.ledger.database import make_engine
from gateway.ledger.models import Base

# Any constant shared by every replica; PostgreSQL serialises concurrent upgrades on it.
_ADVISORY_LOCK_KEY = 0x7469657267617465  # "tiergate"


def run_migrations() -> None:
    config = context.config
    engine: Engine | None = config.attributes.get("engine")
    own = engine is None
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no database URL: pass one with sqlalchemy.url or attributes['engine']")
        engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
                compare_type=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
                context.run_migrations()
    finally:
        if own:
            engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("the ledger's migrations run online only")
run_migrations()
