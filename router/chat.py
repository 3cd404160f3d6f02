"""The internal chat request and response: what the router reads and every backend takes and returns.

The HTTP layer (`gateway.wire`) turns an OpenAI wire request into a `ChatRequest` once; from there on nothing
looks at the wire format again except the pass-through path, which keeps the original body in `raw`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
Tier = Literal["local", "frontier"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call; `arguments` is JSON text, exactly as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Message:
    role: Role
    content: str | None = None
    """The message's text. Text parts of multi-part content are joined with newlines."""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    image_count: int = 0
    """Image parts in the content; the text tier cannot see them, the router can count them."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments object."""


@dataclass(frozen=True, slots=True)
class NamedToolChoice:
    name: str


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None
    """For `json_schema`: the schema the answer must validate against."""


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as the gateway's authentication found it, and what that key's policy asks of the router.

    The embedded quick start runs without keys: every request then has `ANONYMOUS`."""

    key_id: str | None = None
    """The key's public id (never the secret)."""
    policy_tags: frozenset[str] = frozenset()
    """The key's policy tags, visible to rules as the `policy_tags` signal (e.g. `local-only`)."""
    escalation_bias: float = 0.0
    """Added to every score threshold for this request: it rises as the key's frontier budget runs down."""
    frontier_allowed: bool = True
    """False once the key's frontier budget is spent (policy `local`): the request stays on the local tier."""
    store_prompts: bool = False
    """Store this request's messages and answer in the ledger (for replay and trajectory export)."""
    reservation: object | None = None
    """What the key's limiter set aside at admission (an estimate of the frontier cost), handed back to it when the
    request finishes so that it can settle the real cost; opaque to the router."""


ANONYMOUS = Caller()


@dataclass(slots=True)
class ChatRequest:
    request_id: str
    model: str
    """The model name the client asked for (`auto`, `local`, `frontier` or a configured name)."""
    messages: list[Message]
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False
    session_id: str | None = None
    task_id: str | None = None
    """`X-Tiergate-Task`: the question this session works on; several runs of one task form a GRPO group."""
    user: str | None = None
    caller: Caller = ANONYMOUS
    raw: dict[str, Any] = field(default_factory=dict)
    """The body as the client sent it, for upstreams that speak the OpenAI protocol already: it is forwarded with
    only `model` replaced. Whoever changes the request (the compressor) must clear it (`raw={}`), so that the
    upstream gets the changed request, rebuilt from these fields."""

    @property
    def wants_tool_call(self) -> bool:
        """True when the answer must be a tool call (`required` or a named tool)."""
        return bool(self.tools) and (self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice))

    @property
    def offers_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    """A finished answer from any backend."""

    model: str
    text: str | None
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A whole tool call, or a piece of one: OpenAI clients concatenate `arguments` by `index`."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    finish_reason: FinishReason
    usage: Usage
    model: str


StreamEvent = TextDelta | ToolCallDelta | StreamEnd
