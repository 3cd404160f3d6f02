"""Frontier token counting: offline tiktoken, with tools rendered the way OpenAI shows them to the model."""

from __future__ import annotations

import tiktoken

from prompt_compression.tokens import FrontierTokenCounter, encoding_for_model, render_functions_namespace
from router.chat import ChatRequest, Message, Tool

WEATHER = Tool(
    "get_weather",
    "Get the weather.",
    {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "array", "items": {"type": "integer"}},
            "options": {"type": "object", "properties": {"hourly": {"type": "boolean", "default": False}}},
        },
        "required": ["location"],
    },
)


def test_counts_text_with_the_named_encoding_offline() -> None:
    counter = FrontierTokenCounter("o200k_base")
    text = "Tiergate routes requests between a small model and a frontier API."
    assert counter.count_text(text) == len(tiktoken.get_encoding("o200k_base").encode(text))
    assert FrontierTokenCounter("cl100k_base").encoding.name == "cl100k_base"


def test_model_names_pick_their_encoding() -> None:
    assert encoding_for_model("gpt-4o") == "o200k_base"
    assert encoding_for_model("gpt-4") == "cl100k_base"
    assert encoding_for_model("some-future-model") == "o200k_base"


def test_tools_render_as_a_typescript_namespace() -> None:
    text = render_functions_namespace([WEATHER])
    assert text.startswith("# Tools\n\n## functions\n\nnamespace functions {")
    assert "// Get the weather.\ntype get_weather = (_: {\n" in text
    assert "// City name\nlocation: string,\n" in text
    assert 'unit?: "celsius" | "fahrenheit",' in text
    assert "days?: number[]," in text
    assert "  // default: false\n  hourly?: boolean,\n" in text
    assert text.endswith("}) => any;\n\n} // namespace functions")


def test_request_count_adds_messages_and_tools() -> None:
    counter = FrontierTokenCounter()
    bare = ChatRequest("r", "gpt-4o", [Message("user", "Weather in Oslo?")])
    with_tools = ChatRequest("r", "gpt-4o", bare.messages, tools=[WEATHER])
    assert counter(bare) == 3 + (3 + counter.count_text("user") + counter.count_text("Weather in Oslo?"))
    assert counter(with_tools) - counter(bare) == 3 + counter.count_text(render_functions_namespace([WEATHER]))
