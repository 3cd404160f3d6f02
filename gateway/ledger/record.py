"""What the request path hands the ledger: plain values, cheap to build. Costs are computed later, off the path."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router.chat import Tier


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class RequestRecord:
    """One request, as it ended. Fill what is known; leave the rest at its default.

    Tokens are the answering attempt's: `tokens_in` counts the whole prompt (cached tokens included, as OpenAI's
    `prompt_tokens` does) and `tokens_cached` the part of it read from a cache. A local answer that failed
    verification and was escalated is the wasted attempt, described by the `wasted_*` fields; it is charged to
    this request.
    """

    request_id: str
    requested_model: str
    """The name the client sent (`auto`, `local`, `frontier` or a configured model)."""
    created_at: datetime = field(default_factory=utc_now)
    session_id: str | None = None
    task_id: str | None = None
    api_key_id: str | None = None
    """Which key was used (its configured id or a digest); never the key itself."""
    tier: Tier | None = None
    """None when the request failed before a tier was chosen."""
    model: str | None = None
    rule: str | None = None
    score: float | None = None
    signals: dict[str, Any] | None = None
    """The router's facts about the request, compact (names to numbers, booleans, short strings)."""
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    compute_ms: float = 0.0
    """Seconds the local model spent on the answer (prompt and generation), in ms; what the local cost model charges."""
    wasted_tier: Tier | None = None
    wasted_model: str | None = None
    wasted_tokens_in: int = 0
    wasted_tokens_out: int = 0
    wasted_compute_ms: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    """Time to the first token of a streamed answer."""
    stream: bool = False
    status: int = 200
    """The HTTP status the client got."""
    error_class: str | None = None
    """The `router.errors` class name (or exception type) when the request failed."""
    compression_tokens_before: int | None = None
    compression_tokens_after: int | None = None
    prompt: list[dict[str, Any]] | None = None
    """The messages as sent; set only where prompt storage is on (`ledger.store_prompts`, or the key's setting)."""
    response: dict[str, Any] | None = None
    """The assistant message returned (role, content, tool_calls); set exactly when `prompt` is."""
    step: int | None = None
    """The request's position in its session (1 for the first step), as the session store counted it."""

    @property
    def escalated(self) -> bool:
        """True when a wasted attempt preceded the answer (the cascade escalated it)."""
        return self.wasted_model is not None
