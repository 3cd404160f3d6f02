"""The condition language of rules files, compiled once at load into objects that test one request.

A condition is a YAML mapping. Its keys are signal names (see `router.signals.Signals`), `score`, a text subject
(`text`, `user_text`, `last_user_text`), or one of `all`, `any`, `not`; several keys in one mapping must all hold.

    images: {">": 0}                       # a comparison: ==, !=, <, <=, >, >=, in, matches, contains
    stalled: true                          # a scalar is shorthand for ==
    tool_choice: [required, named]         # a list is shorthand for in
    content_tokens: {">=": 500, "<": 4000} # several operators on one subject must all hold
    any: [{math: {">": 2}}, {reasoning_markers: {">": 2}}]
    not: {policy_tags: {contains: cloud-ok}}
    text: {matches: '\\b\\d{3}-\\d{2}-\\d{4}\\b'}

Every subject has a type, and each operator and value is checked against it at load, so a typo or a comparison
that can never hold fails the file with the path of the bad key. Regular expressions use the `regex` module, which
unlike `re` can stop a search after a time limit: a pattern that backtracks badly on some message cannot stall the
request path. A search past its limit raises `TimeoutError`, which the rule engine treats as a match (fail closed).
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

# `regex` ships no type hints; `unused-ignore` keeps this line valid once stubs or a mypy override are added.
import regex  # type: ignore[import-untyped, unused-ignore]

from router.chat import ChatRequest
from router.signals import SIGNAL_TYPES, Signals

TEXT_SUBJECTS = {
    "text": "the text of every message (system, user, assistant, tool) and of the assistant's tool call arguments",
    "user_text": "the text of every user message",
    "last_user_text": "the text of the latest user message",
}
COMBINATORS = ("all", "any", "not")
OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "matches", "contains")

_KIND_OPERATORS = {
    "number": ("==", "!=", "<", "<=", ">", ">=", "in"),
    "bool": ("==", "!="),
    "str": ("==", "!=", "in", "matches", "contains"),
    "tags": ("contains",),
    "text": ("matches", "contains"),
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


KeyPath = tuple[str | int, ...]
"""Where a key sits in the condition: mapping keys and list indexes, from the condition's root."""


class ConditionError(ValueError):
    """A condition that cannot be compiled; `path` points at the bad key."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(f"{'.'.join(map(str, path))}: {message}")
        self.path = path
        self.message = message


def subject_kind(subject: str) -> str | None:
    """`number`, `bool`, `str`, `tags` or `text`; None for a name that is no subject."""
    if subject == "score":
        return "number"
    if subject in TEXT_SUBJECTS:
        return "text"
    kind = SIGNAL_TYPES.get(subject)
    if kind is None:
        return None
    if kind is bool:
        return "bool"
    if kind is str:
        return "str"
    if kind is tuple:
        return "tags"
    return "number"


class Facts:
    """What conditions look at for one request: its signals, its score, and its message text, joined on first use."""

    __slots__ = ("_request", "_texts", "score", "signals", "threshold_bias")

    def __init__(self, signals: Signals, score: float, request: ChatRequest) -> None:
        self.signals = signals
        self.score = score
        self.threshold_bias = request.caller.escalation_bias
        """Added to every number a `score` condition compares with: as a key's frontier budget runs down, the
        bar for escalating rises (and a rule that keeps easy requests local covers more of them)."""
        self._request = request
        self._texts: dict[str, str] = {}

    def get(self, subject: str) -> Any:
        if subject == "score":
            return self.score
        if subject in TEXT_SUBJECTS:
            text = self._texts.get(subject)
            if text is None:
                text = self._texts[subject] = self._join(subject)
            return text
        return getattr(self.signals, subject)

    def _join(self, subject: str) -> str:
        messages = self._request.messages
        if subject == "last_user_text":
            return next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
        if subject == "user_text":
            return "\n".join(m.content or "" for m in messages if m.role == "user")
        parts: list[str] = []
        for m in messages:
            if m.content:
                parts.append(m.content)
            parts.extend(call.arguments for call in m.tool_calls)
        return "\n".join(parts)


class Condition(ABC):
    @abstractmethod
    def test(self, facts: Facts) -> bool:
        """Whether the condition holds. May raise `TimeoutError` from a regular expression search."""

    @abstractmethod
    def describe(self) -> str:
        """The condition as one line, for decisions' reasons and `tiergate rules explain`."""

    @abstractmethod
    def subjects(self) -> tuple[str, ...]:
        """The subjects it reads, in order, without repeats."""


class AllOf(Condition):
    def __init__(self, parts: list[Condition]) -> None:
        self.parts = parts

    def test(self, facts: Facts) -> bool:
        return all(part.test(facts) for part in self.parts)

    def describe(self) -> str:
        return _join_described(self.parts, " and ")

    def subjects(self) -> tuple[str, ...]:
        return _merge_subjects(self.parts)


class AnyOf(Condition):
    def __init__(self, parts: list[Condition]) -> None:
        self.parts = parts

    def test(self, facts: Facts) -> bool:
        return any(part.test(facts) for part in self.parts)

    def describe(self) -> str:
        return _join_described(self.parts, " or ")

    def subjects(self) -> tuple[str, ...]:
        return _merge_subjects(self.parts)


class Not(Condition):
    def __init__(self, part: Condition) -> None:
        self.part = part

    def test(self, facts: Facts) -> bool:
        return not self.part.test(facts)

    def describe(self) -> str:
        return f"not ({self.part.describe()})"

    def subjects(self) -> tuple[str, ...]:
        return self.part.subjects()


class Comparison(Condition):
    """`subject op value`, with the test built once at compile time."""

    def __init__(self, subject: str, op: str, value: Any, check: Callable[[Any], bool]) -> None:
        self.subject = subject
        self.op = op
        self.value = value
        self._check = check

    def test(self, facts: Facts) -> bool:
        return self._check(facts.get(self.subject))

    def describe(self) -> str:
        return f"{self.subject} {self.op} {self.value!r}"

    def subjects(self) -> tuple[str, ...]:
        return (self.subject,)


class ScoreComparison(Comparison):
    """`score op threshold`, where the threshold moves by the caller's escalation bias (`Facts.threshold_bias`)."""

    def __init__(self, op: str, threshold: float) -> None:
        compare = _COMPARE[op]
        super().__init__("score", op, threshold, lambda actual: compare(actual, threshold))
        self._compare = compare
        self._threshold = threshold

    def test(self, facts: Facts) -> bool:
        return self._compare(facts.score, self._threshold + facts.threshold_bias)


def _join_described(parts: list[Condition], glue: str) -> str:
    if len(parts) == 1:
        return parts[0].describe()
    return "(" + glue.join(part.describe() for part in parts) + ")"


def _merge_subjects(parts: list[Condition]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for part in parts for s in part.subjects()))


def compile_condition(raw: object, path: KeyPath = (), *, regex_timeout_s: float) -> Condition:
    """Compile a condition mapping. Raises `ConditionError` naming the path of the first bad key."""
    return _Compiler(regex_timeout_s).mapping(raw, path)


class _Compiler:
    def __init__(self, regex_timeout_s: float) -> None:
        self.timeout = regex_timeout_s

    def mapping(self, raw: object, path: KeyPath) -> Condition:
        if not isinstance(raw, dict):
            raise ConditionError(path, f"a condition is a mapping, got {_type_name(raw)}")
        if not raw:
            raise ConditionError(path, "a condition needs at least one key")
        parts = [self.key(str(key), value, (*path, str(key))) for key, value in raw.items()]
        return parts[0] if len(parts) == 1 else AllOf(parts)

    def key(self, key: str, value: object, path: KeyPath) -> Condition:
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ConditionError(path, f"`{key}` takes a non-empty list of conditions")
            parts = [self.mapping(item, (*path, i)) for i, item in enumerate(value)]
            return AllOf(parts) if key == "all" else AnyOf(parts)
        if key == "not":
            return Not(self.mapping(value, path))
        kind = subject_kind(key)
        if kind is None:
            raise ConditionError(path, f"unknown signal {key!r}; known: {', '.join(_known_subjects())}")
        if isinstance(value, dict):
            if not value:
                raise ConditionError(path, "no operator given")
            comparisons = [self.comparison(key, kind, str(op), v, (*path, str(op))) for op, v in value.items()]
            return comparisons[0] if len(comparisons) == 1 else AllOf(list(comparisons))
        op = "in" if isinstance(value, list) else "=="
        return self.comparison(key, kind, op, value, path)

    def comparison(self, subject: str, kind: str, op: str, value: object, path: KeyPath) -> Comparison:
        if op not in OPERATORS:
            raise ConditionError(path, f"unknown operator {op!r}; one of {', '.join(OPERATORS)}")
        allowed = _KIND_OPERATORS[kind]
        if op not in allowed:
            raise ConditionError(
                path, f"{subject} is {_KIND_NAMES[kind]}: operator {op!r} does not apply; use {', '.join(allowed)}"
            )
        if op == "matches":
            return Comparison(subject, op, value, self._matcher(value, path))
        if op == "in":
            if not isinstance(value, list) or not value:
                raise ConditionError(path, "`in` takes a non-empty list")
            for i, item in enumerate(value):
                _check_value(subject, kind, item, (*path, i))
            members = frozenset(value)
            return Comparison(subject, op, list(value), members.__contains__)
        if op == "contains":
            if not isinstance(value, str) or not value:
                raise ConditionError(path, f"`contains` takes a non-empty string, got {_type_name(value)}")
            needle = value
            return Comparison(subject, op, value, lambda actual: needle in actual)
        _check_value(subject, kind, value, path)
        if subject == "score" and isinstance(value, int | float):
            return ScoreComparison(op, float(value))
        compare = _COMPARE[op]
        return Comparison(subject, op, value, lambda actual: compare(actual, value))

    def _matcher(self, value: object, path: KeyPath) -> Callable[[Any], bool]:
        if not isinstance(value, str) or not value:
            raise ConditionError(path, f"`matches` takes a regular expression as a string, got {_type_name(value)}")
        try:
            pattern = regex.compile(value)
        except regex.error as exc:
            raise ConditionError(path, f"bad regular expression {value!r}: {exc}") from None
        timeout = self.timeout
        search = pattern.search

        def matches(actual: Any) -> bool:
            return search(actual, timeout=timeout) is not None

        return matches


_KIND_NAMES = {
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "tags": "a set of tags",
    "text": "message text",
}


def _check_value(subject: str, kind: str, value: object, path: KeyPath) -> None:
    ok = {
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(kind, False)
    if not ok:
        raise ConditionError(path, f"{subject} is {_KIND_NAMES[kind]}; cannot compare it with {value!r}")


def _type_name(value: object) -> str:
    for kind, name in ((type(None), "nothing"), (dict, "a mapping"), (list, "a list"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "a boolean" if isinstance(value, bool) else "a number" if isinstance(value, int | float) else "a value"


def _known_subjects() -> list[str]:
    return [*SIGNAL_TYPES, "score", *TEXT_SUBJECTS, *COMBINATORS]
