"""The compressor's entry point: settings, results, and what it promises the gateway."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from prompt_compression.compressor import CompressionResult, Compressor
from prompt_compression.settings import CompressionSettings
from prompt_compression.tokens import FrontierTokenCounter
from router.chat import ChatRequest, Message, Tool

TOOL = Tool(
    "get_weather",
    "Get the current weather in a given location. The data comes from a **paid** provider, refreshed every ten "
    "minutes, and covers most cities of the world.",
    {
        "type": "object",
        "title": "GetWeather",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        "required": ["location"],
    },
)


def _request() -> ChatRequest:
    raw = {"model": "local", "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": ["..."]}
    return ChatRequest("r1", "local", [Message("user", "Weather in Oslo?")], tools=[TOOL], raw=raw)


def test_settings_reject_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        CompressionSettings(max_tool=3)  # type: ignore[call-arg]


def test_compression_shrinks_and_reports_both_counts() -> None:
    counter = FrontierTokenCounter()
    request = _request()
    snapshot = copy.deepcopy(request)
    result = Compressor(CompressionSettings(description_chars=60), counter).compress(request, None, None)
    assert isinstance(result, CompressionResult)
    assert request == snapshot
    assert result.tokens_before == counter(request)
    assert result.tokens_after == counter(result.request)
    assert result.tokens_after < result.tokens_before
    assert result.header == f"{result.tokens_before}->{result.tokens_after}"
    assert result.changed and result.tools_dropped == ()
    assert result.request.tools[0].description == "Get the current weather in a given location."
    assert result.request.raw == {}  # the client's body no longer describes the request: nobody may forward it
    assert request.raw != {}


def test_disabled_compression_passes_the_request_through() -> None:
    request = _request()
    result = Compressor(CompressionSettings(enabled=False), FrontierTokenCounter()).compress(request, 1, "s")
    assert result.request is request and result.request.raw
    assert result.tokens_before == result.tokens_after
    assert not result.changed


def test_nothing_to_compact_returns_the_input_itself() -> None:
    plain = Tool("f", "Does f.", {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]})
    request = ChatRequest("r1", "local", [Message("user", "run f with 3")], tools=[plain])
    result = Compressor(CompressionSettings(), FrontierTokenCounter()).compress(request)
    assert result.request is request and not result.changed


def test_settings_budget_applies_when_the_caller_gives_none() -> None:
    many = [Tool(f"tool_{i}", f"Tool number {i} does thing {i}.", {"type": "object"}) for i in range(6)]
    request = ChatRequest("r1", "local", [Message("user", "do thing 3 with tool 3")], tools=many)
    counter = FrontierTokenCounter()
    budget = counter(ChatRequest("x", "local", request.messages, tools=many[:2]))
    result = Compressor(CompressionSettings(budget_tokens=budget), counter).compress(request)
    assert result.tokens_after <= budget
    assert "tool_3" in [t.name for t in result.request.tools]
