"""`tiergate replay` on a ledger filled through the real server: every auto request went to the frontier tier under
the rules in force; a stricter file would send the easy ones local, and replay must count exactly those and
project the cost down by exactly their logged cost (no local answers were seen to price them from)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow
from router.rules import default_rules_path

REPO = Path(__file__).resolve().parents[2]
USAGE = (1000, 200, 0)

EASY = ["Hi there", "What colour is the sky?", "Say hello to Ana", "URGENT: say ok"]
"""Low scores: the new threshold sends them local, except the last, which a new text rule keeps on the frontier."""
HARD = [
    "Prove step by step that the sum of two even integers is even, then compare this proof with one by induction "
    "and explain the trade-offs. Also derive the formula for the integral of x^2 and solve 3x + 5 = 20.",
    "Implement a Python function that parses ```json``` input, refactor it for speed, explain the complexity step "
    "by step, and compare two algorithms for sorting the result: merge sort vs quicksort trade-offs.",
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("frontier answer", usage=USAGE)) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("replay")
    everything_frontier = workdir / "rules-now.yaml"
    everything_frontier.write_text(default_rules_path().read_text().replace("threshold: 0.5", "threshold: 0.0"))
    config: dict[str, Any] = {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
        ],
        "routing": {"rules_file": str(everything_frontier)},
        "ledger": {"store_prompts": True},
    }
    with GatewayProcess(config, workdir) as gw:
        yield gw


def _auto_rows(gateway: GatewayProcess, expected: int, timeout_s: float = 10) -> dict[str, RequestRow]:
    engine = make_engine(gateway.config["ledger"]["database_url"])
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as c:
                rows = {r.id: r for r in c.execute(select(RequestRow).where(RequestRow.requested_model == "auto"))}
                total = c.execute(select(func.count()).select_from(RequestRow)).scalar_one()
            if (len(rows) >= expected and total > expected) or time.monotonic() > deadline:
                return rows  # type: ignore[return-value]
            time.sleep(0.05)
    finally:
        engine.dispose()


def test_replay_counts_the_tier_changes_and_projects_cost_and_quality(gateway: GatewayProcess, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    ids: dict[str, str] = {}
    for prompt in EASY + HARD:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": prompt}]
        )
        assert raw.headers["x-tiergate-tier"] == "frontier"  # the rules in force send everything there
        ids[prompt] = raw.headers["x-request-id"]
        score = float(raw.headers["x-tiergate-score"])
        assert score < 0.5 if prompt in EASY else score >= 0.5  # the new file's threshold will split them
    client.chat.completions.create(model="frontier", messages=[{"role": "user", "content": "pinned"}])
    for prompt, value in [(EASY[0], True), (HARD[0], False)]:
        feedback = {"request_id": ids[prompt], "metric": "success", "value": value}
        assert httpx.post(gateway.base_url + "/feedback", json=feedback).status_code == 200
    rows = _auto_rows(gateway, len(ids))
    assert len(rows) == len(ids)

    stricter = tmp_path / "rules-new.yaml"
    text = default_rules_path().read_text()
    text = text.replace(
        "rules:\n",
        "rules:\n  - name: urgent\n    when: {last_user_text: {contains: URGENT}}\n    action: frontier\n",
        1,
    )
    stricter.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "replay", "--rules", str(stricter), "--config", str(gateway.config_path),
         "--since", "1h", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    moved = {ids[p] for p in EASY if "URGENT" not in p}
    assert report["requests"] == len(ids)  # the pinned request is not the rules' to decide
    assert report["skipped"] == {}
    assert report["tier_changes"] == {"local_to_frontier": 0, "frontier_to_local": len(moved)}
    assert set(report["changed_request_ids"]) == moved
    logged = sum((rows[i].cost_usd for i in ids.values()), Decimal(0))
    assert Decimal(report["cost_usd"]) == logged
    # No local answers in the window to price from: the moved requests are counted at 0, the rest keep their cost.
    assert Decimal(report["projected_cost_usd"]) == logged - sum((rows[i].cost_usd for i in moved), Decimal(0))
    assert Decimal(report["projected_cost_usd"]) < logged
    assert report["outcomes"] == 2 and report["success_rate"] == 0.5
    # The easy request with an outcome moves local, where no answer was observed: left out, the hard one (failed)
    # keeps its outcome.
    assert report["unestimated_outcomes"] == 1 and report["projected_success_rate"] == 0.0

    # The same run as a table, for people.
    table = subprocess.run(
        [sys.executable, "-m", "gateway", "replay", "--rules", str(stricter), "--config", str(gateway.config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert f"frontier -> local {len(moved)}" in table.stdout and "projected" in table.stdout


def test_rules_that_read_text_skip_requests_without_a_stored_prompt(tmp_path: Path) -> None:
    """A ledger row without a prompt cannot answer a text condition; it is skipped with the reason, not guessed."""
    from router.evaluation.ledger_source import LoggedRequest
    from router.evaluation.replay import replay
    from router.rules import load_rules
    from router.signals import SignalContext

    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(
        "version: 1\nthreshold: 0.5\nrules:\n  - name: urgent\n    when: {text: {contains: URGENT}}\n"
        "    action: frontier\n"
    )
    row = LoggedRequest(
        id="r1", created_at=None, session_id=None, tier="frontier", model="gpt-test", rule="default",  # type: ignore[arg-type]
        score=0.9, signals={"model": "auto", "content_tokens": 5}, prompt=None, tokens_in=10, tokens_out=2,
        tokens_cached=0, cost_usd=Decimal(1), wasted_cost_usd=Decimal(0), escalated=False, outcome=None,
    )  # fmt: skip
    result = replay([row], load_rules(rules_path), SignalContext(local_context_tokens=8192))
    assert result.replayed == []
    assert result.skipped == {"the rules read message text and no prompt was stored": 1}
