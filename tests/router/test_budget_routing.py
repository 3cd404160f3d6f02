"""A caller whose frontier budget is spent never reaches a frontier provider, whatever else happens; a caller whose
budget runs down sees its score thresholds raised.

The frontier tier is the real OpenAI-compatible backend talking HTTP to a scripted upstream on loopback, so "no
frontier call" is read from what the upstream received. The local tier is a scripted backend (the embedded model
cannot be made busy, down or wrong on demand)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from support.scripted_upstream import Reply, ScriptedUpstream

from router.backend import Backend
from router.catalog import ModelCatalog
from router.chat import Caller, ChatRequest, Completion, Message, StreamEnd, StreamEvent, TextDelta, Usage
from router.errors import BudgetExceeded, QueueFull, TiergateError, Unavailable
from router.frontier import FrontierModelSettings, build_frontier_backend
from router.rule_store import RuleStore
from router.service import Answer, ChatService
from router.sessions import InMemorySessionStore
from router.verification import VerificationChain

# Every request scores exactly 0.5 (no weights, bias 0) against a threshold of 0.5: the default rule escalates it,
# and any positive escalation bias keeps it local. The `busy-score` rule escalates at score >= 0.45 while the local
# queue is long, to show that rule conditions on the score move with the bias too.
RULES = """
version: 1
threshold: 0.5
score: {bias: 0.0}
rules:
  - name: images-need-vision
    when: {images: {">": 0}}
    action: frontier
    fallback: false
  - name: busy-score
    when: {local_queue_depth: {">=": 4}, score: {">=": 0.45}}
    action: frontier
"""

SPENT = Caller(key_id="key_spent", frontier_allowed=False)
FULL = Caller(key_id="key_full")


class ScriptedLocal(Backend):
    """The local tier on demand: answers with `finish_reason`, or raises `error`; `depth` is its queue."""

    tier = "local"

    def __init__(self) -> None:
        self.name = "gemma3-270m"
        self.error: TiergateError | None = None
        self.finish_reason: str = "stop"
        self.depth = 0
        self.calls = 0

    @property
    def queue_depth(self) -> int:
        return self.depth

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Completion(self.name, "from local", [], self.finish_reason, Usage(3, 2))  # type: ignore[arg-type]

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        yield TextDelta("from local")
        yield StreamEnd(self.finish_reason, Usage(3, 2), self.name)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier")) as up:
        yield up


@pytest.fixture
def local() -> ScriptedLocal:
    return ScriptedLocal()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


Scenario = Callable[[ChatService], Awaitable[None]]
Run = Callable[[Scenario], None]


@pytest.fixture
def run(upstream: ScriptedUpstream, local: ScriptedLocal, rules_file: Path) -> Run:
    """Runs a scenario against a service built in the scenario's own event loop (the frontier client's connection
    pool belongs to that loop)."""

    async def in_loop(scenario: Scenario) -> None:
        frontier = build_frontier_backend(
            FrontierModelSettings(name="gpt-test", model="gpt-4.1-mini", api_base=upstream.base_url, api_key_env=None)
        )
        await frontier.start()
        service = ChatService(
            ModelCatalog([local, frontier]),
            RuleStore(rules_file),
            InMemorySessionStore(max_sessions=10, ttl_s=60),
            VerificationChain(),
        )
        try:
            await scenario(service)
        finally:
            await frontier.close()

    return lambda scenario: asyncio.run(in_loop(scenario))


def _request(caller: Caller, model: str = "auto", *, images: int = 0, stream: bool = False) -> ChatRequest:
    message = Message(role="user", content="What is in this picture?" if images else "Hi", image_count=images)
    return ChatRequest("chatcmpl-test", model, [message], stream=stream, caller=caller)


async def _drain(answer: Answer) -> list[StreamEvent]:
    return [event async for event in answer.events] if answer.events is not None else []


def test_a_full_budget_escalates_at_the_threshold(run: Run, upstream: ScriptedUpstream) -> None:
    async def scenario(service: ChatService) -> None:
        answer = await service.answer(_request(FULL))
        assert answer.trace.tier == "frontier" and answer.completion is not None
        assert answer.completion.text == "from the frontier"

    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before + 1


def test_escalation_bias_raises_the_default_threshold(run: Run, upstream: ScriptedUpstream) -> None:
    async def scenario(service: ChatService) -> None:
        answer = await service.answer(_request(Caller(key_id="key_low", escalation_bias=0.05)))
        assert answer.trace.tier == "local" and answer.trace.rule == "default"
        assert "budget bias 0.050" in answer.trace.reason

    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before


def test_escalation_bias_raises_score_thresholds_in_rules(
    run: Run, local: ScriptedLocal, upstream: ScriptedUpstream
) -> None:
    async def scenario(service: ChatService) -> None:
        busy = await service.answer(_request(FULL))
        assert busy.trace.rule == "busy-score" and busy.trace.tier == "frontier"
        # Bias 0.03: the rule's 0.45 becomes 0.48, still below the score 0.5, so the rule still escalates.
        biased = await service.answer(_request(Caller(key_id="key_low", escalation_bias=0.03)))
        assert biased.trace.rule == "busy-score" and biased.trace.tier == "frontier"
        # Bias 0.06: the rule's bar is 0.51 and the default's 0.56: the request stays local.
        held = await service.answer(_request(Caller(key_id="key_low", escalation_bias=0.06)))
        assert held.trace.rule == "default" and held.trace.tier == "local"

    local.depth = 5
    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before + 2


def test_spent_budget_keeps_an_escalating_request_local(run: Run, upstream: ScriptedUpstream) -> None:
    async def scenario(service: ChatService) -> None:
        answer = await service.answer(_request(SPENT))
        assert answer.trace.tier == "local" and answer.completion is not None
        assert answer.completion.text == "from local"
        assert "frontier budget is spent" in answer.trace.reason

    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before


def test_spent_budget_overrides_a_rule_that_needs_the_frontier(run: Run, upstream: ScriptedUpstream) -> None:
    async def scenario(service: ChatService) -> None:
        answer = await service.answer(_request(SPENT, images=1))
        assert answer.trace.rule == "images-need-vision" and answer.trace.tier == "local"

    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "error", [QueueFull("the local queue is full"), Unavailable("the local model is not loaded")], ids=["busy", "down"]
)
def test_no_spill_to_the_frontier_when_the_local_tier_cannot_answer(
    run: Run, local: ScriptedLocal, upstream: ScriptedUpstream, error: TiergateError, stream: bool
) -> None:
    async def scenario(service: ChatService) -> None:
        # With budget left, a request decided local (bias 0.05 keeps it there) spills to the frontier tier...
        spilled = await service.answer(_request(Caller(key_id="key_low", escalation_bias=0.05), stream=stream))
        await _drain(spilled)
        assert spilled.trace.tier == "frontier" and spilled.trace.escalated is not None
        assert len(upstream.requests) == before + 1
        # ...without, the client gets the local tier's own error.
        with pytest.raises(type(error)):
            await _drain(await service.answer(_request(SPENT, stream=stream)))

    local.error = error
    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before + 1


@pytest.mark.parametrize("stream", [False, True])
def test_no_escalation_when_a_local_answer_fails_verification(
    run: Run, local: ScriptedLocal, upstream: ScriptedUpstream, stream: bool
) -> None:
    async def scenario(service: ChatService) -> None:
        answer = await service.answer(_request(SPENT, stream=stream))
        events = await _drain(answer)
        if stream:
            assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "length"
        else:
            assert answer.completion is not None and answer.completion.finish_reason == "length"
        assert answer.trace.tier == "local" and answer.trace.escalated is None

    local.finish_reason = "length"  # cut short: fails the default verifiers, which would escalate it
    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before


@pytest.mark.parametrize("model", ["frontier", "gpt-test"])
def test_naming_a_frontier_model_with_a_spent_budget_is_refused(
    run: Run, upstream: ScriptedUpstream, model: str
) -> None:
    async def scenario(service: ChatService) -> None:
        with pytest.raises(BudgetExceeded) as raised:
            await service.answer(_request(SPENT, model=model))
        assert raised.value.status == 429 and raised.value.code == "budget_exceeded"
        assert "frontier budget is spent" in raised.value.message and "`auto` or `local`" in raised.value.message

    before = len(upstream.requests)
    run(scenario)
    assert len(upstream.requests) == before
