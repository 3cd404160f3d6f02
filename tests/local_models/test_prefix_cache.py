"""A session's KV prefix survives another session's request in between (local_models/prefix_cache.py).

Real servers on loopback with the embedded model, driven by the official openai client; what is checked is what a
user sees: `usage.prompt_tokens_details.cached_tokens` and the answers themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess

pytestmark = pytest.mark.model

CONTEXT_TOKENS = 2048


def _task(topic: str) -> str:
    """A long, session-specific instruction (about 400 tokens), like the stable head of an agent's prompt."""
    lines = [f"You plan the next step of a task about {topic}. Rules you follow:"]
    lines += [
        f"Rule {i}: when the {topic} record number {i} is incomplete, look it up before you answer." for i in range(24)
    ]
    return "\n".join(lines)


def _step(
    messages: list[ChatCompletionMessageParam], answer: ChatCompletion, follow_up: str
) -> list[ChatCompletionMessageParam]:
    """The next step of a session: the previous messages, the model's answer, a new user turn."""
    return [
        *messages,
        {"role": "assistant", "content": answer.choices[0].message.content or ""},
        {"role": "user", "content": follow_up},
    ]


def _ask(client: openai.OpenAI, session: str, messages: list[ChatCompletionMessageParam]) -> ChatCompletion:
    return client.chat.completions.create(
        model="local",
        messages=messages,
        max_tokens=8,
        temperature=0,
        seed=7,
        extra_headers={"X-Tiergate-Session": session},
    )


def _cached(answer: ChatCompletion) -> int:
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    return answer.usage.prompt_tokens_details.cached_tokens or 0


def _prompt_tokens(answer: ChatCompletion) -> int:
    assert answer.usage is not None
    return answer.usage.prompt_tokens


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, openai.OpenAI]]:
    """Three gateways: the cache on (64 MB), bounded to one session state (9.5 MB each here: 14 MB), and off (0)."""
    started: list[GatewayProcess] = []
    clients: dict[str, openai.OpenAI] = {}
    try:
        for label, megabytes in (("on", 64), ("tight", 14), ("off", 0)):
            model = {**LOCAL_TEST_MODEL, "context_tokens": CONTEXT_TOKENS, "prefix_cache_mb": megabytes}
            proc = GatewayProcess({"local_models": [model]}, Path(tmp_path_factory.mktemp(f"prefix-{label}")))
            started.append(proc.start())
            clients[label] = openai.OpenAI(base_url=proc.base_url, api_key="unused", max_retries=0, timeout=300)
        yield clients
    finally:
        for proc in started:
            proc.stop()


def _interleaved(client: openai.OpenAI) -> tuple[ChatCompletion, ChatCompletion, ChatCompletion]:
    """Session A step 1, session B step 1, session A step 2 (which extends A's step 1)."""
    a1_messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": _task("invoices")}]
    a1 = _ask(client, "session-a", a1_messages)
    _ask(client, "session-b", [{"role": "user", "content": _task("shipments")}])
    a2 = _ask(client, "session-a", _step(a1_messages, a1, "Which record comes next?"))
    return a1, a2, _ask(client, "session-b", [{"role": "user", "content": _task("shipments")}])


def test_session_prefix_is_restored_after_another_session(servers: dict[str, openai.OpenAI]) -> None:
    a1, a2, _ = _interleaved(servers["on"])
    assert _prompt_tokens(a1) > 300
    assert _cached(a2) >= _prompt_tokens(a1)  # A's step-1 prompt came back from the cache, not from evaluation
    assert _cached(a2) < _prompt_tokens(a2)


def test_restored_state_gives_the_same_answers_as_evaluating_in_full(servers: dict[str, openai.OpenAI]) -> None:
    # The second round starts from contexts that were themselves restored (on Gemma 3, with only the last window
    # of its sliding-window layers): the round where a careless reuse goes wrong.
    rounds = [_interleaved(servers["on"]), _interleaved(servers["on"])]
    reference = _interleaved(servers["off"])
    assert _cached(reference[1]) < _prompt_tokens(reference[0]) // 2  # off: B's request displaced A's prefix
    for answers in rounds:
        for on, off in zip(answers, reference, strict=True):
            assert on.choices[0].message.content == off.choices[0].message.content
            assert on.choices[0].finish_reason == off.choices[0].finish_reason


def test_least_recently_used_session_is_dropped_at_the_byte_bound(servers: dict[str, openai.OpenAI]) -> None:
    client = servers["tight"]
    first: dict[str, list[ChatCompletionMessageParam]] = {}
    answers: dict[str, ChatCompletion] = {}
    for session, topic in (("a", "invoices"), ("b", "shipments"), ("c", "payroll")):
        first[session] = [{"role": "user", "content": _task(topic)}]
        answers[session] = _ask(client, session, first[session])
    # The bound holds one state: saving B (displaced by C) dropped A, the least recently used.
    b2 = _ask(client, "b", _step(first["b"], answers["b"], "Which record comes next?"))
    a2 = _ask(client, "a", _step(first["a"], answers["a"], "Which record comes next?"))
    assert _cached(b2) >= _prompt_tokens(answers["b"])
    assert _cached(a2) < _prompt_tokens(answers["a"]) // 2
