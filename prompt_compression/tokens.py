"""Token counting for frontier models, offline, with tools counted the way OpenAI renders them.

OpenAI does not send tool schemas to the model as JSON: it renders them as TypeScript-like declarations in the
system prompt (`namespace functions { type f = (_: {...}) => any; }`), which is why counting the JSON overestimates.
`render_functions_namespace` writes that rendering (our own reading of the published format; OpenAI's cookbook
`num_tokens_for_tools` and the API agree with it within a few tokens per tool). Messages follow the cookbook's
accounting: 3 tokens per message, 1 more for a name, 3 to prime the reply.

For the local model the gateway supplies its own `TokenCounter` (chat template, then the model's tokenizer).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import tiktoken

from router.chat import ChatRequest, Message, Tool

TokenCounter = Callable[[ChatRequest], int]
"""Prompt tokens of a whole request as one model would see it (messages and tools)."""

_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
_TOKENS_PER_TOOL_CALL = 3
"""Call framing around each tool call's name and arguments in an assistant message (an estimate)."""


def use_bundled_tiktoken_files() -> None:
    """Point tiktoken at the encodings shipped in litellm's wheel, unless TIKTOKEN_CACHE_DIR is set already.

    tiktoken downloads encodings on first use, which fails offline. `find_spec` locates litellm without importing
    it (its import takes seconds).
    """
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return
    bundled = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    if bundled.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)


def encoding_for_model(model: str) -> str:
    """tiktoken's encoding name for an OpenAI model, `o200k_base` for models it does not know (newer ones)."""
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base"


def _literal(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _ts_type(schema: Any, indent: str) -> str:
    """The TypeScript type OpenAI renders for one JSON Schema node."""
    if not isinstance(schema, dict):
        return "any"
    if "enum" in schema and isinstance(schema["enum"], list):
        return " | ".join(_literal(v) for v in schema["enum"]) or "never"
    if "const" in schema:
        return _literal(schema["const"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " | ".join(_ts_type(s, indent) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_type({**schema, "type": k}, indent) for k in kind)
    if kind in ("object", "dict"):
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return "object"
        inner = indent + "  "
        body = _ts_properties(properties, schema.get("required"), inner)
        return "{\n" + body + indent + "}"
    if kind in ("array", "list", "tuple"):
        item = _ts_type(schema.get("items"), indent)
        return f"({item})[]" if " | " in item else f"{item}[]"
    if kind in ("integer", "number", "float", "int"):
        return "number"
    if kind in ("string", "boolean", "null"):
        return str(kind)
    return "any"


def _ts_properties(properties: dict[str, Any], required: Any, indent: str) -> str:
    needed = set(required) if isinstance(required, list) else set()
    lines: list[str] = []
    for name, schema in properties.items():
        if isinstance(schema, dict):
            description = schema.get("description")
            if isinstance(description, str) and description:
                lines.extend(f"{indent}// {line}" for line in description.splitlines())
            if "default" in schema:
                lines.append(f"{indent}// default: {_literal(schema['default'])}")
        optional = "" if name in needed else "?"
        lines.append(f"{indent}{name}{optional}: {_ts_type(schema, indent)},")
    return "".join(line + "\n" for line in lines)


def render_functions_namespace(tools: Sequence[Tool]) -> str:
    """The tools as OpenAI shows them to the model."""
    parts = ["# Tools\n\n## functions\n\nnamespace functions {\n\n"]
    for tool in tools:
        if tool.description:
            parts.extend(f"// {line}\n" for line in tool.description.splitlines())
        properties = tool.parameters.get("properties")
        if isinstance(properties, dict) and properties:
            body = _ts_properties(properties, tool.parameters.get("required"), "")
            parts.append(f"type {tool.name} = (_: {{\n{body}}}) => any;\n\n")
        else:
            parts.append(f"type {tool.name} = () => any;\n\n")
    parts.append("} // namespace functions")
    return "".join(parts)


class FrontierTokenCounter:
    """Counts prompt tokens for OpenAI-style frontier models with tiktoken; usable as a `TokenCounter`."""

    def __init__(self, encoding: str = "o200k_base") -> None:
        use_bundled_tiktoken_files()
        self.encoding = tiktoken.get_encoding(encoding)

    @classmethod
    def for_model(cls, model: str) -> FrontierTokenCounter:
        return cls(encoding_for_model(model))

    def count_text(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def count_tools(self, tools: Sequence[Tool]) -> int:
        """Tokens the tool declarations add, including the system message that carries them."""
        if not tools:
            return 0
        return _TOKENS_PER_MESSAGE + self.count_text(render_functions_namespace(tools))

    def count_message(self, message: Message) -> int:
        tokens = _TOKENS_PER_MESSAGE + self.count_text(message.role)
        if message.content:
            tokens += self.count_text(message.content)
        if message.name:
            tokens += _TOKENS_PER_NAME + self.count_text(message.name)
        for call in message.tool_calls:
            tokens += _TOKENS_PER_TOOL_CALL + self.count_text(call.name) + self.count_text(call.arguments)
        return tokens

    def count_request(self, request: ChatRequest) -> int:
        tokens = _REPLY_PRIMING + sum(self.count_message(m) for m in request.messages)
        return tokens + self.count_tools(request.tools)

    def __call__(self, request: ChatRequest) -> int:
        return self.count_request(request)
