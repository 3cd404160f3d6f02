"""Routing end to end: the real gateway, the embedded model, and a scripted OpenAI-compatible upstream on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from router.rules import default_rules_path

pytestmark = pytest.mark.model

EASY = [{"role": "user", "content": "Hi there!"}]
HARD = [
    {
        "role": "user",
        "content": "Prove step by step that the sum of the first n odd numbers is n^2, then implement a Python "
        "function that checks it for n up to 10^6, compare its complexity with a closed-form check, and explain "
        "the trade-offs. Also derive the formula for the sum of the first n squares.",
    }
]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier")) as up:
        yield up


def _config(upstream: ScriptedUpstream, rules_file: Path | None = None, **frontier: Any) -> dict[str, Any]:
    return {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {
                "name": "gpt-test",
                "model": "gpt-4.1-mini",
                "api_base": upstream.base_url,
                "api_key_env": None,
                "timeout_s": 1.0,
                "max_retries": 1,
                "backoff_s": 0.05,
                **frontier,
            }
        ],
        "routing": {"rules_file": str(rules_file)} if rules_file else {},
    }


@pytest.fixture(scope="module")
def gateway(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(_config(upstream), tmp_path_factory.mktemp("routing")) as gw:
        yield gw


@pytest.fixture()
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=60)


def _create(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, httpx.Headers]:
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    return raw.parse(), raw.headers


def test_auto_sends_an_easy_request_local(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    before = len(upstream.requests)
    r, headers = _create(client, model="auto", messages=EASY, max_tokens=8, temperature=0)
    assert headers["x-tiergate-tier"] == "local"
    assert headers["x-tiergate-model"] == "gemma3-270m" == r.model
    assert headers["x-tiergate-rule"] == "default"
    assert 0.0 <= float(headers["x-tiergate-score"]) < 0.5
    assert headers["x-tiergate-escalated"] == "no"
    assert len(upstream.requests) == before


def test_auto_sends_a_hard_request_to_the_frontier(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    before = len(upstream.requests)
    r, headers = _create(client, model="auto", messages=HARD, max_tokens=50)
    assert headers["x-tiergate-tier"] == "frontier"
    assert headers["x-tiergate-model"] == "gpt-test"
    assert float(headers["x-tiergate-score"]) >= 0.5
    assert r.choices[0].message.content == "from the frontier"
    assert 0 <= float(headers["x-tiergate-overhead-ms"]) < 1000  # the gateway's own share of the latency
    assert len(upstream.requests) == before + 1
    sent = upstream.requests[-1].body
    assert sent["model"] == "gpt-4.1-mini" and sent["messages"] == HARD


def test_frontier_stream_passes_through(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="frontier", messages=EASY, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from the frontier"


def test_a_malformed_local_tool_call_escalates(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Oslo", "unit": "celsius"}, call_id="call_up"))
    # Three tokens cannot hold a whole call: the local answer is cut short and fails verification.
    r, headers = _create(
        client,
        model="auto",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=3,
    )
    assert headers["x-tiergate-tier"] == "frontier"
    assert headers["x-tiergate-escalated"].startswith("verification:")
    call = r.choices[0].message.tool_calls[0]
    assert call.id == "call_up" and call.function.name == "get_weather"


def test_a_streamed_malformed_tool_call_escalates_cleanly(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Rome", "unit": "celsius"}, call_id="call_s"))
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=3,
        stream=True,
    )
    assert raw.headers["x-tiergate-escalated"].startswith("verification:")
    names = [
        call.function.name
        for chunk in raw.parse()
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function and call.function.name
    ]
    assert names == ["get_weather"]  # only the frontier's call: nothing of the failed local answer leaked


def test_upstream_500_then_success_is_retried(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    before = len(upstream.requests)
    upstream.push(Reply.status(500), Reply.text("recovered"))
    r, headers = _create(client, model="frontier", messages=EASY)
    assert r.choices[0].message.content == "recovered"
    assert headers["x-tiergate-escalated"] == "no"
    assert len(upstream.requests) == before + 2


def test_a_hanging_upstream_times_out_and_falls_back_local(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.hang(), Reply.hang())
    started = time.monotonic()
    r, headers = _create(client, model="auto", messages=HARD, max_tokens=8, temperature=0)
    assert headers["x-tiergate-tier"] == "local"
    assert headers["x-tiergate-escalated"] == "fallback:UpstreamTimeout"
    assert r.model == "gemma3-270m" and r.choices[0].message.content
    assert time.monotonic() - started < 30


def test_a_pinned_frontier_request_does_not_fall_back(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.status(503), Reply.status(503))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="frontier", messages=EASY)
    assert info.value.status_code == 502
    assert info.value.type == "upstream_error"


def test_models_lists_both_tiers(client: openai.OpenAI) -> None:
    assert {"gemma3-270m", "gpt-test", "local", "frontier", "auto"} <= {m.id for m in client.models.list()}


def test_rules_hot_reload_while_requests_flow(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    text = default_rules_path().read_text()
    rules.write_text(text.replace("threshold: 0.5", "threshold: 0.99"))
    with GatewayProcess(_config(upstream, rules), tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=60)
        _, headers = _create(client, model="auto", messages=HARD, max_tokens=4, temperature=0)
        assert headers["x-tiergate-tier"] == "local"

        rules.write_text(text.replace("threshold: 0.5", "threshold: 0.01"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, headers = _create(client, model="auto", messages=HARD, max_tokens=4)
            if headers["x-tiergate-tier"] == "frontier":
                break
            time.sleep(0.1)
        assert headers["x-tiergate-tier"] == "frontier"
        version = httpx.get(gw.url + "/admin/rules").json()["version"]

        rules.write_text("threshold: [this is not a number\n")
        deadline = time.monotonic() + 5
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = httpx.get(gw.url + "/admin/rules").json()
            if status["last_error"]:
                break
            time.sleep(0.1)
        assert status["last_error"] and status["version"] == version
        _, headers = _create(client, model="auto", messages=HARD, max_tokens=4)
        assert headers["x-tiergate-tier"] == "frontier"  # the previous rules stay in force


def test_a_full_local_queue_spills_to_the_frontier(gateway: GatewayProcess, client: openai.OpenAI) -> None:
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": "Write a very long story about a dragon, a knight and a city."}],
        "max_tokens": 400,
        "temperature": 1.0,
        "seed": 3,
        "stream": True,
    }
    waiting: list[int] = []

    def queued() -> None:
        r = httpx.post(
            gateway.base_url + "/chat/completions", json={**body, "max_tokens": 2, "stream": False}, timeout=120
        )
        waiting.append(r.status_code)

    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", gateway.base_url + "/chat/completions", json=body) as running,
    ):
        lines = running.iter_lines()  # kept referenced: a closed iterator would close the connection
        next(line for line in lines if line.startswith("data: "))
        thread = threading.Thread(target=queued)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # one generating, one waiting: the local queue (of one) is full
            depth = httpx.get(gateway.url + "/readyz").json()["models"]["gemma3-270m"]["queue_depth"]
            if depth == 2:
                break
            time.sleep(0.02)
        assert depth == 2
        r, headers = _create(client, model="auto", messages=EASY, max_tokens=8)
        assert headers["x-tiergate-escalated"] == "spill:QueueFull", dict(headers)
        assert headers["x-tiergate-tier"] == "frontier"
        assert r.choices[0].message.content == "from the frontier"
    thread.join(120)
    assert waiting == [200]
