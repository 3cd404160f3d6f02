"""What happened to one request, gathered along the request path for the response headers, the log and the ledger."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from router.chat import Completion, StreamEvent, TextDelta, Tier, ToolCall, ToolCallDelta, Usage


@dataclass(slots=True)
class Attempt:
    """One call to one backend (the answer, or a wasted local attempt that failed verification)."""

    tier: Tier
    model: str
    usage: Usage
    seconds: float


@dataclass(slots=True)
class RequestTrace:
    request_id: str
    requested_model: str
    session_id: str | None
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    tier: Tier | None = None
    model: str | None = None
    rule: str = ""
    score: float = 0.0
    reason: str = ""
    signals: dict[str, Any] = field(default_factory=dict)
    escalated: str | None = None
    """Why the answer came from another tier than decided: `verification:<reason>`, `fallback:<error>`, ..."""
    attempts: list[Attempt] = field(default_factory=list)
    first_token_s: float | None = None
    finished_s: float | None = None
    status: int = 200
    error: str | None = None
    stream: bool = False
    compression: tuple[int, int] | None = None
    """Prompt tokens before and after compression, when the compressor ran."""
    overhead_ms: float | None = None
    step: int | None = None
    """The request's position in its session (1 for the first step), as the session store counted it."""
    response: dict[str, Any] | None = None
    """The assistant message returned, in OpenAI shape; kept only where the request's answer is stored."""

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def mark_first_token(self) -> None:
        if self.first_token_s is None:
            self.first_token_s = self.elapsed()

    def answered_by(self, tier: Tier, model: str) -> None:
        self.tier, self.model = tier, model

    @property
    def final(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def wasted(self) -> list[Attempt]:
        return self.attempts[:-1]

    def headers(self) -> dict[str, str]:
        out = {
            "x-request-id": self.request_id,
            "x-tiergate-tier": self.tier or "",
            "x-tiergate-model": self.model or "",
            "x-tiergate-rule": self.rule,
            "x-tiergate-score": f"{self.score:.3f}",
            "x-tiergate-escalated": self.escalated or "no",
        }
        if self.compression is not None:
            out["x-tiergate-compression"] = f"{self.compression[0]}->{self.compression[1]}"
        if self.overhead_ms is not None:
            out["x-tiergate-overhead-ms"] = f"{self.overhead_ms:.2f}"
        return out

    def log_fields(self) -> dict[str, Any]:
        final = self.final
        return {
            "request_id": self.request_id,
            "session": self.session_id,
            "requested": self.requested_model,
            "tier": self.tier,
            "model": self.model,
            "rule": self.rule,
            "score": round(self.score, 4),
            "reason": self.reason,
            "escalated": self.escalated,
            "status": self.status,
            "error": self.error,
            "stream": self.stream,
            "prompt_tokens": final.usage.prompt_tokens if final else 0,
            "completion_tokens": final.usage.completion_tokens if final else 0,
            "latency_ms": round((self.finished_s or self.elapsed()) * 1000, 1),
            "ttft_ms": round(self.first_token_s * 1000, 1) if self.first_token_s is not None else None,
        }


def assistant_message(text: str | None, tool_calls: list[ToolCall]) -> dict[str, Any]:
    """The answer as the OpenAI message a client appends to its history (what a trajectory's next step sees)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in tool_calls
        ]
    return message


def completion_message(completion: Completion) -> dict[str, Any]:
    return assistant_message(completion.text, completion.tool_calls)


class StreamedAnswer:
    """Gathers a streamed answer's pieces into the assistant message, for requests whose answer is stored."""

    __slots__ = ("_calls", "_text")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            parts = self._calls.setdefault(event.index, ["", "", ""])
            parts[0] = parts[0] or event.id or ""
            parts[1] = parts[1] or event.name or ""
            parts[2] += event.arguments

    def message(self) -> dict[str, Any]:
        calls = [ToolCall(i, n, a) for _, (i, n, a) in sorted(self._calls.items())]
        return assistant_message("".join(self._text) or None, calls)
