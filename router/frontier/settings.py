"""How one frontier model is reached: provider, upstream model id, address, key, timeouts and retries.

The gateway's `Settings` holds a list of these (`frontier_models`); each becomes one backend.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Provider = Literal["openai_compatible", "litellm"]

OPENAI_API_BASE = "https://api.openai.com/v1"


class FrontierModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Model name clients send and the ledger records.")
    provider: Provider = Field(
        "openai_compatible",
        description="`openai_compatible`: a pooled HTTP client straight to an upstream that speaks the OpenAI "
        "protocol (OpenAI, DeepSeek, vLLM, llama-server, OpenRouter). `litellm`: litellm translates for providers "
        "that do not (Anthropic, Gemini, Bedrock, ...).",
    )
    model: str = Field(
        min_length=1,
        description="The upstream's model id, e.g. `gpt-4.1-mini`; for litellm with its provider prefix, "
        "e.g. `anthropic/claude-sonnet-4-5`.",
    )
    api_base: str | None = Field(
        None,
        description="Upstream base URL, up to and including `/v1`. Empty means OpenAI's for `openai_compatible` "
        "and the provider's own for `litellm`.",
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable that holds the API key (e.g. `ANTHROPIC_API_KEY`). If it is "
        "unset the model is unavailable, not an error at start-up. Null means the upstream needs no key "
        "(a local llama-server or vLLM).",
    )
    context_tokens: int | None = Field(
        None, ge=256, le=10_000_000, description="The model's context window, where the router should know it."
    )
    timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Per attempt: the longest wait for a whole answer; for a stream, for the first bytes and then "
        "for each gap between chunks.",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=600, description="Longest wait to open a connection.")
    max_retries: int = Field(
        2, ge=0, le=10, description="Retries after a timeout, 429, 5xx or dropped connection; never mid-stream."
    )
    backoff_s: float = Field(
        0.5, ge=0, le=60, description="Wait before the first retry; doubled for each further one (with jitter)."
    )
    max_backoff_s: float = Field(
        8.0,
        ge=0,
        le=600,
        description="Longest wait before a retry. An upstream that asks (Retry-After) for longer is not retried: "
        "the error goes back at once, so the router can fall back.",
    )
    max_connections: int = Field(
        256, ge=1, le=100_000, description="Connections kept open to the upstream at most (`openai_compatible`)."
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers added to every upstream request (e.g. OpenRouter's `HTTP-Referer`, `OpenAI-Project`).",
    )

    @field_validator("api_base")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_base must be an http:// or https:// URL")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("api_key_env must name a variable, or be null when no key is needed")
        return value
