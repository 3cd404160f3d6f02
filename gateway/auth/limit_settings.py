"""`auth.limits`: the settings of per-key rate limits and frontier budgets (the limiter is `gateway.auth.limits`).

Kept apart from the limiter so that `gateway.settings` can import them without importing the ledger and router."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LimitsSettings(BaseModel):
    """`auth.limits`: where the counters live, the window, and how a draining budget raises the bar to escalate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str | None = Field(
        None,
        description="Redis shared by every replica, e.g. `redis://127.0.0.1:6379/0`. Empty: counters in this "
        "process's memory, right for a single replica.",
    )
    redis_timeout_s: float = Field(
        0.25, gt=0, le=10, description="Longest wait for Redis; past it, rate limits fail open for that request."
    )
    redis_retry_after_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="After Redis fails, how long it is left alone: meanwhile limits are judged as when it fails, at "
        "once, instead of every request waiting out `redis_timeout_s`.",
    )
    reserve_completion_tokens: int = Field(
        512,
        ge=0,
        le=1_000_000,
        description="Completion tokens a budgeted key's request that may reach the frontier tier reserves at "
        "admission when it sets no max_tokens (priced at the frontier model's output price).",
    )
    spend_retry_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often the keys' spend is read again from the ledger while it cannot be read (start-up "
        "during a database outage); until then keys with a budget are treated as over budget.",
    )
    window_s: int = Field(
        60,
        ge=1,
        le=3600,
        description="Length of a rate-limit window. Keys' requests_per_minute and tokens_per_minute apply per "
        "window, so 60 makes them per minute as named; shorter windows are for tests.",
    )
    bias_start_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Remaining fraction of a key's tighter frontier budget below which its threshold starts rising.",
    )
    bias_max: float = Field(
        0.4,
        ge=0,
        le=1,
        description="How much the score thresholds have risen when the budget is all but spent (0 turns bias off).",
    )

    @model_validator(mode="after")
    def _redis_scheme(self) -> LimitsSettings:
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return self
