"""History compaction: make an over-long conversation fit, oldest tool traffic first.

Two steps, in order: cut old tool results to a length; then drop the oldest tool calls, each together with its result.
Never touched: system and developer messages, the first user message, and the last exchanges. An exchange starts at
a user message, or at an assistant message that follows tool results (the next step of an agent loop), so in a long
agent run on one user question the protected tail is the last few steps, not the whole run. Every tool call left has
its result and every result its call, since providers reject a conversation where they do not pair up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from router.chat import Message

_PINNED_ROLES = frozenset({"system", "developer"})


def exchange_starts(messages: Sequence[Message]) -> list[int]:
    starts: list[int] = []
    for i, message in enumerate(messages):
        after_tool = i > 0 and messages[i - 1].role == "tool"
        if message.role == "user" or (message.role == "assistant" and after_tool):
            starts.append(i)
    return starts


def protected(messages: Sequence[Message], keep_last_exchanges: int) -> set[int]:
    """Positions never shortened or dropped."""
    keep = {i for i, m in enumerate(messages) if m.role in _PINNED_ROLES}
    first_user = next((i for i, m in enumerate(messages) if m.role == "user"), None)
    if first_user is not None:
        keep.add(first_user)
    starts = exchange_starts(messages)
    tail = starts[-keep_last_exchanges] if len(starts) >= keep_last_exchanges else 0
    keep.update(range(tail, len(messages)))
    return keep


def shorten_tool_results(messages: Sequence[Message], keep: set[int], limit: int) -> list[Message]:
    """Tool results outside `keep` cut to `limit` characters, marked as cut; other messages unchanged (shared)."""
    out: list[Message] = []
    for i, message in enumerate(messages):
        text = message.content
        if message.role == "tool" and i not in keep and text is not None and len(text) > limit:
            cut = f"{text[:limit]}…[{len(text) - limit} characters cut]"
            message = dataclasses.replace(message, content=cut)
        out.append(message)
    return out


@dataclass(frozen=True, slots=True)
class ToolExchange:
    """One tool call and where its result lies; `size` is its text in characters (for estimates)."""

    call_at: int
    call_id: str
    result_at: tuple[int, ...]
    size: int


def droppable_calls(messages: Sequence[Message], keep: set[int]) -> list[ToolExchange]:
    """Tool calls that may go, oldest first: neither the call nor any of its results is protected."""
    results: dict[str, list[int]] = {}
    for i, message in enumerate(messages):
        if message.role == "tool" and message.tool_call_id is not None:
            results.setdefault(message.tool_call_id, []).append(i)
    found: list[ToolExchange] = []
    for i, message in enumerate(messages):
        if i in keep or not message.tool_calls:
            continue
        for call in message.tool_calls:
            at = tuple(results.get(call.id, ()))
            if any(j in keep for j in at):
                continue
            size = len(call.name) + len(call.arguments) + sum(len(messages[j].content or "") for j in at)
            found.append(ToolExchange(i, call.id, at, size))
    return found


def without_calls(messages: Sequence[Message], dropped: Iterable[ToolExchange]) -> list[Message]:
    """The conversation without the given calls and their results; an assistant message left empty goes too."""
    calls_by_message: dict[int, set[str]] = {}
    results: set[int] = set()
    for exchange in dropped:
        calls_by_message.setdefault(exchange.call_at, set()).add(exchange.call_id)
        results.update(exchange.result_at)
    out: list[Message] = []
    for i, message in enumerate(messages):
        if i in results:
            continue
        gone = calls_by_message.get(i)
        if gone:
            calls = tuple(c for c in message.tool_calls if c.id not in gone)
            if not calls and not message.content:
                continue
            message = dataclasses.replace(message, tool_calls=calls)
        out.append(message)
    return out
