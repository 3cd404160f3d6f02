"""`tiergate export trajectories` on a ledger filled through the real server: Flow-GRPO steps carry their session's
feedback as reward, in step order, with the messages sent and the answer returned; SFT holds the frontier's answers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import func, insert, select
from support.gateway_server import LOCAL_TEST_MODEL, REPO, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.ledger.database import make_engine, upgrade
from gateway.ledger.models import OutcomeRow, RequestRow, SessionRow

pytestmark = pytest.mark.model

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
]


Steps = dict[str, list[dict[str, Any]]]
"""By session: what each step sent and got back (request id, tier, escalation, messages, answer)."""

# The frontier's answers, in the order the test asks for them.
FRONTIER_SCRIPT = [
    Reply.text("won: step 1"),
    Reply.text("won: step 3, after the local answer was cut short"),
    Reply.text("won: step 4, streamed"),
    Reply.tool_call("search", {"q": "flights to Oslo"}, call_id="call_s2"),
    Reply.text("lost: step 2"),
    Reply.text("unrated: step 1"),
    Reply.text("no session"),
]


@pytest.fixture
def filled_gateway(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, dict[str, list[dict[str, Any]]]]]:
    """A gateway whose ledger holds three sessions of one task (two rated, one not) and one request outside any
    session; yields it with what each session's steps sent and got back."""
    with ScriptedUpstream(FRONTIER_SCRIPT) as upstream:
        config = {
            # The local tier answers in two tokens: cut short, so an `auto` step that lands there escalates.
            "local_models": [{**LOCAL_TEST_MODEL, "default_max_tokens": 2}],
            "frontier_models": [
                {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
            ],
            "ledger": {"database_url": database_url, "store_prompts_for_sessions": True},
        }
        workdir = tmp_path / "gateway"
        workdir.mkdir()
        with GatewayProcess(config, workdir) as gateway:
            steps = _run_sessions(gateway)
            for session, value in [("won", True), ("lost", False)]:
                r = httpx.post(
                    gateway.base_url + "/feedback", json={"session_id": session, "metric": "success", "value": value}
                )
                assert r.status_code == 200, r.text
            yield gateway, steps


def _run_sessions(gateway: GatewayProcess) -> Steps:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    steps: Steps = {"won": [], "lost": [], "unrated": []}

    def ask(session: str | None, model: str, content: str, **options: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": content}]
        headers = {"X-Tiergate-Task": "trip"} | ({"X-Tiergate-Session": session} if session else {})
        if options.pop("stream", False):
            chunks = client.chat.completions.with_raw_response.create(
                model=model, messages=messages, stream=True, extra_headers=headers, **options
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks.parse() if c.choices)
            answer: dict[str, Any] = {"role": "assistant", "content": text}
        else:
            chunks = client.chat.completions.with_raw_response.create(
                model=model, messages=messages, extra_headers=headers, **options
            )
            message = chunks.parse().choices[0].message
            answer = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                answer["tool_calls"] = [c.model_dump() for c in message.tool_calls]
        step = {
            "request_id": chunks.headers["x-request-id"],
            "tier": chunks.headers["x-tiergate-tier"],
            "escalated": chunks.headers["x-tiergate-escalated"],
            "messages": messages,
            "response": answer,
        }
        if session is not None:
            steps[session].append(step)
        return step

    ask("won", "frontier", "Plan a trip to Oslo.")
    ask("won", "local", "Say yes.")
    cut_short = ask("won", "auto", "Hi")
    assert cut_short["escalated"].startswith("verification:"), cut_short  # the local answer failed; frontier answered
    ask("won", "frontier", "Book it.", stream=True)
    ask("lost", "frontier", "Find flights.", tools=TOOLS, tool_choice="required")
    ask("lost", "frontier", "Pick one.")
    ask("unrated", "frontier", "Where to?")
    ask(None, "frontier", "Outside any session.")
    _wait_for_rows(gateway.config["ledger"]["database_url"], 8)
    return steps


def _wait_for_rows(database_url: str, expected: int, timeout_s: float = 15) -> None:
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            with engine.connect() as c:
                if c.execute(select(func.count()).select_from(RequestRow)).scalar_one() >= expected:
                    return
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError(f"the ledger did not get {expected} rows in {timeout_s} s")


def _export(gateway: GatewayProcess, out: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    command = ["export", "trajectories", "--config", str(gateway.config_path), "--out", str(out), *args]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in out.read_bytes().splitlines()], done.stderr


def test_flow_grpo_rewards_match_session_feedback_and_sft_holds_frontier_answers(
    filled_gateway: tuple[GatewayProcess, Steps], tmp_path: Path
) -> None:
    gateway, steps = filled_gateway
    records, summary = _export(gateway, tmp_path / "grpo.jsonl", "--format", "flow-grpo", "--since", "1h")

    expected_reward = {"won": 1.0, "lost": 0.0}
    by_session: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_session.setdefault(record["session_id"], []).append(record)
    assert set(by_session) == {"won", "lost"}  # the unrated session is left out
    for session, sent in [(s, steps[s]) for s in ("won", "lost")]:
        exported = by_session[session]
        assert [r["step"] for r in exported] == list(range(1, len(sent) + 1))
        assert [r["request_id"] for r in exported] == [s["request_id"] for s in sent]
        for record, step in zip(exported, sent, strict=True):
            assert record["reward"] == expected_reward[session]
            assert record["success"] is (session == "won")
            assert record["task_id"] == "trip"
            assert record["tier"] == step["tier"]
            assert record["messages"] == step["messages"]
            assert record["response"] == step["response"]
    assert [r["escalated"] for r in by_session["won"]] == [False, False, True, False]
    assert "skipped 1 steps: session without an outcome (1 sessions" in summary
    assert "wrote 6 flow-grpo records" in summary

    others, summary = _export(gateway, tmp_path / "none.jsonl", "--format", "flow-grpo", "--task", "other-task")
    assert others == [] and "wrote 0 flow-grpo records" in summary

    # The same ledger as SFT data (one test, so that the ledger is filled once per database: the gateway is slow to
    # start on this machine).
    records, summary = _export(gateway, tmp_path / "sft.jsonl", "--format", "sft")

    frontier_steps = [s for session in steps.values() for s in session if s["tier"] == "frontier"]
    assert len(frontier_steps) == 6  # every step but the one the local model answered
    assert [r["metadata"]["request_id"] for r in records] == [s["request_id"] for s in frontier_steps]
    for record, step in zip(records, frontier_steps, strict=True):
        assert record["messages"] == [*step["messages"], step["response"]]
    # The request outside any session was answered by the frontier too, but its prompt was not stored.
    assert "skipped 1 steps: prompt not stored" in summary


def test_a_bad_since_is_refused_with_a_reason(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    command = ["export", "trajectories", "--format", "sft", "--since", "yesterday", "--out", str(tmp_path / "x.jsonl")]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *command, "--database-url", database],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--since must be an ISO 8601 date or time" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_steps_stay_in_receive_order_when_the_session_store_restarted_its_count(tmp_path: Path) -> None:
    """A gateway restart without Redis forgets the session, so its next step is numbered 1 again: the export keeps
    the order the steps happened in, with the store's numbers as labels."""
    database = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    upgrade(database)
    start = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    labels = [1, 2, 1, 2]  # the store counted 1, 2; the gateway restarted; it counted 1, 2 again
    zero = Decimal(0)
    rows = [
        {
            "id": f"req-{position}",
            "created_at": start + timedelta(seconds=position),
            "session_id": "run",
            "requested_model": "auto",
            "tier": "frontier",
            "model": "gpt-test",
            "tokens_in": 10,
            "tokens_out": 5,
            "tokens_cached": 0,
            "cost_usd": zero,
            "wasted_cost_usd": zero,
            "counterfactual_usd": zero,
            "escalated": False,
            "latency_ms": 1.0,
            "stream": False,
            "status": 200,
            "step": step,
            "prompt": [{"role": "user", "content": f"step at {position}"}],
            "response": {"role": "assistant", "content": f"answer {position}"},
        }
        for position, step in enumerate(labels)
    ]
    engine = make_engine(database)
    try:
        with engine.begin() as connection:
            connection.execute(insert(RequestRow), rows)
            connection.execute(
                insert(SessionRow),
                [{"id": "run", "first_seen": start, "last_seen": start + timedelta(seconds=3), "step_count": 4}],
            )
            connection.execute(
                insert(OutcomeRow),
                [{"session_id": "run", "metric": "success", "value": 1.0, "created_at": start + timedelta(minutes=1)}],
            )
    finally:
        engine.dispose()

    out = tmp_path / "steps.jsonl"
    command = ["export", "trajectories", "--format", "flow-grpo", "--out", str(out), "--database-url", database]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["request_id"] for r in records] == ["req-0", "req-1", "req-2", "req-3"]
    assert [r["step"] for r in records] == labels
    assert {r["reward"] for r in records} == {1.0}
