"""The direct frontier path, over real HTTP against the scripted upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any, cast

import pytest
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.wire import ChatCompletionRequest
from router.chat import ChatRequest, Completion, StreamEnd, StreamEvent, TextDelta, ToolCallDelta, Usage
from router.errors import Unavailable, UpstreamError, UpstreamTimeout
from router.frontier import (
    FrontierModelSettings,
    LiteLLMBackend,
    OpenAICompatibleBackend,
    build_frontier_backend,
)

KEY_ENV = "TIERGATE_TEST_FRONTIER_KEY"
KEY = "sk-test-frontier-123"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


def settings_for(up: ScriptedUpstream, **overrides: Any) -> FrontierModelSettings:
    values: dict[str, Any] = {
        "name": "frontier-test",
        "model": "gpt-4.1-mini",
        "api_base": up.base_url,
        "api_key_env": KEY_ENV,
        "timeout_s": 2.0,
        "connect_timeout_s": 1.0,
        "max_retries": 2,
        "backoff_s": 0.01,
        "max_backoff_s": 1.0,
    }
    values.update(overrides)
    return FrontierModelSettings(**values)


def chat_request(**fields: Any) -> ChatRequest:
    """A request as the gateway builds it from a client's body (which it keeps as `raw`)."""
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "Say hi"}], **fields}
    return ChatCompletionRequest.model_validate(body).to_internal("req-1", raw=body)


def complete(settings: FrontierModelSettings, request: ChatRequest) -> Completion:
    async def run() -> Completion:
        backend = build_frontier_backend(settings)
        await backend.start()
        try:
            return await backend.complete(request)
        finally:
            await backend.close()

    return asyncio.run(run())


def stream(settings: FrontierModelSettings, request: ChatRequest) -> tuple[list[StreamEvent], Exception | None]:
    """The events a stream gave, and the error that ended it (None when it ended normally)."""
    events: list[StreamEvent] = []

    async def run() -> Exception | None:
        backend = build_frontier_backend(settings)
        await backend.start()
        try:
            async for event in backend.stream(request):
                events.append(event)
        except Exception as exc:
            return exc
        finally:
            await backend.close()
        return None

    return events, asyncio.run(run())


def arguments_by_index(events: list[StreamEvent]) -> dict[int, tuple[str | None, str | None, str]]:
    """What an OpenAI client assembles from tool-call deltas: index -> (id, name, arguments)."""
    calls: dict[int, tuple[str | None, str | None, str]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            call_id, name, arguments = calls.get(event.index, (None, None, ""))
            calls[event.index] = (call_id or event.id, name or event.name, arguments + event.arguments)
    return calls


# --- answers -----------------------------------------------------------------------------------------------------


def test_text_answer_sends_the_client_body_with_only_the_model_replaced(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("Hello there", usage=(21, 3, 16)))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    request = chat_request(
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
        metadata={"trace": "t-1"},
        logit_bias={"50256": -100},
        x_vendor_extension={"keep": True},
    )

    answer = complete(settings_for(upstream), request)

    assert answer.text == "Hello there"
    assert answer.tool_calls == []
    assert answer.finish_reason == "stop"
    assert answer.usage == Usage(prompt_tokens=21, completion_tokens=3, cached_tokens=16)
    assert answer.model == "gpt-4.1-mini"
    [received] = upstream.requests
    assert received.path == "/v1/chat/completions"
    assert received.body == {**request.raw, "model": "gpt-4.1-mini"}
    assert request.raw["model"] == "auto"  # the client's body itself is left as it was
    assert received.headers["Authorization"] == f"Bearer {KEY}"
    assert received.headers["Content-Type"] == "application/json"


def test_a_changed_request_is_serialised_from_its_fields(upstream: ScriptedUpstream) -> None:
    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    original = chat_request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "error: city missing"},
        ],
        tools=[
            {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": weather}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
        ],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0.2,
        max_tokens=50,
        stream=True,
    )
    # What a compressor does: a new request, without the client's raw body.
    changed = dataclasses.replace(original, tools=original.tools[:1], raw={})

    complete(settings_for(upstream), changed)

    [received] = upstream.bodies
    assert received["model"] == "gpt-4.1-mini"
    assert [t["function"]["name"] for t in received["tools"]] == ["get_weather"]
    assert received["tools"][0]["function"]["parameters"] == weather
    assert received["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert [m["role"] for m in received["messages"]] == ["system", "user", "assistant", "tool"]
    assert received["messages"][2]["tool_calls"][0]["id"] == "call_9"
    assert received["messages"][3]["tool_call_id"] == "call_9"
    assert received["temperature"] == 0.2
    assert received["max_tokens"] == 50
    assert "stream" not in received  # complete() asks for a whole answer whatever the client's body said


def test_tool_call_answer(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Oslo", "unit": "celsius"}, call_id="call_abc"))

    answer = complete(settings_for(upstream), chat_request())

    assert answer.finish_reason == "tool_calls"
    [call] = answer.tool_calls
    assert (call.id, call.name) == ("call_abc", "get_weather")
    assert json.loads(call.arguments) == {"city": "Oslo", "unit": "celsius"}


def test_stream_relays_text_and_ends_with_usage(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("Hello, streaming world", usage=(12, 7, 3)))

    events, error = stream(settings_for(upstream), chat_request(stream=True))

    assert error is None
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, streaming world"
    assert sum(isinstance(e, TextDelta) for e in events) > 1
    assert events[-1] == StreamEnd(finish_reason="stop", usage=Usage(12, 7, 3), model="gpt-4.1-mini")
    assert sum(isinstance(e, StreamEnd) for e in events) == 1
    [body] = upstream.bodies
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}  # asked for although the client did not


def test_stream_relays_tool_call_deltas(upstream: ScriptedUpstream) -> None:
    first, second = {"city": "Oslo"}, {"zone": "Europe/Oslo", "format": "24h"}
    upstream.push(Reply.tool_calls_of([("get_weather", first), ("get_time", second)], chunk_chars=5))

    events, error = stream(settings_for(upstream), chat_request(stream=True))

    assert error is None
    calls = arguments_by_index(events)
    assert calls[0][:2] == ("call_1", "get_weather")
    assert calls[1][:2] == ("call_2", "get_time")
    assert json.loads(calls[0][2]) == first
    assert json.loads(calls[1][2]) == second
    assert sum(isinstance(e, ToolCallDelta) for e in events) > 4  # the arguments arrived in pieces
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "tool_calls"


def test_requests_share_one_pooled_connection(upstream: ScriptedUpstream) -> None:
    async def run() -> None:
        backend = build_frontier_backend(settings_for(upstream))
        await backend.start()
        try:
            for _ in range(3):
                await backend.complete(chat_request())
                _ = [e async for e in backend.stream(chat_request(stream=True))]
        finally:
            await backend.close()

    asyncio.run(run())

    assert len(upstream.requests) == 6
    assert len({r.client_port for r in upstream.requests}) == 1


# --- failures ---------------------------------------------------------------------------------------------------


def test_500_then_success_is_retried(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.status(500, "boom"), Reply.text("recovered"))

    answer = complete(settings_for(upstream), chat_request())

    assert answer.text == "recovered"
    assert len(upstream.requests) == 2
    assert upstream.bodies[0] == upstream.bodies[1]


@pytest.mark.parametrize("wait", [{"retry_after_ms": 300}, {"retry_after": "0.3"}], ids=["retry-after-ms", "seconds"])
def test_429_is_retried_after_the_wait_the_upstream_asks_for(upstream: ScriptedUpstream, wait: dict[str, Any]) -> None:
    upstream.push(Reply.status(429, "slow down", **wait), Reply.text("fine now"))

    answer = complete(settings_for(upstream, backoff_s=0.01), chat_request())

    assert answer.text == "fine now"
    first, second = upstream.requests
    assert 0.3 <= second.received_at - first.received_at < 0.9


def test_429_asking_for_more_than_max_backoff_is_returned_at_once(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.status(429, "quota exhausted", retry_after=30))
    started = time.monotonic()

    with pytest.raises(UpstreamError) as caught:
        complete(settings_for(upstream, max_backoff_s=1.0), chat_request())

    assert time.monotonic() - started < 1.0
    assert caught.value.upstream_status == 429
    assert caught.value.retryable
    assert "quota exhausted" in caught.value.message
    assert len(upstream.requests) == 1


def test_400_is_not_retried_and_carries_the_upstream_message(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.status(400, "Invalid 'messages[0].content': empty", error_code="invalid_value"))

    with pytest.raises(UpstreamError) as caught:
        complete(settings_for(upstream, max_retries=3), chat_request())

    assert type(caught.value) is UpstreamError
    assert not caught.value.retryable
    assert caught.value.upstream_status == 400
    assert "Invalid 'messages[0].content': empty" in caught.value.message
    assert caught.value.code == "invalid_value"
    assert len(upstream.requests) == 1


def test_a_provider_key_quoted_by_the_upstream_never_reaches_the_error(upstream: ScriptedUpstream) -> None:
    quoted = "sk-proj-AbCd****************************wxYz"
    upstream.push(Reply.status(401, f"Incorrect API key provided: {quoted}. See your account.", error_code="bad_key"))

    with pytest.raises(UpstreamError) as caught:
        complete(settings_for(upstream), chat_request())

    assert caught.value.upstream_status == 401
    assert "Incorrect API key provided: [redacted]" in caught.value.message
    assert "AbCd" not in caught.value.message and "wxYz" not in caught.value.message
    assert KEY not in caught.value.message


def test_hang_times_out_within_the_configured_timeout(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.hang())
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout):
        complete(settings_for(upstream, timeout_s=0.3, max_retries=0), chat_request())

    assert 0.3 <= time.monotonic() - started < 0.9


def test_each_retry_of_a_hang_is_bounded_too(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.hang(), Reply.hang())
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout) as caught:
        complete(settings_for(upstream, timeout_s=0.2, max_retries=1), chat_request())

    assert caught.value.retryable
    assert len(upstream.requests) == 2
    assert time.monotonic() - started < 1.2


def test_connection_reset_is_a_retryable_upstream_error(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.reset(), Reply.reset(), Reply.reset())

    with pytest.raises(UpstreamError) as caught:
        complete(settings_for(upstream, max_retries=2), chat_request())

    assert type(caught.value) is UpstreamError
    assert caught.value.retryable
    assert caught.value.upstream_status is None
    assert len(upstream.requests) == 3


def test_connection_reset_then_success_is_retried(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.reset(), Reply.text("second try"))

    assert complete(settings_for(upstream), chat_request()).text == "second try"


def test_refused_connection_is_a_retryable_upstream_error() -> None:
    with socket.socket() as sock:  # a port that nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = FrontierModelSettings(
        name="nowhere", model="m", api_base=f"http://127.0.0.1:{port}/v1", api_key_env=None, max_retries=0
    )

    with pytest.raises(UpstreamError) as caught:
        complete(settings, chat_request())

    assert caught.value.retryable


@pytest.mark.parametrize("clean_end", [False, True], ids=["connection-dropped", "body-ended-early"])
def test_stream_cut_midway_raises_and_is_not_retried(upstream: ScriptedUpstream, clean_end: bool) -> None:
    upstream.push(Reply.cut("The answer is forty-two, because", after_chunks=2, clean_end=clean_end))

    events, error = stream(settings_for(upstream, max_retries=2), chat_request(stream=True))

    assert isinstance(error, UpstreamError)
    assert [e for e in events if isinstance(e, TextDelta)]  # content had gone onward: no retry may follow
    assert not any(isinstance(e, StreamEnd) for e in events)
    assert len(upstream.requests) == 1


def test_stream_stalled_midway_times_out(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.stall("Thinking about it", after_chunks=1))
    started = time.monotonic()

    events, error = stream(settings_for(upstream, timeout_s=0.3), chat_request(stream=True))

    assert isinstance(error, UpstreamTimeout)
    assert events and not any(isinstance(e, StreamEnd) for e in events)
    assert time.monotonic() - started < 0.9
    assert len(upstream.requests) == 1


def test_stream_failing_before_any_content_is_retried(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.status(503), Reply.cut("lost", after_chunks=0), Reply.text("third time lucky"))

    events, error = stream(settings_for(upstream, max_retries=2), chat_request(stream=True))

    assert error is None
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "third time lucky"
    assert len(upstream.requests) == 3


def test_closing_a_stream_early_drops_the_upstream_connection(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("word " * 200, chunk_chars=5, chunk_delay_s=0.01))

    async def read_one_event() -> StreamEvent:
        backend = build_frontier_backend(settings_for(upstream))
        await backend.start()
        try:
            events = cast(AsyncGenerator[StreamEvent, None], backend.stream(chat_request(stream=True)))
            first = await anext(events)
            await events.aclose()
            assert backend.queue_depth == 0
            return first
        finally:
            await backend.close()

    assert isinstance(asyncio.run(read_one_event()), TextDelta)
    assert upstream.wait_for(lambda: upstream.requests[0].client_went_away, timeout_s=2.0)


# --- keys and readiness ------------------------------------------------------------------------------------------


def test_missing_key_means_not_ready_and_no_request(
    upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)

    async def run() -> None:
        backend = build_frontier_backend(settings_for(upstream))
        await backend.start()  # no crash
        assert not backend.ready
        assert KEY_ENV in (backend.not_ready_reason or "")
        with pytest.raises(Unavailable):
            await backend.complete(chat_request())
        await backend.close()

    asyncio.run(run())
    assert upstream.requests == []


def test_no_key_needed_sends_no_authorization(upstream: ScriptedUpstream) -> None:
    answer = complete(settings_for(upstream, api_key_env=None), chat_request())

    assert answer.text == "ok"
    assert "Authorization" not in upstream.requests[0].headers


def test_extra_headers_are_sent(upstream: ScriptedUpstream) -> None:
    complete(settings_for(upstream, extra_headers={"HTTP-Referer": "https://tiergate.test"}), chat_request())

    assert upstream.requests[0].headers["HTTP-Referer"] == "https://tiergate.test"


def test_queue_depth_counts_requests_in_flight() -> None:
    async def run() -> tuple[int, int]:
        async with ScriptedUpstream([Reply.text("slow", delay_s=0.2)]) as up:  # started from async code
            backend = build_frontier_backend(settings_for(up))
            await backend.start()
            task = asyncio.create_task(backend.complete(chat_request()))
            await asyncio.sleep(0.1)
            during = backend.queue_depth
            await task
            after = backend.queue_depth
            await backend.close()
            return during, after

    assert asyncio.run(run()) == (1, 0)


def test_backend_is_chosen_by_provider(upstream: ScriptedUpstream) -> None:
    direct = build_frontier_backend(settings_for(upstream))
    translated = build_frontier_backend(settings_for(upstream, provider="litellm", model="anthropic/claude-sonnet-4-5"))

    assert isinstance(direct, OpenAICompatibleBackend)
    assert isinstance(translated, LiteLLMBackend)
    assert (direct.tier, direct.name) == ("frontier", "frontier-test")
    assert not direct.ready  # not started yet
