"""How hard the compressor works for one tier; one `CompressionSettings` per tier in the gateway's config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CompressionSettings(BaseModel):
    """Settings of one `Compressor`. Every field has a default; unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Compress requests for this tier at all. Off: requests pass unchanged.")
    budget_tokens: int | None = Field(
        None,
        ge=1,
        description="Prompt token budget used when the caller gives none (for the local tier: its context window "
        "minus the completion's room). Empty: no budget, so only compaction and `max_tools` apply.",
    )
    compact_schemas: bool = Field(
        True,
        description="Compact tool schemas (drop titles, examples and markdown, normalise types, shorten "
        "descriptions). Names, types, enum values, required lists and defaults never change.",
    )
    description_chars: int = Field(
        100,
        ge=0,
        le=100_000,
        description="Longest function description kept: its first sentence, cut at a word boundary beyond this. "
        "0 drops function descriptions.",
    )
    parameter_description_chars: int = Field(
        50,
        ge=0,
        le=100_000,
        description="Longest parameter description kept, shortened the same way. 0 drops parameter descriptions.",
    )
    full_description_tools: int = Field(
        1,
        ge=0,
        le=10_000,
        description="Of the tools kept from a request that offers several, this many best-ranked ones (plus a tool "
        "named by tool_choice) keep the budgets above; the others, less likely to be called, get the `other_*` "
        "budgets. A large value gives every tool the budgets above.",
    )
    other_description_chars: int = Field(
        40,
        ge=0,
        le=100_000,
        description="Longest function description kept for the lower-ranked tools (see `full_description_tools`).",
    )
    other_parameter_description_chars: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Longest parameter description kept for the lower-ranked tools. 0 drops them.",
    )
    max_tools: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Most tools sent; beyond it the tools least relevant to the latest user turn are dropped. A tool "
        "named by tool_choice and tools already called in the conversation are always kept.",
    )
    min_tools: int = Field(
        1,
        ge=0,
        le=10_000,
        description="Fewest tools left when tools are dropped to fit the token budget (kept tools may add to it).",
    )
    relative_score_cutoff: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Also drop tools whose relevance score is below this fraction of the best tool's score, unless "
        "their name holds a word of the user's turn that no kept tool's name holds (only when the best score is "
        "positive, and never below `min_tools`). 0 turns it off: then only `max_tools` and the budget drop tools.",
    )
    tool_result_chars: int = Field(
        400,
        ge=0,
        le=10_000_000,
        description="Over budget, tool results older than the last exchanges are cut to this many characters.",
    )
    keep_last_exchanges: int = Field(
        2,
        ge=2,
        le=1_000,
        description="Trailing exchanges never shortened or dropped (an exchange starts at a user turn or at the "
        "assistant turn that follows tool results).",
    )
    schema_cache_entries: int = Field(
        4096, ge=0, le=10_000_000, description="Compacted tool schemas remembered, by content hash."
    )
    session_cache_entries: int = Field(
        10_000,
        ge=0,
        le=10_000_000,
        description="Sessions whose selected tool set is remembered, so that set stays stable turn after turn.",
    )
