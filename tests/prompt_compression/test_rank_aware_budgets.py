"""The best-ranked kept tool keeps its descriptions; the other kept tools, less likely to be called, get less."""

from __future__ import annotations

from prompt_compression.compressor import Compressor
from prompt_compression.schema import compact_tool
from prompt_compression.settings import CompressionSettings
from prompt_compression.structure import structural_differences
from router.chat import ChatRequest, Message, NamedToolChoice, Tool


def _tool(name: str, description: str, parameter: str, parameter_description: str) -> Tool:
    schema = {"type": "string", "description": parameter_description}
    return Tool(name, description, {"type": "object", "properties": {parameter: schema}, "required": [parameter]})


TOOLS = [
    _tool(
        "get_weather",
        "Current weather and temperature forecast for a city, in metric or imperial units as requested.",
        "location",
        "City and country, e.g. Oslo, Norway",
    ),
    _tool(
        "translate_text",
        "Translate text from one language into another language, detecting the source language itself.",
        "target",
        "ISO 639-1 code of the language to translate into, e.g. fr",
    ),
    _tool(
        "send_email",
        "Send an email message to a recipient address, with an optional subject line and plain-text body.",
        "recipient",
        "Address to send to, such as ana@example.com",
    ),
]
SETTINGS = CompressionSettings(
    max_tools=3,
    relative_score_cutoff=0,
    description_chars=100,
    parameter_description_chars=60,
    other_description_chars=30,
    other_parameter_description_chars=0,
)


def _chars(request: ChatRequest) -> int:
    return sum(len(m.content or "") for m in request.messages) + sum(len(repr(t)) for t in request.tools)


def _request(*turns: str, tool_choice: NamedToolChoice | str = "auto") -> ChatRequest:
    messages = [Message("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(turns)]
    return ChatRequest("r1", "local", messages, tools=list(TOOLS), tool_choice=tool_choice)  # type: ignore[arg-type]


def _by_name(request: ChatRequest) -> dict[str, Tool]:
    return {t.name: t for t in request.tools}


def _parameter_descriptions(tool: Tool) -> list[str]:
    return [p["description"] for p in tool.parameters["properties"].values() if "description" in p]


def test_best_ranked_tool_keeps_full_budgets_and_the_others_get_the_smaller_ones() -> None:
    result = Compressor(SETTINGS, _chars).compress(_request("Weather forecast for Oslo tomorrow?"))
    tools = _by_name(result.request)
    assert set(tools) == {t.name for t in TOOLS}
    assert tools["get_weather"] == compact_tool(TOOLS[0], 100, 60)
    assert _parameter_descriptions(tools["get_weather"]) == ["City and country, e.g. Oslo, Norway"]
    for name in ("translate_text", "send_email"):
        assert len(tools[name].description) <= 31  # 30 characters, plus `…` where a word was cut
        assert tools[name].description
        assert _parameter_descriptions(tools[name]) == []
    originals = {t.name: t for t in TOOLS}
    assert all(structural_differences(originals[t.name], t) == [] for t in result.request.tools)


def test_tool_named_by_tool_choice_keeps_full_budgets() -> None:
    request = _request("Weather forecast for Oslo, and mail it to Ana", tool_choice=NamedToolChoice("send_email"))
    tools = _by_name(Compressor(SETTINGS, _chars).compress(request).request)
    assert tools["send_email"] == compact_tool(TOOLS[2], 100, 60)
    assert tools["get_weather"] == compact_tool(TOOLS[0], 100, 60)
    assert _parameter_descriptions(tools["translate_text"]) == []


def test_large_full_description_tools_gives_every_tool_full_budgets() -> None:
    settings = SETTINGS.model_copy(update={"full_description_tools": 10})
    result = Compressor(settings, _chars).compress(_request("Weather forecast for Oslo tomorrow?"))
    assert result.request.tools == [compact_tool(t, 100, 60) for t in TOOLS]


def test_which_tool_has_full_budgets_stays_the_same_within_a_session() -> None:
    compressor = Compressor(SETTINGS, _chars)
    first = compressor.compress(_request("Weather forecast for Oslo tomorrow?"), None, "s1")
    # The next turn ranks translate_text first; it is in the session's set, so the set is rendered as before and
    # llama.cpp's prompt cache stays valid.
    turn2 = _request("Weather forecast for Oslo tomorrow?", "Sunny, 12 C.", "Translate that text into French")
    second = compressor.compress(turn2, None, "s1")
    assert second.request.tools == first.request.tools
    fresh = Compressor(SETTINGS, _chars).compress(turn2, None, "s2")
    assert _by_name(fresh.request)["translate_text"] == compact_tool(TOOLS[1], 100, 60)
    assert _by_name(fresh.request)["get_weather"] != _by_name(first.request)["get_weather"]
