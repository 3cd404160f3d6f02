"""The rule engine: the shipped defaults, ordering, every operator, privacy pinning, and precise load errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire import ChatCompletionRequest
from router.chat import ChatRequest
from router.explain import rules_main
from router.rules import RulesError, RuleSet, default_rules_path, load_rules, parse_rules
from router.sessions import SessionState
from router.signals import SignalContext, Signals, extract_signals

CONTEXT = SignalContext(local_context_tokens=8192)
TRIVIAL = "What is the capital of France?"
HARD = (
    "Prove that the sum of the first n odd numbers is n^2, step by step. Then write a Python function that "
    "computes it, analyze its complexity, and compare it with the closed-form approach. Also explain why the "
    "induction step holds."
)
SYSTEM_3000 = "You are a careful assistant who follows the operator's policies to the letter. " * 200


def chat(*texts: str, system: str | None = None, model: str = "auto", **extra: Any) -> ChatRequest:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": t} for t in texts]
    raw = {"model": model, "messages": messages, **extra}
    return ChatCompletionRequest.model_validate(raw).to_internal(request_id="t", raw=raw)


def decide(rules: RuleSet, request: ChatRequest, context: SignalContext = CONTEXT) -> tuple[str, str]:
    decision = rules.decide(extract_signals(request, context), request)
    return decision.action, decision.rule


def rules_file(rules: str, *, threshold: float = 0.5, extra: str = "") -> RuleSet:
    return parse_rules(f"version: 1\nthreshold: {threshold}\n{extra}\nrules:\n{rules}", source="test.yaml")


@pytest.fixture(scope="module")
def default() -> RuleSet:
    return load_rules(default_rules_path())


# --- the shipped defaults -------------------------------------------------------------------------------------


def test_default_sends_a_trivial_question_local(default: RuleSet) -> None:
    assert decide(default, chat(TRIVIAL)) == ("local", "default")


def test_default_keeps_a_trivial_question_local_behind_a_3000_token_system_prompt(default: RuleSet) -> None:
    request = chat(TRIVIAL, system=SYSTEM_3000)
    assert extract_signals(request, CONTEXT).prompt_tokens > 3000
    assert decide(default, request) == ("local", "default")


def test_default_sends_a_hard_multi_step_prompt_frontier(default: RuleSet) -> None:
    decision = default.decide(extract_signals(chat(HARD), CONTEXT), chat(HARD))
    assert (decision.action, decision.rule) == ("frontier", "default")
    assert decision.score >= default.threshold
    assert decision.reason.startswith(f"score {decision.score:.3f} >=")


def test_default_sends_images_frontier_without_fallback(default: RuleSet) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    raw = {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi?"}, image]}]}
    request = ChatCompletionRequest.model_validate(raw).to_internal(request_id="t", raw=raw)
    decision = default.decide(extract_signals(request, CONTEXT), request)
    assert (decision.action, decision.rule, decision.allow_fallback) == ("frontier", "images-need-vision", False)
    assert "images=1" in decision.reason


def test_default_sends_what_does_not_fit_frontier(default: RuleSet) -> None:
    small = SignalContext(local_context_tokens=1024)
    assert decide(default, chat(TRIVIAL, system=SYSTEM_3000), small) == ("frontier", "too-long-for-local")


def test_default_escalates_a_stalled_agent(default: RuleSet) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Find x."}]
    for _ in range(3):
        messages += [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "content": "[]", "tool_call_id": "c1"},
        ]
    raw = {"model": "auto", "messages": messages}
    request = ChatCompletionRequest.model_validate(raw).to_internal(request_id="t", raw=raw)
    assert decide(default, request) == ("frontier", "agent-stalled")


def test_default_escalates_a_second_correction_in_a_session(default: RuleSet) -> None:
    raw = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "Sum 17 and 25."},
            {"role": "assistant", "content": "41"},
            {"role": "user", "content": "No, that's wrong."},
        ],
    }
    request = ChatCompletionRequest.model_validate(raw).to_internal(request_id="t", raw=raw)
    assert decide(default, request)[0] == "local"
    corrected_before = replace(CONTEXT, session=SessionState(steps=3, corrections=1))
    assert decide(default, request, corrected_before) == ("frontier", "repeated-corrections")


def test_default_pins_local_only_keys_even_when_the_client_asks_for_frontier(default: RuleSet) -> None:
    pinned = replace(CONTEXT, policy_tags=frozenset({"local-only"}))
    for request in (chat(HARD), chat(HARD, model="frontier")):
        decision = default.enforced(extract_signals(request, pinned), request)
        assert decision is not None
        assert (decision.action, decision.rule, decision.allow_fallback) == ("local", "local-only-key", False)
    assert default.enforced(extract_signals(chat(HARD, model="frontier"), CONTEXT), chat(HARD)) is None


def test_shipped_rules_name_no_models(default: RuleSet) -> None:
    assert default.referenced_models() == {}


# --- ordering ---------------------------------------------------------------------------------------------------

TWO_MATCHING = """
  - name: {first}
    when: {{user_turns: {{">=": 1}}}}
    action: {first_action}
  - name: {second}
    when: {{messages: {{">=": 1}}}}
    action: {second_action}
"""


def test_first_matching_rule_wins() -> None:
    a = rules_file(TWO_MATCHING.format(first="a", first_action="frontier", second="b", second_action="local"))
    b = rules_file(TWO_MATCHING.format(first="b", first_action="local", second="a", second_action="frontier"))
    assert decide(a, chat(TRIVIAL)) == ("frontier", "a")
    assert decide(b, chat(TRIVIAL)) == ("local", "b")


def test_default_rule_applies_when_nothing_matches() -> None:
    rules = rules_file(
        "  - name: never\n    when: {images: {'>': 5}}\n    action: reject\n    message: no",
        threshold=0.0,
        extra="default: {frontier_model: gpt-4.1-mini}",
    )
    decision = rules.decide(extract_signals(chat(TRIVIAL), CONTEXT), chat(TRIVIAL))
    assert (decision.action, decision.rule, decision.model) == ("frontier", "default", "gpt-4.1-mini")


def test_reject_carries_its_message_and_a_frontier_rule_its_model() -> None:
    rules = rules_file(
        """
  - name: too-many-tools
    when: {tools: {">": 1}}
    action: reject
    message: At most one tool, please.
  - name: json-to-big-model
    when: {structured_output: true}
    action: frontier
    model: gpt-4.1
"""
    )
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    tool2 = {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}}
    request = chat(TRIVIAL, tools=[tool, tool2])
    rejected = rules.decide(extract_signals(request, CONTEXT), request)
    assert (rejected.action, rejected.message, rejected.model) == ("reject", "At most one tool, please.", None)
    request = chat(TRIVIAL, response_format={"type": "json_object"})
    routed = rules.decide(extract_signals(request, CONTEXT), request)
    assert (routed.action, routed.model, routed.message) == ("frontier", "gpt-4.1", None)
    assert rules.referenced_models() == {"gpt-4.1": "frontier"}


# --- every operator ---------------------------------------------------------------------------------------------

BASE = extract_signals(chat(TRIVIAL), CONTEXT)
OPERATOR_CASES = [
    # (condition, signal changes, expected)
    ('{user_turns: {"==": 1}}', {}, True),
    ('{user_turns: {"==": 2}}', {}, False),
    ('{tool_choice: {"!=": auto}}', {"tool_choice": "required"}, True),
    ('{tool_choice: {"!=": auto}}', {}, False),
    ('{tools: {"<": 3}}', {"tools": 2}, True),
    ('{tools: {"<": 3}}', {"tools": 3}, False),
    ('{tools: {"<=": 3}}', {"tools": 3}, True),
    ('{tools: {"<=": 3}}', {"tools": 4}, False),
    ('{content_tokens: {">": 100}}', {"content_tokens": 101}, True),
    ('{content_tokens: {">": 100}}', {"content_tokens": 100}, False),
    ('{local_queue_depth: {">=": 4}}', {"local_queue_depth": 4}, True),
    ('{local_queue_depth: {">=": 4}}', {"local_queue_depth": 3}, False),
    ("{response_format: {in: [json_object, json_schema]}}", {"response_format": "json_schema"}, True),
    ("{response_format: {in: [json_object, json_schema]}}", {}, False),
    ("{tools: {in: [1, 2, 3]}}", {"tools": 2}, True),
    ("{model: {matches: '^gpt-4'}}", {"model": "gpt-4.1"}, True),
    ("{model: {matches: '^gpt-4'}}", {}, False),
    ("{policy_tags: {contains: eu}}", {"policy_tags": ("eu", "local-only")}, True),
    ("{policy_tags: {contains: eu}}", {"policy_tags": ("us",)}, False),
    ("{model: {contains: mini}}", {"model": "gpt-4.1-mini"}, True),
    ("{stalled: true}", {"stalled": True}, True),
    ("{stalled: true}", {}, False),
    ("{tool_choice: [required, named]}", {"tool_choice": "named"}, True),
    ("{tool_choice: [required, named]}", {}, False),
    ('{score: {">=": 0.5}}', {}, True),  # no weights: every score is 0.5
    ('{score: {"<": 0.5}}', {}, False),
    ('{tools: {">": 1}, images: {">": 0}}', {"tools": 2, "images": 1}, True),
    ('{tools: {">": 1}, images: {">": 0}}', {"tools": 2}, False),
    ('{content_tokens: {">=": 10, "<": 20}}', {"content_tokens": 15}, True),
    ('{content_tokens: {">=": 10, "<": 20}}', {"content_tokens": 25}, False),
    ('{all: [{tools: {">": 1}}, {images: {">": 0}}]}', {"tools": 2, "images": 1}, True),
    ('{all: [{tools: {">": 1}}, {images: {">": 0}}]}', {"images": 1}, False),
    ('{any: [{tools: {">": 1}}, {images: {">": 0}}]}', {"images": 1}, True),
    ('{any: [{tools: {">": 1}}, {images: {">": 0}}]}', {}, False),
    ('{not: {images: {">": 0}}}', {}, True),
    ('{not: {images: {">": 0}}}', {"images": 1}, False),
]


@pytest.mark.parametrize(("condition", "changes", "expected"), OPERATOR_CASES)
def test_operator(condition: str, changes: dict[str, Any], expected: bool) -> None:
    rules = rules_file(f"  - name: r\n    when: {condition}\n    action: frontier", threshold=1.0)
    signals: Signals = replace(BASE, **changes)
    assert (rules.decide(signals, chat(TRIVIAL)).rule == "r") is expected


@pytest.mark.parametrize(
    ("subject", "texts", "expected"),
    [
        ("text", ["My SSN is 123-45-6789."], True),
        ("text", ["My order is 123-456-789."], False),
        ("user_text", ["123-45-6789", "and more"], True),
        ("last_user_text", ["123-45-6789", "and more"], False),
        ("last_user_text", ["hi", "123-45-6789"], True),
    ],
)
def test_matches_on_message_text(subject: str, texts: list[str], expected: bool) -> None:
    rules = rules_file(
        f"  - name: r\n    when: {{{subject}: {{matches: '\\b\\d{{3}}-\\d{{2}}-\\d{{4}}\\b'}}}}\n    action: local",
        threshold=0.0,
    )
    request = chat(*texts)
    assert (rules.decide(extract_signals(request, CONTEXT), request).rule == "r") is expected


def test_contains_on_message_text() -> None:
    rules = rules_file("  - name: r\n    when: {text: {contains: CONFIDENTIAL}}\n    action: local", threshold=0.0)
    request = chat("Summarise this CONFIDENTIAL memo.")
    assert rules.decide(extract_signals(request, CONTEXT), request).rule == "r"
    assert rules.decide(extract_signals(chat(TRIVIAL), CONTEXT), chat(TRIVIAL)).rule == "default"


# --- privacy pinning ----------------------------------------------------------------------------------------------

PII_PIN = """
  - name: pii-stays-local
    when: {text: {matches: '\\b\\d{3}-\\d{2}-\\d{4}\\b'}}
    action: local
    fallback: false
    enforce: true
  - name: hard-goes-frontier
    when: {reasoning_markers: {">": 0}}
    action: frontier
"""


def test_privacy_pin_keeps_a_hard_request_local_without_fallback() -> None:
    rules = rules_file(PII_PIN, threshold=0.0)
    request = chat(HARD + " My SSN is 123-45-6789.", system="You are helpful.")
    decision = rules.decide(extract_signals(request, CONTEXT), request)
    assert (decision.action, decision.rule, decision.allow_fallback) == ("local", "pii-stays-local", False)
    assert "123-45" not in decision.reason  # reasons never quote message text
    without_pii = chat(HARD)
    assert decide(rules, without_pii) == ("frontier", "hard-goes-frontier")


def test_privacy_pin_overrides_a_client_that_names_the_frontier_tier() -> None:
    rules = rules_file(PII_PIN)
    request = chat("My SSN is 123-45-6789, fill in the form.", model="frontier")
    decision = rules.enforced(extract_signals(request, CONTEXT), request)
    assert decision is not None and (decision.action, decision.allow_fallback) == ("local", False)
    hard = chat(HARD, model="frontier")
    assert rules.enforced(extract_signals(hard, CONTEXT), hard) is None  # not enforced: the client's choice stands


def test_a_regex_that_runs_too_long_counts_as_a_match() -> None:
    rules = rules_file(
        "  - name: pin\n    when: {text: {matches: '(a|aa)+$'}}\n    action: local\n    fallback: false",
        threshold=0.0,
        extra="regex_timeout_ms: 5",
    )
    request = chat("a" * 40 + "!")
    decision = rules.decide(extract_signals(request, CONTEXT), request)
    assert (decision.action, decision.rule) == ("local", "pin")
    assert "time limit" in decision.reason
    assert rules.regex_timeouts == 1


# --- scores -----------------------------------------------------------------------------------------------------

SCORE_RULES = """
score:
  bias: -2.0
  weights:
    content_tokens: {weight: 1.5, saturate: 8000, transform: log}
    math: {weight: 1.2, saturate: 4}
    stalled: 2.0
    tools: {weight: -0.5, saturate: 10}
"""
SCORED = rules_file("  []", extra=SCORE_RULES)


@settings(max_examples=50, deadline=None)
@given(
    tokens=st.integers(0, 1_000_000),
    math=st.integers(0, 60),
    stalled=st.booleans(),
    tools=st.integers(0, 200),
)
def test_score_is_within_0_and_1_and_rises_with_positive_weights(
    tokens: int, math: int, stalled: bool, tools: int
) -> None:
    rules = SCORED
    signals = replace(BASE, content_tokens=tokens, math=math, stalled=stalled, tools=tools)
    score = rules.score(signals)
    assert 0.0 <= score <= 1.0
    assert rules.score(replace(signals, math=math + 1)) >= score
    assert rules.score(replace(signals, tools=tools + 1)) <= score


def test_explained_score_matches_the_score(default: RuleSet) -> None:
    signals = extract_signals(chat(HARD), CONTEXT)
    score, parts = default.explain_score(signals)
    assert score == pytest.approx(default.score(signals))
    assert parts[0].term >= parts[-1].term
    assert {p.signal for p in parts if p.term > 0} >= {"reasoning_markers", "math", "code_markers"}


# --- refusing bad files, with the path of the bad field -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nthreshold: 0.5\nthresold: 0.4\n", "thresold (line 3): unknown field"),
        ("version: 1\nthreshold: 1.5\n", "threshold (line 2): Input should be less than or equal to 1"),
        ("version: 2\nthreshold: 0.5\n", "version (line 1)"),
        ("threshold: 0.5\n", "version: Field required"),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {imagez: {'>': 0}}\n    action: local\n",
            "rules[0].when.imagez (line 5): unknown signal 'imagez'",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {images: {'>': 0}}\n    action: local\n"
            "  - name: b\n    when:\n      any:\n        - stalled: true\n        - tool_choice: {'>': 3}\n"
            "    action: frontier\n",
            "rules[1].when.any[1].tool_choice.> (line 11): tool_choice is a string: operator '>' does not apply",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {images: {'>': many}}\n    action: local\n",
            "rules[0].when.images.> (line 5): images is a number; cannot compare it with 'many'",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {text: {matches: '(unclosed'}}\n"
            "    action: local\n",
            "rules[0].when.text.matches (line 5): bad regular expression '(unclosed'",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {images: {'~': 1}}\n    action: local\n",
            "rules[0].when.images.~ (line 5): unknown operator '~'",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {images: {'>': 0}}\n    action: reject\n",
            "rules[0] (line 4): Value error, a reject rule needs a message",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {images: 1}\n    action: upstairs\n",
            "rules[0].action (line 6): Input should be 'local', 'frontier' or 'reject'",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - name: a\n    when: {}\n    action: local\n",
            "rules[0].when (line 5): a condition needs at least one key",
        ),
        (
            "version: 1\nthreshold: 0.5\nrules:\n  - {name: a, when: {images: 1}, action: local}\n"
            "  - {name: a, when: {images: 2}, action: local}\n",
            "rule name 'a' is used twice",
        ),
        ("version: 1\nthreshold: 0.5\nscore:\n  weights:\n    model: 1.0\n", "score.weights.model (line 5)"),
        ("version: 1\nthreshold: 0.5\nscore:\n  weights:\n    mathz: 1.0\n", "'mathz' is not a signal"),
        ("version: 1\nthreshold: 0.5\nthreshold: 0.6\n", "not valid YAML"),
        ("version: 1\nthreshold: [0.5\n", "not valid YAML"),
        ("- just\n- a list\n", "a rules file is a mapping"),
    ],
)
def test_bad_files_fail_with_the_path_of_the_bad_field(text: str, expected: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source="bad.yaml")
    message = str(caught.value)
    assert message.startswith("bad.yaml: ")
    assert expected in message


def test_load_rules_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"missing\.yaml: cannot read"):
        load_rules(tmp_path / "missing.yaml")


# --- tiergate rules check / explain -------------------------------------------------------------------------------


def test_rules_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nthreshold: 2\n")
    assert rules_main(["check", str(default_rules_path())]) == 0
    assert "ok: " in capsys.readouterr().out
    assert rules_main(["check", str(default_rules_path()), str(bad)]) == 1
    assert "bad.yaml: threshold (line 2)" in capsys.readouterr().err
    assert rules_main(["check"]) == 2


def test_rules_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"model": "auto", "messages": [{"role": "user", "content": HARD}]}))
    assert rules_main(["explain", str(default_rules_path()), "--request", str(req)]) == 0
    out = capsys.readouterr().out
    assert "reasoning_markers" in out and "score" in out
    assert "decision frontier by rule 'default'" in out

    assert (
        rules_main(["explain", str(default_rules_path()), "--request", str(req), "--tag", "local-only", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["decision"]["rule"] == "local-only-key" and report["decision"]["allow_fallback"] is False
    assert report["signals"]["policy_tags"] == ["local-only"]


def test_rules_explain_refuses_a_bad_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"model": "auto", "messages": []}))
    assert rules_main(["explain", str(default_rules_path()), "--request", str(req)]) == 1
    assert "messages" in capsys.readouterr().err


def test_the_schema_readmes_examples_are_valid() -> None:
    readme = (default_rules_path().parent / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in readme.split("```yaml\n")[1:]]
    full_file, conditions, pins, examples = blocks
    assert len(parse_rules(full_file).rules) == 2
    examples_of_conditions = conditions.strip().split("\nwhen:")
    assert len(examples_of_conditions) == 8
    for i, condition in enumerate(examples_of_conditions):
        indented = "\n".join("    " + line for line in ("when:" + condition.removeprefix("when:")).splitlines())
        parse_rules(f"version: 1\nthreshold: 0.5\nrules:\n  - name: r{i}\n{indented}\n    action: local\n")
    assert len(parse_rules("version: 1\nthreshold: 0.5\n" + pins).rules) == 2
    assert len(parse_rules("version: 1\nthreshold: 0.5\nrules:\n" + examples).rules) == 4
