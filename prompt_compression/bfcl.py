"""BFCL's tool-calling questions as Tiergate requests, for the compression evaluation and tests.

A category file holds one JSON object per line: `id`, `question` (turns of {role, content}) and `function` (tool
definitions with Python-style types); `possible_answer/<same name>` holds, for each expected call, the function name
and the allowed argument values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompt_compression.schema import normalise_types
from router.chat import ChatRequest, Message, Role, Tool

_PREFIX = "BFCL_v4_"
_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class BfclCase:
    category: str
    id: str
    request: ChatRequest
    """The question with its tools as an OpenAI client sends them: BFCL's Python-style types mapped to JSON Schema."""
    functions: tuple[Tool, ...]
    """The tools exactly as BFCL writes them."""
    gold: frozenset[str] | None
    """Functions the ground truth calls; None where the category has no ground truth (irrelevance, relevance)."""


def categories(data_dir: Path) -> list[str]:
    return sorted(p.name.removeprefix(_PREFIX).removesuffix(".json") for p in data_dir.glob(f"{_PREFIX}*.json"))


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _gold(data_dir: Path, category: str) -> dict[str, frozenset[str]]:
    path = data_dir / "possible_answer" / f"{_PREFIX}{category}.json"
    if not path.is_file():
        return {}
    return {row["id"]: frozenset(name for call in row["ground_truth"] for name in call) for row in _lines(path)}


def load_category(data_dir: Path, category: str) -> list[BfclCase]:
    gold = _gold(data_dir, category)
    cases: list[BfclCase] = []
    for row in _lines(data_dir / f"{_PREFIX}{category}.json"):
        messages = [Message(_ROLES[turn["role"]], turn["content"]) for turns in row["question"] for turn in turns]
        functions = tuple(Tool(f["name"], f.get("description", ""), f["parameters"]) for f in row["function"])
        tools = [Tool(f.name, f.description, normalise_types(f.parameters)) for f in functions]
        request = ChatRequest(request_id=row["id"], model="bfcl", messages=messages, tools=tools)
        cases.append(BfclCase(category, row["id"], request, functions, gold.get(row["id"])))
    return cases
