"""Configuration of one local GGUF model (a section of the gateway's YAML file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from local_models.presets import PRESETS, apply_preset
from router.verification import VERIFIERS

EMBEDDED_MODEL_NAME = "gemma3-270m"


class LocalModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = Field(
        None,
        description=f"A known model's defaults ({', '.join(sorted(PRESETS))}); fields set in the entry win. "
        "`path` is still required.",
    )
    name: str = Field(EMBEDDED_MODEL_NAME, min_length=1, description="Model name clients send and the ledger records.")
    path: Path | None = Field(
        None, description="GGUF file. Empty means the embedded Gemma 3 270M from PyPI, assembled on first start."
    )
    chat_format: str | None = Field(
        "gemma",
        description="llama-cpp-python chat format name (gemma, chatml, llama-3, ...). Empty uses the chat template "
        "stored in the GGUF's metadata.",
    )
    context_tokens: int = Field(8192, ge=256, le=1_048_576, description="Context window (n_ctx).")
    threads: int | None = Field(
        None,
        ge=1,
        le=512,
        description="CPU threads for generation; empty means all cores but one, which the gateway itself needs "
        "(llama.cpp's threads spin while they wait for each other: on 2 busy cores, 2 threads ran 3x slower than 1).",
    )
    batch_tokens: int = Field(512, ge=8, le=65_536, description="Prompt tokens evaluated per batch (n_batch).")
    gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to a GPU (-1 all); needs a GPU build of llama.cpp.")
    max_queue: int = Field(
        8, ge=0, le=10_000, description="Requests that may wait while one generates; beyond it the answer is 429."
    )
    default_max_tokens: int = Field(
        512, ge=1, le=131_072, description="Completion tokens when the request sets no max_tokens."
    )
    max_tokens_limit: int = Field(4096, ge=1, le=1_048_576, description="Largest max_tokens a request may ask for.")
    prefix_cache_mb: float = Field(
        512,
        ge=0,
        le=1_048_576,
        description="Host memory for the KV state of sessions displaced by another session's request, restored "
        "when that session's next step shares its prefix (least recently used dropped first; 0 turns it off). "
        "On the embedded model a 4k-token session takes about 20 MB; on a 7B model with full attention, about "
        "as much as its KV cache for those tokens (Qwen2.5-7B: 56 KB per token, 230 MB at 4k).",
    )
    verifiers: tuple[str, ...] = Field(
        (),
        description="Checks run on this model's answers on top of `routing.verifiers`; a failure escalates once. "
        f"Known: {', '.join(sorted(VERIFIERS))}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        return apply_preset(data) if isinstance(data, dict) else data

    @field_validator("verifiers")
    @classmethod
    def _known_verifiers(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(VERIFIERS))
        if unknown:
            raise ValueError(f"unknown verifiers {', '.join(unknown)}; known: {', '.join(sorted(VERIFIERS))}")
        return names
