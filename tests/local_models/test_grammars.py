"""The tool-call grammar makes the model write what a reader needs first: the function's name, then its arguments
in the order the tool declares them."""

from __future__ import annotations

import re

from local_models.grammars import grammar_for_schema, tool_call_schema
from router.chat import Tool

WEATHER = Tool(
    "get_weather",
    "Current weather.",
    {
        "type": "object",
        "properties": {"zeta_city": {"type": "string"}, "alpha_unit": {"type": "string"}},
        "required": ["zeta_city", "alpha_unit"],
    },
)


def _sequence(grammar_text: str, rule: str) -> list[str]:
    """The `*-kv` rules a grammar rule's body names, in order."""
    body = next(line for line in grammar_text.splitlines() if line.startswith(f"{rule} ::="))
    return re.findall(r"([\w-]+)-kv", body)


def test_the_name_comes_before_the_arguments_and_arguments_keep_their_declared_order() -> None:
    text = grammar_for_schema(tool_call_schema([WEATHER]))._grammar

    assert _sequence(text, "root") == ["name", "arguments"]
    assert _sequence(text, "arguments") == ["arguments-zeta-city", "arguments-alpha-unit"]
