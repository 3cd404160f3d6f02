"""Model presets: one word in a local model's entry that fills in what a known model needs to be served well.

    local_models:
      - preset: agentflow-planner
        path: /models/AgentFlow_agentflow-planner-7b-Q4_K_M.gguf

A preset only supplies defaults: any field the entry sets itself wins. Presets never name a file to download; the
GGUF path is always the operator's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # AgentFlow/agentflow-planner-7b (Qwen2.5-7B-Instruct base). Its GGUF builds carry no chat template, so chatml
        # is forced (whose formatter already stops at <|im_end|>). Its prompts are 3-6k tokens; its answers are a few
        # hundred tokens of `Justification / Context / Sub-Goal / Tool Name`, which the planner verifier checks.
        "agentflow-planner": MappingProxyType(
            {
                "name": "agentflow-planner",
                "chat_format": "chatml",
                "context_tokens": 8192,
                "default_max_tokens": 512,
                "max_tokens_limit": 2048,
                "verifiers": ("agentflow_planner",),
            }
        ),
    }
)


def apply_preset(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry with its preset's defaults filled in; raises `ValueError` for an unknown preset or a missing path."""
    name = entry.get("preset")
    if name is None:
        return dict(entry)
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    if not entry.get("path"):
        raise ValueError(f"preset {name!r} needs `path`: the GGUF file (Tiergate never downloads weights)")
    return {**preset, **entry}
