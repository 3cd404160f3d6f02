"""Internal completions and stream events rendered as OpenAI wire JSON (bytes, via orjson)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from router.chat import Completion, StreamEnd, StreamEvent, TextDelta, ToolCallDelta, Usage


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_json(completion_id: str, completion: Completion, created: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.text, "refusal": None}
    if completion.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in completion.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": completion.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": completion.finish_reason}],
        "usage": usage_json(completion.usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Turns stream events into `data: {...}` SSE lines of `chat.completion.chunk` objects."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self._id = completion_id
        self._model = model
        self._created = int(time.time())
        self._include_usage = include_usage
        self._sent_role = False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        if not self._sent_role:
            delta = {"role": "assistant", **delta}
            self._sent_role = True
        body: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            body["usage"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def event(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            if event.name is not None:
                call["function"]["name"] = event.name
            return self._chunk({"tool_calls": [call]})
        return self.end(event)

    def end(self, end: StreamEnd) -> bytes:
        self._model = end.model
        out = self._chunk({}, end.finish_reason)
        if self._include_usage:
            usage_chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "system_fingerprint": None,
                "choices": [],
                "usage": usage_json(end.usage),
            }
            out += b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        return out


DONE = b"data: [DONE]\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An error after the stream has started: OpenAI clients raise on an `error` object in a data line."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def sse_lines(writer: ChunkWriter, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield writer.event(event)
    yield DONE
