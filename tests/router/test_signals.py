"""Signals extracted from hand-written conversations, built from OpenAI request bodies as a client sends them."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.wire import ChatCompletionRequest
from router.chat import ChatRequest
from router.sessions import SessionState
from router.signals import SignalContext, Signals, estimate_tokens, extract_signals

CONTEXT = SignalContext(local_context_tokens=8192)

# About 3,000 tokens of agent-framework boilerplate full of words that would look "hard" in a user's message.
HARD_LOOKING_SYSTEM_PROMPT = (
    "You are a meticulous assistant. Think step by step, prove each claim, compare alternatives and analyze "
    "trade-offs. Also consider edge cases. Use LaTeX such as $\\frac{a}{b}$ and $x^2 + y^2 = z^2$ for math, and "
    "write Python code in fenced blocks:\n```python\ndef solve(x):\n    return x\n```\n"
) * 60


def body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": list(messages), **extra}


def request(*messages: dict[str, Any], **extra: Any) -> ChatRequest:
    raw = body(*messages, **extra)
    return ChatCompletionRequest.model_validate(raw).to_internal(request_id="test", raw=raw)


def signals(*messages: dict[str, Any], context: SignalContext = CONTEXT, **extra: Any) -> Signals:
    return extract_signals(request(*messages, **extra), context)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str | None = None, calls: list[tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{i}_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(calls)
        ]
    return message


def tool(text: str, call_id: str = "call_0") -> dict[str, Any]:
    return {"role": "tool", "content": text, "tool_call_id": call_id}


def weather_tool(name: str = "get_weather") -> dict[str, Any]:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": name, "description": "Weather now.", "parameters": schema}}


TRIVIAL = user("What is the capital of France?")


def test_a_long_system_prompt_changes_sizes_but_no_content_signal() -> None:
    plain = signals(TRIVIAL)
    boilerplate = signals({"role": "system", "content": HARD_LOOKING_SYSTEM_PROMPT}, TRIVIAL)

    assert boilerplate.prompt_tokens > 3000
    assert boilerplate.content_tokens == plain.content_tokens
    size_fields = {"prompt_tokens", "local_prompt_tokens", "messages"}
    for f in fields(Signals):
        if f.name not in size_fields:
            assert getattr(boilerplate, f.name) == getattr(plain, f.name), f.name
    assert (plain.math, plain.reasoning_markers, plain.code_blocks, plain.multi_intent) == (0, 0, 0, False)


def test_counts_of_messages_turns_tools_and_formats() -> None:
    s = signals(
        {"role": "system", "content": "Be brief."},
        user("Weather in Oslo?"),
        assistant(calls=[("get_weather", {"city": "Oslo"})]),
        tool('{"temp": 3}', "call_0_get_weather"),
        user("And in Bergen?"),
        tools=[weather_tool(), weather_tool("get_time")],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    )
    assert (s.messages, s.user_turns, s.tool_results, s.tools) == (5, 2, 1, 2)
    assert s.tool_choice == "named"
    assert s.response_format == "json_schema" and s.structured_output
    assert signals(TRIVIAL, tools=[weather_tool()], tool_choice="required").tool_choice == "required"
    assert signals(TRIVIAL).tool_choice == "auto" and signals(TRIVIAL).response_format == "text"


def test_tool_definitions_count_towards_the_prompt() -> None:
    without = signals(TRIVIAL)
    with_tools = signals(TRIVIAL, tools=[weather_tool(f"tool_{i}") for i in range(30)])
    assert with_tools.prompt_tokens > without.prompt_tokens + 30 * 10
    assert with_tools.content_tokens == without.content_tokens


def test_images_are_counted() -> None:
    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    s = signals({"role": "user", "content": [{"type": "text", "text": "What is in these?"}, picture, picture]})
    assert s.images == 2
    assert signals(TRIVIAL).images == 0


def test_fits_local_context_uses_the_estimate_or_the_callers_count() -> None:
    long_question = user("word " * 4000)  # about 5,000 tokens
    assert signals(long_question, context=SignalContext(local_context_tokens=8192)).fits_local_context
    assert not signals(long_question, context=SignalContext(local_context_tokens=4096)).fits_local_context
    # Room for the answer counts: the request's max_tokens, else the context's default.
    assert not signals(
        long_question, context=SignalContext(local_context_tokens=8192), max_tokens=4000
    ).fits_local_context
    compacted = SignalContext(local_context_tokens=4096, local_prompt_tokens=1000)
    s = signals(long_question, context=compacted)
    assert s.fits_local_context and s.local_prompt_tokens == 1000 and s.local_context_tokens == 4096


def test_code_blocks_come_from_user_and_tool_turns_only() -> None:
    fenced = "```python\nprint(1)\n```"
    assert signals(user(f"Why does this fail?\n{fenced}\nand this\n{fenced}")).code_blocks == 2
    assert signals(user("Run it"), assistant(calls=[("run", {})]), tool(fenced, "call_0_run")).code_blocks == 1
    assert signals(user("Show me code"), assistant(fenced), user("thanks")).code_blocks == 0


def test_code_markers() -> None:
    assert signals(user("Implement a Python function that parses `argv` and refactor the CLI.")).code_markers >= 4
    assert signals(user("Write a haiku about autumn leaves.")).code_markers == 0


def test_math_markers() -> None:
    assert signals(user("Solve for x: $x^2 - 5x + 6 = 0$, then compute the integral of x from 0 to 3.")).math >= 4
    assert signals(user("Evaluate ∑ 1/n² and show it is ≤ 2.")).math >= 2
    assert signals(user("Tell me a story about a dragon.")).math == 0


def test_reasoning_markers() -> None:
    s = signals(user("Think step by step: compare both designs, analyze the trade-offs and prove which is better."))
    assert s.reasoning_markers >= 4
    assert signals(TRIVIAL).reasoning_markers == 0


def test_multi_intent() -> None:
    one = signals(user("Translate 'good morning' into German."))
    questions = signals(user("What is a monad? And how do I use one in Haskell?"))
    listed = signals(user("Please do these:\n1. summarise the report\n2. draft a reply\n3. book a meeting"))
    also = signals(user("Fix the typo in the title and also update the changelog."))
    assert (one.asks, one.multi_intent) == (1, False)
    assert questions.asks == 2 and questions.multi_intent
    assert listed.asks == 3 and listed.multi_intent
    assert also.multi_intent


def test_intent_reads_the_latest_user_message() -> None:
    s = signals(user("Prove Fermat's little theorem step by step."), assistant("Here is a proof..."), user("Thanks!"))
    assert s.reasoning_markers == 0 and s.math == 0


@pytest.mark.parametrize(
    "reply",
    [
        "No, that's wrong.",
        "That is not correct, the answer is 12.",
        "Try again please",
        "It still doesn't work",
        "This is not what I asked for",
        "You misunderstood the question",
    ],
)
def test_corrections(reply: str) -> None:
    s = signals(user("How many days are in a leap year?"), assistant("365"), user(reply))
    assert s.corrections == 1 and s.correction_now


@pytest.mark.parametrize("reply", ["Great, thanks!", "Now do the same for February.", "Nothing else, bye"])
def test_plain_follow_ups_are_not_corrections(reply: str) -> None:
    s = signals(user("How many days are in a leap year?"), assistant("366"), user(reply))
    assert s.corrections == 0 and not s.correction_now and not s.reasked


def test_a_first_message_cannot_correct_anything() -> None:
    assert signals(user("No rush: what is 2 + 2?")).corrections == 0


def test_a_reasked_question_is_a_correction() -> None:
    s = signals(
        user("What is the boiling point of water at 2000 m altitude?"),
        assistant("100 °C."),
        user("I asked: what is the boiling point of water at 2000 m altitude??"),
    )
    assert s.reasked and s.correction_now and s.corrections == 1


def test_a_similar_question_about_something_else_is_no_reask() -> None:
    s = signals(
        user("What is the weather in Oslo today?"), assistant("Cold."), user("What is the weather in Bergen today?")
    )
    assert not s.reasked and s.corrections == 0


def test_corrections_add_up_and_only_the_newest_counts_as_now() -> None:
    s = signals(
        user("Sum 17 and 25."),
        assistant("41"),
        user("No, that's wrong."),
        assistant("43"),
        user("Still wrong, try again."),
        assistant(calls=[("calculator", {"expr": "17+25"})]),
        tool("42", "call_0_calculator"),
    )
    assert s.corrections == 2
    assert not s.correction_now  # the newest message is a tool result, already counted in an earlier step


def test_the_same_tool_call_three_times_is_a_stall() -> None:
    call = [("search", {"q": "flights to Oslo"})]
    s = signals(
        user("Book me a flight to Oslo."),
        assistant(calls=call),
        tool("[]", "call_0_search"),
        assistant(calls=call),
        tool("[]", "call_0_search"),
        assistant(calls=call),
        tool("[]", "call_0_search"),
    )
    assert s.repeated_tool_calls == 2 and s.stalled
    assert s.tool_errors == 0


def test_different_arguments_are_not_repeats() -> None:
    s = signals(
        user("Book me a flight."),
        assistant(calls=[("search", {"q": "Oslo"})]),
        tool("[]", "call_0_search"),
        assistant(calls=[("search", {"q": "Bergen"})]),
        tool("[]", "call_0_search"),
    )
    assert s.repeated_tool_calls == 0 and not s.stalled


def test_failing_tool_results_in_a_row_are_a_stall() -> None:
    s = signals(
        user("Read the config."),
        assistant(calls=[("read_file", {"path": "a.yaml"})]),
        tool("Error: No such file or directory: a.yaml", "call_0_read_file"),
        assistant(calls=[("read_file", {"path": "conf/a.yaml"})]),
        tool('{"error": "permission denied"}', "call_0_read_file"),
    )
    assert s.tool_errors == 2 and s.tool_error_streak == 2 and s.stalled


def test_a_success_ends_the_failure_streak() -> None:
    s = signals(
        user("Read the config."),
        assistant(calls=[("read_file", {"path": "a.yaml"})]),
        tool("Traceback (most recent call last):\n  ...\nFileNotFoundError: a.yaml", "call_0_read_file"),
        assistant(calls=[("read_file", {"path": "b.yaml"})]),
        tool('{"error": null, "content": "threshold: 0.5"}', "call_0_read_file"),
    )
    assert s.tool_errors == 1 and s.tool_error_streak == 0 and not s.stalled


def test_session_queue_and_policy_come_from_the_context() -> None:
    context = SignalContext(
        local_context_tokens=8192,
        local_queue_depth=3,
        session=SessionState(steps=7, corrections=1, stalls=2, escalations=4),
        policy_tags=frozenset({"local-only", "eu"}),
    )
    s = signals(TRIVIAL, context=context)
    assert (s.session_steps, s.session_corrections, s.session_stalls, s.session_escalations) == (7, 1, 2, 4)
    assert s.local_queue_depth == 3
    assert s.policy_tags == ("eu", "local-only")


def test_as_dict_is_compact_json() -> None:
    s = signals(TRIVIAL, context=replace(CONTEXT, policy_tags=frozenset({"eu"})))
    out = s.as_dict()
    assert json.loads(json.dumps(out)) == out
    assert out["user_turns"] == 1 and out["policy_tags"] == ["eu"] and out["model"] == "auto"
    assert "images" not in out and "stalled" not in out  # zero and false are left out
    assert len(json.dumps(out)) < 400


def test_estimate_tokens_is_close_to_tiktoken() -> None:
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    bundled = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base")
    samples = [
        HARD_LOOKING_SYSTEM_PROMPT,
        "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins with four. "
        "She sells the remainder at the farmers' market daily for $2 per fresh duck egg. How much does she make?",
        json.dumps(weather_tool()) * 10,
        "Приветствую! Как настроить маршрутизацию запросов между локальной и облачной моделью? " * 5,
        "ローカルモデルとクラウドモデルの間でリクエストをどのように振り分けますか。" * 5,
    ]
    for text in samples:
        exact = len(enc.encode(text))
        assert 0.6 * exact <= estimate_tokens(text) <= 1.5 * exact, text[:40]
