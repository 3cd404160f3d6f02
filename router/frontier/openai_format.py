"""The OpenAI chat-completions format on the upstream side: the body we send, and the answer and stream we read.

Both frontier backends speak it (litellm takes and returns the same shapes), so it lives once, here.

Pass-through: a request whose `raw` is set is sent as the client sent it, with only `model` (and, for a stream,
`stream`/`stream_options`) replaced; nothing is rebuilt field by field, so image parts, `metadata`, `logit_bias`
and fields newer than our wire types reach the upstream unchanged. Whoever changes a request after parsing (the
compressor) must clear `raw` (`dataclasses.replace(request, ..., raw={})`); the body is then built from the
`ChatRequest`'s own fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.chat import (
    ChatRequest,
    Completion,
    FinishReason,
    Message,
    NamedToolChoice,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from router.errors import UpstreamError

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",  # the deprecated single-function form
}


def passes_through(request: ChatRequest) -> bool:
    """Whether the client's own body goes upstream (see the module docstring)."""
    return bool(request.raw)


def upstream_body(request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The body for `POST /chat/completions` naming `model`; a stream always asks for usage (the ledger needs it)."""
    body = dict(request.raw) if request.raw else _serialise(request)
    body["model"] = model
    if stream:
        body["stream"] = True
        options = body.get("stream_options")
        body["stream_options"] = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def _serialise(request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}} if isinstance(choice, NamedToolChoice) else choice
        )
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False  # OpenAI refuses the field when no tools are sent
    fmt = request.response_format
    if fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt.type == "json_schema":
        schema = fmt.json_schema or {"type": "object"}
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    # Only what differs from the API's defaults: some models refuse sampling fields they do not support at all.
    sampling = request.sampling
    if sampling.max_tokens is not None:
        body["max_tokens"] = sampling.max_tokens  # the name every OpenAI-compatible server knows
    if sampling.temperature != 1.0:
        body["temperature"] = sampling.temperature
    if sampling.top_p != 1.0:
        body["top_p"] = sampling.top_p
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.presence_penalty:
        body["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty:
        body["frequency_penalty"] = sampling.frequency_penalty
    if request.user is not None:
        body["user"] = request.user
    return body


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


# --- reading answers -----------------------------------------------------------------------------------------


def malformed(model: str, what: str) -> UpstreamError:
    return UpstreamError(f"frontier model {model}: the upstream sent {what}", retryable=False)


def finish_reason(value: object, has_tool_calls: bool) -> FinishReason:
    known = _FINISH_REASONS.get(value) if isinstance(value, str) else None
    if known is not None:
        return known
    return "tool_calls" if has_tool_calls else "stop"


def parse_usage(usage: object) -> Usage:
    if not isinstance(usage, Mapping):
        return Usage()
    details = usage.get("prompt_tokens_details")
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0,
    )


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def parse_completion(data: Any, model: str) -> Completion:
    """A non-streamed answer; `model` names the configured model in errors and stands in if the answer names none."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        calls = [
            ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"].get("arguments") or "")
            for c in message.get("tool_calls") or ()
        ]
        text = message.get("content")
    except (AttributeError, IndexError, KeyError, TypeError):
        raise malformed(model, "an answer without a well-formed choices[0].message") from None
    if text is not None and not isinstance(text, str):
        raise malformed(model, "an answer whose content is not text")
    return Completion(
        model=str(data.get("model") or model),
        text=text,
        tool_calls=calls,
        finish_reason=finish_reason(choice.get("finish_reason"), bool(calls)),
        usage=parse_usage(data.get("usage")),
    )


class StreamReader:
    """Turns stream chunks (parsed JSON) into events, and knows whether the stream finished properly.

    A stream is complete when the upstream sent `[DONE]`, or a finish reason and the usage chunk. Anything less
    at the end of the body means the upstream cut the answer short, which must never pass for a finished answer.
    """

    __slots__ = ("_configured", "_saw_tool_calls", "done", "finish_reason", "model", "usage")

    def __init__(self, model: str) -> None:
        self._configured = model
        self._saw_tool_calls = False
        self.model = model
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.done = False

    def events(self, chunk: Any) -> list[StreamEvent]:
        """The events in one chunk (often none: the role chunk, the finish chunk, the usage chunk)."""
        if not isinstance(chunk, dict):
            raise malformed(self._configured, "a stream chunk that is not a JSON object")
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            # The stream had started well, so this is the upstream failing, like a 5xx.
            raise UpstreamError(f"frontier model {self._configured}: the upstream failed mid-stream: {message}")
        try:
            return self._read(chunk)
        except (AttributeError, KeyError, TypeError, ValueError):
            raise malformed(self._configured, "a malformed stream chunk") from None

    def _read(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("model"):
            self.model = str(chunk["model"])
        if chunk.get("usage"):
            self.usage = parse_usage(chunk["usage"])
        out: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                out.append(TextDelta(str(content)))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                out.append(
                    ToolCallDelta(
                        index=int(call.get("index") or 0),
                        id=call.get("id"),
                        name=function.get("name"),
                        arguments=function.get("arguments") or "",
                    )
                )
                self._saw_tool_calls = True
            if choice.get("finish_reason"):
                self.finish_reason = finish_reason(choice["finish_reason"], self._saw_tool_calls)
        return out

    @property
    def complete(self) -> bool:
        return self.done or (self.finish_reason is not None and self.usage is not None)

    def end(self) -> StreamEnd:
        """The closing event; raises `UpstreamError` when the stream was cut short."""
        if not self.complete:
            raise UpstreamError(
                f"frontier model {self._configured}: the upstream ended the stream before the answer was complete"
            )
        return StreamEnd(finish_reason=self.finish_reason or "stop", usage=self.usage or Usage(), model=self.model)
