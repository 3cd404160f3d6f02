"""GBNF grammars that constrain only what must be constrained: a tool call, or a JSON answer.

Sampling under a grammar checks it against the whole vocabulary at every step (about 3.5x slower with Gemma's 262k
tokens), so free text is never constrained. Grammars are built from JSON Schema by llama-cpp-python's converter and
cached by the schema's text, since agents send the same tools on every step.
"""

from __future__ import annotations

import copy
import json
import logging
from functools import lru_cache
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from router.chat import ChatRequest, NamedToolChoice, Tool

log = logging.getLogger("tiergate.local_models")

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments schema, with unlisted properties disallowed where it is silent, so a small model cannot wander."""
    out = copy.deepcopy(schema)
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def tool_call_schema(tools: list[Tool]) -> dict[str, Any]:
    """`{"name": <one tool>, "arguments": <its schema>}` for any of `tools`."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": _closed(t.parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


@lru_cache(maxsize=256)
def _grammar_from_schema_text(schema_text: str) -> LlamaGrammar:
    return LlamaGrammar.from_json_schema(schema_text, verbose=False)


@lru_cache(maxsize=1)
def _json_object_grammar() -> LlamaGrammar:
    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


def grammar_for_schema(schema: dict[str, Any]) -> LlamaGrammar:
    try:
        # Not sort_keys: the converter keeps the schema's property order, and the order is what the model writes.
        # Sorted, a tool call came out as {"arguments": ..., "name": ...} with arguments alphabetical, so a call cut
        # short by max_tokens lost its name, and arguments lost the order the tool's author gave them. The cache key
        # is the same text: an agent resends identical tools, so identical text, on every step.
        return _grammar_from_schema_text(json.dumps(schema))
    except Exception as exc:  # the converter rejects some schemas (e.g. Python-style types); JSON still holds
        log.warning("could not build a grammar from a JSON schema (%s); constraining to any JSON object", exc)
        return _json_object_grammar()


def tool_call_grammar(request: ChatRequest) -> LlamaGrammar:
    tools = request.tools
    if isinstance(request.tool_choice, NamedToolChoice):
        tools = [t for t in tools if t.name == request.tool_choice.name]
    return grammar_for_schema(tool_call_schema(tools))


def response_format_grammar(request: ChatRequest) -> LlamaGrammar | None:
    fmt = request.response_format
    if fmt.type == "json_schema":
        return grammar_for_schema(fmt.json_schema or _ANY_OBJECT)
    if fmt.type == "json_object":
        return _json_object_grammar()
    return None
