"""History compaction shortens old tool results, then drops old calls in pairs, and never touches what must stay."""

from __future__ import annotations

import copy

from prompt_compression.compressor import Compressor
from prompt_compression.settings import CompressionSettings
from router.chat import ChatRequest, Message, ToolCall


def _chars(request: ChatRequest) -> int:
    """A stand-in token counter: characters of text and calls."""
    calls = sum(len(c.name) + len(c.arguments) for m in request.messages for c in m.tool_calls)
    return sum(len(m.content or "") for m in request.messages) + calls


def _agent_run(steps: int, result_chars: int = 2000) -> ChatRequest:
    messages = [Message("system", "You are an agent."), Message("user", "Find the cheapest flight to Rome.")]
    for i in range(steps):
        calls = (ToolCall(f"c{i}a", "search", f'{{"page": {i}}}'), ToolCall(f"c{i}b", "price", f'{{"id": {i}}}'))
        messages.append(Message("assistant", None, tool_calls=calls))
        messages.append(Message("tool", f"result {i}a " + "x" * result_chars, tool_call_id=f"c{i}a"))
        messages.append(Message("tool", f"result {i}b " + "y" * result_chars, tool_call_id=f"c{i}b"))
    return ChatRequest("r1", "local", messages)


def _assert_paired(messages: list[Message]) -> None:
    calls = [c.id for m in messages for c in m.tool_calls]
    results = [m.tool_call_id for m in messages if m.role == "tool"]
    assert sorted(calls) == sorted(results)  # type: ignore[type-var]
    for i, m in enumerate(messages):
        if m.role == "tool":
            earlier = {c.id for x in messages[:i] for c in x.tool_calls}
            assert m.tool_call_id in earlier


def test_old_tool_results_are_shortened_first() -> None:
    request = _agent_run(4)
    compressor = Compressor(CompressionSettings(tool_result_chars=100), _chars)
    budget = _chars(request) - 3000
    result = compressor.compress(request, budget)
    messages = result.request.messages
    assert len(messages) == len(request.messages)  # nothing dropped: shortening sufficed
    assert result.tokens_after <= budget
    shortened = [m for m in messages if m.role == "tool" and len(m.content or "") < 2000]
    assert shortened and all("characters cut" in (m.content or "") for m in shortened)
    # the last two exchanges (the last two agent steps) are untouched
    assert messages[-6:] == request.messages[-6:]


def test_oldest_calls_go_with_their_results_and_protected_messages_stay() -> None:
    request = _agent_run(8)
    original = copy.deepcopy(request)
    compressor = Compressor(CompressionSettings(tool_result_chars=100), _chars)
    budget = 9000  # the protected tail alone is about 8,100 characters
    result = compressor.compress(request, budget)
    messages = result.request.messages
    assert result.tokens_after <= budget
    assert request == original  # the input is untouched
    _assert_paired(messages)
    assert messages[0] == request.messages[0] and messages[1] == request.messages[1]
    assert messages[-6:] == request.messages[-6:]
    surviving = [c.id for m in messages for c in m.tool_calls]
    dropped = [c.id for m in request.messages for c in m.tool_calls if c.id not in surviving]
    assert dropped == [c.id for m in request.messages for c in m.tool_calls][: len(dropped)]  # oldest first


def test_budget_below_protected_content_leaves_it_whole() -> None:
    request = _agent_run(3)
    result = Compressor(CompressionSettings(tool_result_chars=50), _chars).compress(request, 10)
    messages = result.request.messages
    _assert_paired(messages)
    assert [m.role for m in messages[:2]] == ["system", "user"]
    assert messages[-6:] == request.messages[-6:]
    assert result.tokens_after > 10


def test_plain_chat_keeps_its_last_two_exchanges() -> None:
    messages = [Message("user", "first question " + "q" * 500)]
    for i in range(5):
        messages += [Message("assistant", f"answer {i} " + "a" * 500), Message("user", f"follow-up {i}")]
    request = ChatRequest("r2", "local", messages)
    result = Compressor(CompressionSettings(), _chars).compress(request, 100)
    # without tool traffic nothing may be dropped; the request comes back as it was
    assert result.request is request
    assert result.tokens_after == result.tokens_before
