"""The litellm frontier backend, over real HTTP against the scripted upstream (litellm's `openai/` provider).

Importing litellm takes seconds, so this module's tests share one event loop (litellm caches its HTTP clients per
loop) and pay for the import once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.wire import ChatCompletionRequest
from router.chat import ChatRequest, StreamEnd, StreamEvent, TextDelta, ToolCallDelta, Usage
from router.errors import Unavailable, UpstreamError, UpstreamTimeout
from router.frontier import FrontierModelSettings, LiteLLMBackend, build_frontier_backend

KEY_ENV = "TIERGATE_TEST_LITELLM_KEY"
KEY = "sk-test-litellm-456"


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


def settings_for(up: ScriptedUpstream, **overrides: Any) -> FrontierModelSettings:
    values: dict[str, Any] = {
        "name": "translated",
        "provider": "litellm",
        "model": "openai/gpt-4.1-mini",
        "api_base": up.base_url,
        "api_key_env": KEY_ENV,
        "timeout_s": 5.0,
        "max_retries": 2,
        "backoff_s": 0.01,
        "max_backoff_s": 1.0,
    }
    values.update(overrides)
    return FrontierModelSettings(**values)


def chat_request(**fields: Any) -> ChatRequest:
    body: dict[str, Any] = {
        "model": "frontier",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        **fields,
    }
    return ChatCompletionRequest.model_validate(body).to_internal("req-2", raw=body)


def run_with(loop: asyncio.Runner, settings: FrontierModelSettings, call: Any) -> Any:
    """Start a backend for `settings`, await `call(backend)`, close it."""

    async def go() -> Any:
        backend = build_frontier_backend(settings)
        await backend.start()
        try:
            return await call(backend)
        finally:
            await backend.close()

    return loop.run(go())


async def collect(backend: Any, request: ChatRequest) -> tuple[list[StreamEvent], Exception | None]:
    events: list[StreamEvent] = []
    try:
        async for event in backend.stream(request):
            events.append(event)
    except Exception as exc:
        return events, exc
    return events, None


async def failure(awaitable: Awaitable[Any]) -> Exception:
    """The error `awaitable` raises (the test fails if it raises none)."""
    try:
        await awaitable
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


def test_text_answer_through_litellm(loop: asyncio.Runner, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("Sunny, 21 °C", usage=(30, 6, 0)))

    answer = run_with(loop, settings_for(upstream), lambda b: b.complete(chat_request()))

    assert answer.text == "Sunny, 21 °C"
    assert answer.usage == Usage(30, 6, 0)
    assert answer.finish_reason == "stop"
    [received] = upstream.requests
    assert received.body["model"] == "gpt-4.1-mini"  # litellm strips its provider prefix
    assert received.body["messages"] == [{"role": "user", "content": "Weather in Oslo?"}]
    assert received.headers["Authorization"] == f"Bearer {KEY}"


def test_tool_call_answer_through_litellm(loop: asyncio.Runner, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Oslo"}, call_id="call_x"))

    answer = run_with(loop, settings_for(upstream), lambda b: b.complete(chat_request()))

    assert answer.finish_reason == "tool_calls"
    [call] = answer.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("call_x", "get_weather", {"city": "Oslo"})


def test_stream_with_tool_call_deltas_and_usage(loop: asyncio.Runner, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Oslo", "unit": "celsius"}, chunk_chars=4, usage=(40, 9, 0)))

    events, error = run_with(loop, settings_for(upstream), lambda b: collect(b, chat_request(stream=True)))

    assert error is None
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].name == "get_weather"
    assert json.loads("".join(d.arguments for d in deltas)) == {"city": "Oslo", "unit": "celsius"}
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "tool_calls"
    assert end.usage == Usage(40, 9, 0)
    assert upstream.bodies[0]["stream_options"] == {"include_usage": True}


def test_429_is_retried_and_400_is_not(loop: asyncio.Runner, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.status(429, retry_after_ms=200), Reply.text("after the wait"), Reply.status(400, "bad schema"))

    async def call(backend: Any) -> tuple[Any, Exception]:
        answer = await backend.complete(chat_request())
        return answer, await failure(backend.complete(chat_request()))

    answer, error = run_with(loop, settings_for(upstream), call)

    assert answer.text == "after the wait"
    first, second, _ = upstream.requests
    assert second.received_at - first.received_at >= 0.2
    assert isinstance(error, UpstreamError)
    assert (error.upstream_status, error.retryable) == (400, False)
    assert "bad schema" in error.message
    assert len(upstream.requests) == 3


def test_reset_is_a_retryable_error_without_upstream_status(loop: asyncio.Runner, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.reset(), Reply.reset())

    error = run_with(loop, settings_for(upstream, max_retries=1), lambda b: failure(b.complete(chat_request())))

    assert type(error) is UpstreamError
    assert error.retryable
    assert error.upstream_status is None
    assert len(upstream.requests) == 2


def test_stream_cut_midway_raises(loop: asyncio.Runner, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.cut("It is sunny in Oslo today", after_chunks=2))

    events, error = run_with(loop, settings_for(upstream), lambda b: collect(b, chat_request(stream=True)))

    assert isinstance(error, UpstreamError)
    assert any(isinstance(e, TextDelta) for e in events)
    assert not any(isinstance(e, StreamEnd) for e in events)
    assert len(upstream.requests) == 1


def test_hang_times_out(loop: asyncio.Runner, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.hang())
    settings = settings_for(upstream, timeout_s=0.3, max_retries=0)

    error = run_with(loop, settings, lambda b: failure(b.complete(chat_request())))

    assert isinstance(error, UpstreamTimeout)


def test_unknown_provider_and_missing_key_leave_the_model_unavailable(
    loop: asyncio.Runner, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = LiteLLMBackend(settings_for(upstream, model="no-such-provider-model"))
    loop.run(unknown.start())
    assert not unknown.ready
    assert "no-such-provider-model" in (unknown.not_ready_reason or "")

    monkeypatch.delenv(KEY_ENV)
    keyless = LiteLLMBackend(settings_for(upstream))
    loop.run(keyless.start())
    assert not keyless.ready
    assert isinstance(loop.run(failure(keyless.complete(chat_request()))), Unavailable)
    assert upstream.requests == []
