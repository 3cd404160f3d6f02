"""The ledger through the real server: rows with the right tokens and costs, session feedback, the cost report,
and nothing lost on SIGTERM under load."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow
from gateway.ledger.pricing import load_price_map
from gateway.ledger.settings import LedgerSettings

pytestmark = pytest.mark.model

UPSTREAM_MODEL = "gpt-4.1-mini"
USAGE = (1200, 300, 200)  # prompt, completion, cached: what the scripted upstream reports


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("frontier answer", usage=USAGE)) as up:
        yield up


def _config(upstream: ScriptedUpstream) -> dict[str, Any]:
    return {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {"name": "gpt-test", "model": UPSTREAM_MODEL, "api_base": upstream.base_url, "api_key_env": None}
        ],
    }


@pytest.fixture(scope="module")
def gateway(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(_config(upstream), tmp_path_factory.mktemp("ledger-e2e")) as gw:
        yield gw


def _rows(gateway: GatewayProcess, expected: int, timeout_s: float = 10) -> dict[str, RequestRow]:
    engine = make_engine(gateway.config["ledger"]["database_url"])
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as c:
                rows = {r.id: r for r in c.execute(select(RequestRow)).all()}
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows  # type: ignore[return-value]
            time.sleep(0.05)
    finally:
        engine.dispose()


def _price(model: str, tokens_in: int, tokens_out: int, cached: int) -> Decimal:
    entry = load_price_map()[model]
    per_in, per_out = Decimal(str(entry["input_cost_per_token"])), Decimal(str(entry["output_cost_per_token"]))
    per_cached = Decimal(str(entry.get("cache_read_input_token_cost") or entry["input_cost_per_token"]))
    return (tokens_in - cached) * per_in + cached * per_cached + tokens_out * per_out


def test_requests_become_rows_with_their_tokens_and_costs(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    local = client.chat.completions.with_raw_response.create(
        model="local",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        temperature=0,
        extra_headers={"X-Tiergate-Session": "costs-1"},
    )
    frontier = client.chat.completions.with_raw_response.create(
        model="frontier", messages=[{"role": "user", "content": "Hi"}], extra_headers={"X-Tiergate-Session": "costs-1"}
    )
    local_id, frontier_id = local.headers["x-request-id"], frontier.headers["x-request-id"]
    assert local.parse().id == local_id
    rows = _rows(gateway, 2)
    lrow, frow = rows[local_id], rows[frontier_id]

    usage = local.parse().usage
    assert (lrow.tier, lrow.model, lrow.session_id) == ("local", "gemma3-270m", "costs-1")
    assert (lrow.tokens_in, lrow.tokens_out) == (usage.prompt_tokens, usage.completion_tokens)
    assert lrow.rule == "pinned" and lrow.status == 200 and lrow.latency_ms > 0
    per_hour = LedgerSettings().local_cost.usd_per_hour
    assert Decimal(0) < lrow.cost_usd <= per_hour * Decimal(str(lrow.latency_ms)) / 3_600_000

    assert (frow.tier, frow.model) == ("frontier", "gpt-test")
    assert (frow.tokens_in, frow.tokens_out, frow.tokens_cached) == USAGE[:1] + USAGE[1:2] + USAGE[2:]
    assert frow.cost_usd == _price(UPSTREAM_MODEL, *USAGE[:2], USAGE[2])
    # the counterfactual: the same tokens on the default frontier model
    default_model = LedgerSettings().default_frontier_model
    assert frow.counterfactual_usd == _price(default_model, *USAGE[:2], USAGE[2])
    assert lrow.counterfactual_usd == _price(default_model, lrow.tokens_in, lrow.tokens_out, 0)
    assert "messages" not in str(frow.prompt)  # prompts are not stored by default


def test_session_feedback_marks_every_step_and_the_report_matches(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    ids: dict[str, list[str]] = {"won": [], "lost": []}
    for session, model in [("won", "frontier"), ("won", "frontier"), ("lost", "frontier")]:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "step"}],
            extra_headers={"X-Tiergate-Session": f"report-{session}"},
        )
        ids[session].append(raw.headers["x-request-id"])
    for session, value in [("won", True), ("lost", False)]:
        r = httpx.post(
            gateway.base_url + "/feedback",
            json={"session_id": f"report-{session}", "metric": "success", "value": value},
        )
        assert r.status_code == 200, r.text

    bad = httpx.post(gateway.base_url + "/feedback", json={"session_id": "report-won", "metric": "nope", "value": 1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "metric"

    rows = _rows(gateway, 5)
    mine = [rows[i] for i in ids["won"] + ids["lost"]]
    report = httpx.get(gateway.base_url + "/reports/cost", params={"group_by": "model"}).json()
    group = next(g for g in report["groups"] if g["group"] == "gpt-test")
    # Frontier rows of this module: these three, the one from the first test (no outcome: not a success).
    frontier_rows = [r for r in rows.values() if r.model == "gpt-test"]
    spend = sum((r.cost_usd + r.wasted_cost_usd for r in frontier_rows), Decimal(0))
    assert group["requests"] == len(frontier_rows)
    assert group["successes"] == 1  # one successful session, however many steps
    assert Decimal(group["spend_usd"]) == spend
    assert Decimal(group["spend_per_success_usd"]) == spend / 1
    assert all(r.session_id in ("report-won", "report-lost") for r in mine)


def test_sigterm_under_load_loses_no_accepted_row(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    slow = ScriptedUpstream(default=Reply.text("slow", delay_s=0.3))
    with slow:
        config = _config(slow)
        gw = GatewayProcess(config, tmp_path).start()
        answered: list[str] = []
        lock = threading.Lock()

        def one() -> None:
            try:
                r = httpx.post(
                    gw.base_url + "/chat/completions",
                    timeout=20,
                    json={"model": "frontier", "messages": [{"role": "user", "content": "x"}]},
                )
            except httpx.TransportError:
                return
            if r.status_code == 200:
                with lock:
                    answered.append(r.headers["x-request-id"])

        threads = [threading.Thread(target=one) for _ in range(30)]
        for t in threads:
            t.start()
            time.sleep(0.01)
        time.sleep(0.15)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM is the normal end.
        assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        assert "Finished server process" in gw.log()
        for t in threads:
            t.join(30)
    assert answered, "no request finished before the shutdown"
    rows = _rows(gw, len(answered), timeout_s=1)
    assert set(answered) <= set(rows)
