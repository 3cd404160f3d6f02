"""Tool selection keeps what must stay, picks by relevance, and stays stable within a session."""

from __future__ import annotations

from prompt_compression.compressor import Compressor
from prompt_compression.settings import CompressionSettings
from router.chat import ChatRequest, Message, NamedToolChoice, Tool, ToolCall


def _tool(name: str, description: str) -> Tool:
    return Tool(name, description, {"type": "object", "properties": {"query": {"type": "string"}}})


TOOLS = [
    _tool("get_weather", "Current weather and temperature forecast for a city."),
    _tool("send_email", "Send an email message to a recipient address."),
    _tool("book_flight", "Book a flight ticket between two airports on a date."),
    _tool("convert_currency", "Convert an amount of money from one currency to another."),
    _tool("translate_text", "Translate text from one language into another language."),
    _tool("search_restaurants", "Find restaurants near a location by cuisine."),
]


def _chars(request: ChatRequest) -> int:
    return sum(len(m.content or "") for m in request.messages) + sum(len(repr(t)) for t in request.tools)


def _request(*messages: Message, tool_choice: NamedToolChoice | str = "auto") -> ChatRequest:
    return ChatRequest("r1", "local", list(messages), tools=list(TOOLS), tool_choice=tool_choice)  # type: ignore[arg-type]


def _names(request: ChatRequest) -> list[str]:
    return [t.name for t in request.tools]


def test_most_relevant_tools_are_kept_in_request_order() -> None:
    compressor = Compressor(CompressionSettings(max_tools=2, relative_score_cutoff=0), _chars)
    result = compressor.compress(_request(Message("user", "Will I need an umbrella? Weather forecast for Oslo")))
    assert "get_weather" in _names(result.request)
    assert len(result.request.tools) == 2
    kept = [TOOLS.index(next(t for t in TOOLS if t.name == n)) for n in _names(result.request)]
    assert kept == sorted(kept)
    assert set(result.tools_dropped) == {t.name for t in TOOLS} - set(_names(result.request))


def test_named_tool_choice_is_always_kept() -> None:
    compressor = Compressor(CompressionSettings(max_tools=1, relative_score_cutoff=0), _chars)
    request = _request(Message("user", "weather in Oslo please"), tool_choice=NamedToolChoice("send_email"))
    assert _names(compressor.compress(request).request) == ["send_email"]


def test_tools_already_called_are_kept() -> None:
    compressor = Compressor(CompressionSettings(max_tools=2, relative_score_cutoff=0), _chars)
    request = _request(
        Message("user", "Book me a flight to Rome and tell me the weather there"),
        Message("assistant", None, tool_calls=(ToolCall("c1", "translate_text", '{"query": "Rome"}'),)),
        Message("tool", "Roma", tool_call_id="c1"),
        Message("user", "Now the weather forecast"),
    )
    names = _names(compressor.compress(request).request)
    assert "translate_text" in names
    assert "get_weather" in names


def test_selection_is_stable_within_a_session() -> None:
    compressor = Compressor(CompressionSettings(max_tools=3, relative_score_cutoff=0), _chars)
    first = compressor.compress(_request(Message("user", "weather forecast for Oslo")), None, "s1")
    # The next turn ranks other tools higher too, but its best match is already in the set: the set stays.
    turn2 = _request(
        Message("user", "weather forecast for Oslo"),
        Message("assistant", "Sunny."),
        Message("user", "weather forecast and temperature in Paris, then translate it"),
    )
    second = compressor.compress(turn2, None, "s1")
    assert _names(second.request) == _names(first.request)
    fresh = Compressor(CompressionSettings(max_tools=3, relative_score_cutoff=0), _chars).compress(turn2, None, "s2")
    assert _names(fresh.request) != _names(first.request)


def test_session_set_changes_when_the_best_tool_is_missing() -> None:
    compressor = Compressor(CompressionSettings(max_tools=2, relative_score_cutoff=0), _chars)
    compressor.compress(_request(Message("user", "weather forecast for Oslo")), None, "s1")
    result = compressor.compress(_request(Message("user", "convert 100 dollars to euros currency")), None, "s1")
    assert "convert_currency" in _names(result.request)


def test_budget_drops_least_relevant_tools_but_keeps_min_tools() -> None:
    compressor = Compressor(CompressionSettings(max_tools=10, min_tools=1, relative_score_cutoff=0), _chars)
    request = _request(Message("user", "translate this text into French language"))
    full = compressor.compress(request)
    result = compressor.compress(request, budget_tokens=full.tokens_after // 5)
    assert _names(result.request) == ["translate_text"]
    assert result.tokens_after < full.tokens_after


def test_relative_cutoff_drops_weak_matches_but_keeps_a_second_named_intent() -> None:
    compressor = Compressor(CompressionSettings(relative_score_cutoff=0.5), _chars)
    one = compressor.compress(_request(Message("user", "Weather forecast and temperature in Oslo")))
    assert _names(one.request) == ["get_weather"]
    # "email" scores far below the weather words, but it is named in send_email's name and no kept tool covers it
    two = compressor.compress(_request(Message("user", "Weather forecast and temperature in Oslo, then email it")))
    assert _names(two.request) == ["get_weather", "send_email"]


def test_no_lexical_match_keeps_every_tool() -> None:
    compressor = Compressor(CompressionSettings(relative_score_cutoff=0.5), _chars)
    result = compressor.compress(_request(Message("user", "오슬로 날씨 알려줘")))
    assert result.tools_dropped == ()
