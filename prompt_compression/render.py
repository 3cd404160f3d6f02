"""How compacted tools are written into a local model's prompt: one minified JSON object per line.

Chat templates that support tools (Qwen, Hermes, Llama 3) write each tool as `json.dumps` output with spaces and an
OpenAI wrapper (`{"type": "function", "function": {...}}`); in a small model's tokenizer that framing costs about
a third of a typical tool's tokens and says nothing. The local tier renders tools itself (it builds its grammar from
the same schemas), so it can write them minified and unwrapped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from router.chat import Tool


def tool_json(tool: Tool) -> str:
    """One tool as minified JSON: `name`, `description` (when there is one), `parameters`."""
    body: dict[str, Any] = {"name": tool.name}
    if tool.description:
        body["description"] = tool.description
    body["parameters"] = tool.parameters
    return orjson.dumps(body).decode()


def render_tools(tools: Sequence[Tool]) -> str:
    """The tool block of a local prompt: one line per tool, in the request's order."""
    return "\n".join(tool_json(t) for t in tools)


def template_tools(tools: Sequence[Tool]) -> str:
    """The tools as a typical tool-aware chat template writes them (the baseline `render_tools` is measured against)."""
    return "\n".join(
        json.dumps(
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            },
            ensure_ascii=False,
        )
        for t in tools
    )
