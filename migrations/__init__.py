"""Alembic environment and versions for the ledger schema. Applied with `tiergate db upgrade` or at start-up;
see `gateway.ledger.database` for how Alembic is configured (in code, with no alembic.ini)."""
