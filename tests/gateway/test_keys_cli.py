"""`tiergate keys create|list|revoke` as an operator runs it, on SQLite (through a config file) and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from support.gateway_server import REPO

from gateway.ledger.models import ApiKeyRow

PG_HOST, PG_PORT, PG_DATABASE, PG_USER = "127.0.0.1", 5432, "test", "postgres"


def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@dataclass(frozen=True)
class Created:
    id: str
    secret: str
    stdout: str
    stderr: str


def create_key(source: list[str], *options: str) -> Created:
    """Runs `tiergate keys create` and reads the id and the secret from what it printed."""
    done = tiergate("keys", "create", *options, *source)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    secrets = [line for line in lines if line.startswith("tg-")]
    assert len(secrets) == 1, done.stdout
    key_id = next(word for word in lines[0].split() if word.startswith("key_"))
    return Created(key_id, secrets[0], done.stdout, done.stderr)


def _pg_url(schema: str) -> str:
    url = URL.create(
        "postgresql+psycopg",
        username=PG_USER,
        host=PG_HOST,
        port=PG_PORT,
        database=PG_DATABASE,
        query={"options": f"-csearch_path={schema}"} if schema else {},
    )
    return url.render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A schema of its own on the local PostgreSQL, dropped afterwards; skipped where no server answers."""
    import psycopg

    try:
        psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DATABASE, user=PG_USER, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {PG_HOST}:{PG_PORT}: {str(exc).strip().splitlines()[0]}")
    schema = f"keys_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_pg_url(""))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass(frozen=True)
class Database:
    url: str
    source: list[str]
    """How the CLI is told where the database is."""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        config = tmp_path / "tiergate.yaml"
        config.write_text(yaml.safe_dump({"ledger": {"database_url": url}}))
        return Database(url, ["--config", str(config)])  # the way an operator points it at the gateway's config
    url = request.getfixturevalue("postgres_url")
    return Database(url, ["--database-url", url])


def stored_rows(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return [
                {c.key: getattr(row, c.key) for c in ApiKeyRow.__table__.columns}
                for row in session.scalars(select(ApiKeyRow))
            ]
    finally:
        engine.dispose()


def test_create_prints_the_secret_once_and_stores_only_its_digest(database: Database) -> None:
    created = create_key(
        database.source,
        "--name",
        "alice",
        "--rpm",
        "60",
        "--budget-day",
        "2.50",
        "--policy-tag",
        "local-only",
        "--store-prompts",
    )
    assert len(created.secret) > 40
    second = create_key(database.source, "--name", "ops", "--admin")
    assert second.secret != created.secret and second.id != created.id

    rows = {row["id"]: row for row in stored_rows(database.url)}
    alice = rows[created.id]
    assert alice["key_hash"] == hashlib.sha256(created.secret.encode()).hexdigest()
    assert alice["name"] == "alice" and alice["admin"] is False and rows[second.id]["admin"] is True
    assert alice["requests_per_minute"] == 60 and str(alice["budget_usd_per_day"]).startswith("2.5")
    assert alice["policy_tags"] == ["local-only"] and alice["store_prompts"] is True
    assert alice["revoked_at"] is None
    for row in rows.values():
        assert created.secret not in repr(row) and second.secret not in repr(row)

    listed = tiergate("keys", "list", *database.source)
    as_json = tiergate("keys", "list", "--json", *database.source)
    assert listed.returncode == 0 and as_json.returncode == 0
    keys = {k["id"]: k for k in json.loads(as_json.stdout)}
    assert keys[created.id]["scope"] == "client" and keys[second.id]["scope"] == "admin"
    assert keys[created.id]["policy_tags"] == ["local-only"] and keys[created.id]["budget_usd_per_day"] == "2.5"
    assert created.id in listed.stdout and "alice" in listed.stdout
    for output in (listed.stdout + listed.stderr, as_json.stdout + as_json.stderr):
        for secret in (created.secret, second.secret):
            assert secret not in output
            assert hashlib.sha256(secret.encode()).hexdigest() not in output


def test_revoke_marks_the_key_and_unknown_ids_are_an_error(database: Database) -> None:
    created = create_key(database.source, "--name", "temp")
    done = tiergate("keys", "revoke", created.id, *database.source)
    assert done.returncode == 0, done.stderr
    (row,) = stored_rows(database.url)
    assert row["revoked_at"] is not None
    keys = json.loads(tiergate("keys", "list", "--json", *database.source).stdout)
    assert keys[0]["revoked"] is not None

    again = tiergate("keys", "revoke", created.id, *database.source)
    assert again.returncode == 0 and "already revoked" in again.stdout

    missing = tiergate("keys", "revoke", "key_doesnotexist", *database.source)
    assert missing.returncode == 1 and "no key 'key_doesnotexist'" in missing.stderr


def test_bad_options_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    for options in (["--over-budget", "sometimes"], ["--rpm", "0"], ["--budget-day", "lots"]):
        done = tiergate("keys", "create", "--name", "x", *options, "--database-url", url)
        assert done.returncode == 2, options
        assert "tg-" not in done.stdout
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_an_unreachable_database_is_reported_without_a_traceback(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    done = tiergate("keys", "list", "--database-url", url)
    assert done.returncode == 1
    assert "cannot be reached" in done.stderr and "Traceback" not in done.stderr
