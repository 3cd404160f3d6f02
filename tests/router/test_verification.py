"""Verification of local answers: each way an answer can be malformed is caught, good answers pass."""

from __future__ import annotations

import pytest

from router.chat import (
    ChatRequest,
    Completion,
    Message,
    NamedToolChoice,
    ResponseFormat,
    Sampling,
    Tool,
    ToolCall,
    Usage,
)
from router.verification import VERIFIERS, VerificationChain

WEATHER = Tool(
    "get_weather",
    "Current weather.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
)


def _request(**kw: object) -> ChatRequest:
    return ChatRequest("r", "auto", [Message("user", "Weather in Oslo?")], tools=[WEATHER], **kw)  # type: ignore[arg-type]


def _answer(text: str | None = None, calls: list[ToolCall] | None = None, finish: str = "stop") -> Completion:
    return Completion("m", text, calls or [], finish, Usage(10, 5))  # type: ignore[arg-type]


def _call(arguments: str, name: str = "get_weather") -> list[ToolCall]:
    return [ToolCall("c1", name, arguments)]


CHAIN = VerificationChain()


def test_a_good_tool_call_passes() -> None:
    assert CHAIN.check(_request(), _answer(calls=_call('{"city": "Oslo", "unit": "celsius"}'), finish="tool_calls")).ok


@pytest.mark.parametrize(
    ("calls", "reason"),
    [
        (_call('{"city": "Oslo", "unit": '), "tool_call_unparsable"),
        (_call('["Oslo"]'), "tool_call_unparsable"),
        (_call('{"city": "Oslo"}'), "tool_call_invalid_arguments"),
        (_call('{"city": "Oslo", "unit": "kelvin"}'), "tool_call_invalid_arguments"),
        (_call('{"city": 7, "unit": "celsius"}'), "tool_call_invalid_arguments"),
        (_call('{"city": "Oslo", "unit": "celsius"}', name="get_time"), "tool_call_unknown_tool"),
    ],
)
def test_malformed_tool_calls_fail(calls: list[ToolCall], reason: str) -> None:
    verdict = CHAIN.check(_request(), _answer(calls=calls, finish="tool_calls"))
    assert not verdict.ok and verdict.reason == reason


def test_a_required_call_that_never_came_fails() -> None:
    verdict = CHAIN.check(_request(tool_choice="required"), _answer(text='{"name": "get_wea', finish="length"))
    assert not verdict.ok


def test_a_named_choice_must_be_honoured() -> None:
    other = Tool("get_time", "", {"type": "object", "properties": {}})
    request = ChatRequest(
        "r", "auto", [Message("user", "x")], tools=[WEATHER, other], tool_choice=NamedToolChoice("get_weather")
    )
    verdict = CHAIN.check(request, _answer(calls=_call("{}", name="get_time"), finish="tool_calls"))
    assert not verdict.ok and verdict.reason == "tool_call_wrong_tool"


def test_empty_and_truncated_answers_fail() -> None:
    assert CHAIN.check(_request(), _answer(text="  ")).reason == "empty_answer"
    assert CHAIN.check(_request(), _answer(text="Once upon", finish="length")).reason == "finish_length"


def test_a_stop_at_the_clients_own_max_tokens_passes() -> None:
    request = _request(sampling=Sampling(max_tokens=5))
    assert CHAIN.check(request, _answer(text="Once upon a time", finish="length")).ok


def test_json_answers_are_checked_against_their_schema() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    request = _request(response_format=ResponseFormat("json_schema", schema))
    assert CHAIN.check(request, _answer(text='{"age": 3}')).ok
    assert CHAIN.check(request, _answer(text='{"age": "three"}')).reason == "json_schema_mismatch"
    assert CHAIN.check(request, _answer(text='{"age": ')).reason == "json_unparsable"


PLANNER_PROMPT = (
    "Available tools: [Python_Coder_Tool, Web_Search_Tool]\nQuery: what is 2+2?\n"
    "Respond with:\nJustification: <why>\nContext: <facts>\nSub-Goal: <next step>\nTool Name: <one tool>"
)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ("Justification: simple.\nContext: none\nSub-Goal: compute 2+2\nTool Name: Python_Coder_Tool", True),
        ("Justification: x\nContext: y\nSub-Goal: z\nTool Name: Web_Search_Tool", True),
        # Markdown-bold labels and a quoted name, as 7B planners often write them.
        ("**Context:** y\n**Sub-Goal:** z\n**Tool Name:** `Python_Coder_Tool`", True),
        # A changed mind: AgentFlow acts on the last Tool Name, so that is the one checked.
        ("Context: y\nSub-Goal: z\nTool Name: Calculator_Tool\nCorrection:\nTool Name: Web_Search_Tool", True),
        ("Context: y\nSub-Goal: z\nTool Name: Web_Search_Tool\nCorrection:\nTool Name: Calculator_Tool", False),
        ("Justification: x\nContext: y\nSub-Goal: z\nTool Name: Calculator_Tool", False),
        ("Justification: x\nContext: y\nSub-Goal: z\nTool Name: python_coder_tool", False),
        ("Context: y\nTool Name: Python_Coder_Tool", False),
        ("Sub-Goal: z\nTool Name: Python_Coder_Tool", False),
        ("Context: y\nSub-Goal: z", False),
        ("The answer is 4.", False),
        ("", False),
    ],
)
def test_agentflow_planner_format(answer: str, ok: bool) -> None:
    verifier = VERIFIERS["agentflow_planner"]()
    request = ChatRequest("r", "auto", [Message("user", PLANNER_PROMPT)])
    assert verifier.check(request, _answer(text=answer)).ok is ok


def test_planner_failures_say_why() -> None:
    verifier = VERIFIERS["agentflow_planner"]()
    request = ChatRequest("r", "auto", [Message("system", PLANNER_PROMPT), Message("user", "Next step?")])
    unknown = verifier.check(request, _answer(text="Context: y\nSub-Goal: z\nTool Name: Calculator_Tool"))
    assert (unknown.reason, unknown.detail) == ("planner_unknown_tool", "Calculator_Tool")
    assert verifier.check(request, _answer(text="4")).reason == "planner_format"


def test_only_planner_steps_are_held_to_the_planner_format() -> None:
    # The planner model also writes final answers; a prompt that asks for no `Tool Name:` is not a planner step.
    verifier = VERIFIERS["agentflow_planner"]()
    final_step = ChatRequest("r", "auto", [Message("user", "Steps so far: ... Give the final answer.")])
    assert verifier.check(final_step, _answer(text="The answer is 4.")).ok


def test_a_model_can_add_its_own_verifiers() -> None:
    chain = VerificationChain(per_model={"planner": ["agentflow_planner"]})
    request = ChatRequest("r", "auto", [Message("user", PLANNER_PROMPT)])
    prose = "The answer is 4."
    assert chain.check(request, Completion("planner", prose, [], "stop", Usage(10, 5))).reason == "planner_format"
    assert chain.check(request, Completion("other-model", prose, [], "stop", Usage(10, 5))).ok
    # The deployment-wide checks still run first for that model.
    assert chain.check(request, Completion("planner", "", [], "stop", Usage(10, 5))).reason == "empty_answer"
    with pytest.raises(ValueError, match="unknown verifiers"):
        VerificationChain(per_model={"planner": ["psychic"]})


def test_unknown_verifier_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown verifiers"):
        VerificationChain(["not_empty", "psychic"])
