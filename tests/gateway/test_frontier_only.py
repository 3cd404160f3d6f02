"""A frontier-only gateway (`local_models: []`): the real server and a scripted upstream on loopback, no model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.gateway_server import GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

EASY = [{"role": "user", "content": "Hi there!"}]

# A privacy pin: what matches it must stay local, so with no local model it fails instead of leaving.
RULES = """
version: 1
threshold: 0.5
rules:
  - name: secrets-stay-local
    when: {text: {matches: 'TOP-SECRET'}}
    action: local
    fallback: false
    enforce: true
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier")) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir: Path = tmp_path_factory.mktemp("frontier_only")
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    config: dict[str, Any] = {
        "local_models": [],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
        ],
        "routing": {"rules_file": str(rules)},
    }
    with GatewayProcess(config, workdir) as gw:  # start() waits for /readyz to answer 200
        yield gw


@pytest.fixture()
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=30)


def test_ready_without_a_local_model(gateway: GatewayProcess) -> None:
    r = httpx.get(gateway.url + "/readyz", timeout=10)
    assert r.status_code == 200
    assert r.json()["ready"] is True
    assert r.json()["models"] == {"gpt-test": {"tier": "frontier", "ready": True, "reason": None, "queue_depth": 0}}


def test_model_list_has_no_local_name(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["auto", "frontier", "gpt-test"]


def test_auto_answers_from_the_frontier(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    before = len(upstream.requests)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=EASY)
    answer = raw.parse()
    assert answer.choices[0].message.content == "from the frontier"
    assert raw.headers["x-tiergate-tier"] == "frontier"
    assert raw.headers["x-tiergate-model"] == "gpt-test"
    assert raw.headers["x-tiergate-escalated"] == "no"  # there is no local tier to escalate from
    assert len(upstream.requests) == before + 1


def test_auto_streams_from_the_frontier(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="auto", messages=EASY, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from the frontier"


def test_local_is_an_unknown_model(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    before = len(upstream.requests)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="local", messages=EASY)
    assert "no local model is configured" in caught.value.message
    assert len(upstream.requests) == before


def test_a_privacy_pin_fails_rather_than_leave(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    before = len(upstream.requests)
    secret = [{"role": "user", "content": "Summarise TOP-SECRET plan B"}]
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="auto", messages=secret)
    assert caught.value.status_code == 503
    assert len(upstream.requests) == before  # nothing reached the frontier provider


def test_metrics_count_frontier_answers(gateway: GatewayProcess, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="auto", messages=EASY)
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    answered = [line for line in text.splitlines() if line.startswith("tiergate_requests_total{")]
    assert any('tier="frontier"' in line and 'status="200"' in line for line in answered)
    assert not any('tier="local"' in line for line in answered)
    assert not [line for line in text.splitlines() if line.startswith("tiergate_escalations_total{")]
