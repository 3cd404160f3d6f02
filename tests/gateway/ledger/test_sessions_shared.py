"""Two gateway replicas sharing one ledger database and one Redis session store: the steps of one agent run alternate
between them, and they still count as one session, in order, with the router on each replica seeing the steps that
the other one answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess
from support.redis_server import forget_sessions, require_redis, unique_session
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow, SessionRow

pytestmark = [pytest.mark.redis, pytest.mark.model]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("frontier step")) as up:
        yield up


@pytest.fixture
def replicas(
    upstream: ScriptedUpstream, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatewayProcess]]:
    """Two replicas on one ledger database: a SQLite file, and a PostgreSQL schema of its own when the server runs."""
    redis_url = require_redis()
    config: dict[str, Any] = {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
        ],
        "routing": {"session_store_url": redis_url},
        "ledger": {"database_url": database_url},
    }
    started: list[GatewayProcess] = []
    try:
        for name in ("replica-a", "replica-b"):  # one after the other: the first one migrates the shared database
            started.append(GatewayProcess(config, tmp_path_factory.mktemp(name)).start())
        yield started
    finally:
        for replica in started:
            replica.stop()


def _wait_for_rows(database_url: str, session_id: str, expected: int, timeout_s: float = 15) -> list[RequestRow]:
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as c:
                rows = list(c.execute(select(RequestRow).where(RequestRow.session_id == session_id)).all())
            if len(rows) >= expected or time.monotonic() > deadline:
                return sorted(rows, key=lambda r: r.created_at)  # type: ignore[arg-type, return-value]
            time.sleep(0.05)
    finally:
        engine.dispose()


def test_one_session_across_two_replicas_is_one_ordered_run(replicas: list[GatewayProcess], tmp_path: Path) -> None:
    session = unique_session("shared-run")
    # Six steps alternating between the replicas; the third and sixth on the local tier (two tokens each).
    plan = [("frontier", 0), ("frontier", 1), ("local", 0), ("frontier", 1), ("frontier", 0), ("local", 1)]
    clients = [openai.OpenAI(base_url=r.base_url, api_key="x", max_retries=0) for r in replicas]
    answered_by: dict[str, int] = {}
    try:
        for step, (model, replica) in enumerate(plan, start=1):
            raw = clients[replica].chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": f"step {step}"}],
                max_tokens=2,
                temperature=0,
                extra_headers={"X-Tiergate-Session": session, "X-Tiergate-Task": "task-42"},
            )
            assert raw.headers["x-tiergate-tier"] == model
            answered_by[raw.headers["x-request-id"]] = replica
    finally:
        forget_sessions(session)

    database_url = replicas[0].config["ledger"]["database_url"]
    rows = _wait_for_rows(database_url, session, len(plan))
    assert [answered_by[r.id] for r in rows] == [replica for _, replica in plan]  # both replicas wrote the run
    assert [r.step for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.tier for r in rows] == [model for model, _ in plan]

    # What the router knew at each step (stored in the row's signals): every earlier step, whichever replica took it.
    frontier_before = 0
    for row, (model, _) in zip(rows, plan, strict=True):
        signals = row.signals or {}
        assert signals.get("session_steps", 0) == row.step - 1
        assert signals.get("session_escalations", 0) == frontier_before
        frontier_before += model == "frontier"

    engine = make_engine(database_url)
    try:
        with engine.connect() as c:
            stored = c.execute(select(SessionRow).where(SessionRow.id == session)).one()
    finally:
        engine.dispose()
    assert (stored.step_count, stored.task_id) == (len(plan), "task-42")
    assert stored.first_seen <= rows[0].created_at and stored.last_seen >= rows[-1].created_at
