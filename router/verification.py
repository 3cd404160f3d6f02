"""Verification of local answers: a malformed one escalates once to the frontier tier.

No other gateway does this (they fall back on transport errors only). Each verifier checks one thing and says why an
answer fails; verifiers register by name so a rules file or a model preset can name the ones it wants.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import jsonschema
from jsonschema.exceptions import SchemaError

from router.chat import ChatRequest, Completion, NamedToolChoice


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""
    """Short machine-friendly reason when not ok, e.g. `tool_call_invalid_arguments`."""
    detail: str = ""


PASS = Verdict(True)


class Verifier(ABC):
    name: ClassVar[str]

    @abstractmethod
    def check(self, request: ChatRequest, completion: Completion) -> Verdict:
        """Whether `completion` is an acceptable answer to `request`."""


VERIFIERS: dict[str, type[Verifier]] = {}


def register(cls: type[Verifier]) -> type[Verifier]:
    VERIFIERS[cls.name] = cls
    return cls


@lru_cache(maxsize=512)
def _validator(schema_text: str) -> jsonschema.protocols.Validator | None:
    schema = json.loads(schema_text)
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except SchemaError:
        return None  # a schema we cannot check is not the model's fault
    return cls(schema)


@register
class NotEmpty(Verifier):
    name = "not_empty"

    def check(self, request: ChatRequest, completion: Completion) -> Verdict:
        if completion.tool_calls or (completion.text and completion.text.strip()):
            return PASS
        return Verdict(False, "empty_answer")


@register
class NotTruncated(Verifier):
    name = "not_truncated"

    def check(self, request: ChatRequest, completion: Completion) -> Verdict:
        # A stop at the client's own max_tokens is what the client asked for; a stop at our budget is not.
        if completion.finish_reason == "length" and request.sampling.max_tokens is None:
            return Verdict(False, "finish_length")
        if completion.finish_reason == "length" and request.wants_tool_call:
            return Verdict(False, "finish_length")
        return PASS


@register
class ToolCallsValid(Verifier):
    """Every tool call names an offered tool and its arguments parse and match that tool's schema."""

    name = "tool_calls_valid"

    def check(self, request: ChatRequest, completion: Completion) -> Verdict:
        if request.wants_tool_call and not completion.tool_calls:
            return Verdict(False, "tool_call_missing")
        tools = {t.name: t for t in request.tools}
        for call in completion.tool_calls:
            tool = tools.get(call.name)
            if tool is None:
                return Verdict(False, "tool_call_unknown_tool", call.name)
            if isinstance(request.tool_choice, NamedToolChoice) and call.name != request.tool_choice.name:
                return Verdict(False, "tool_call_wrong_tool", call.name)
            try:
                arguments: Any = json.loads(call.arguments or "{}")
            except json.JSONDecodeError as exc:
                return Verdict(False, "tool_call_unparsable", str(exc))
            if not isinstance(arguments, dict):
                return Verdict(False, "tool_call_unparsable", "arguments are not a JSON object")
            validator = _validator(json.dumps(tool.parameters, sort_keys=True))
            if validator is not None:
                error = next(iter(validator.iter_errors(arguments)), None)
                if error is not None:
                    return Verdict(False, "tool_call_invalid_arguments", f"{call.name}: {error.message}")
        return PASS


@register
class JsonAnswerValid(Verifier):
    """With `response_format` JSON, the answer parses (and matches the schema when one is given)."""

    name = "json_answer_valid"

    def check(self, request: ChatRequest, completion: Completion) -> Verdict:
        fmt = request.response_format
        if fmt.type == "text" or completion.tool_calls:
            return PASS
        try:
            value = json.loads(completion.text or "")
        except json.JSONDecodeError as exc:
            return Verdict(False, "json_unparsable", str(exc))
        if fmt.type == "json_schema" and fmt.json_schema:
            validator = _validator(json.dumps(fmt.json_schema, sort_keys=True))
            error = next(iter(validator.iter_errors(value)), None) if validator else None
            if error is not None:
                return Verdict(False, "json_schema_mismatch", error.message)
        return PASS


_TOOL_NAME = re.compile(r"Tool Name:\s*\**\s*([^\n*]+)")
_LISTED_TOOLS = re.compile(r"Available tools:\s*(\[[^\]]*\]|[^\n]+)")


@register
class AgentFlowPlannerFormat(Verifier):
    """AgentFlow's planner answers `... Context: ... Sub-Goal: ... Tool Name: <tool>`; the tool must be one it was
    offered (listed in its prompt as `Available tools: [...]`, or in the request's `tools`). AgentFlow itself parses
    the last `Context/Sub-Goal/Tool Name` match, so we check the last `Tool Name:` too."""

    name = "agentflow_planner"

    def check(self, request: ChatRequest, completion: Completion) -> Verdict:
        if not is_planner_step(request):
            return PASS  # the same model also answers other steps (final answers, summaries): not ours to judge
        text = completion.text or ""
        if "Context:" not in text or "Sub-Goal:" not in text:
            return Verdict(False, "planner_format", "missing Context: or Sub-Goal:")
        names = _TOOL_NAME.findall(text)
        if not names:
            return Verdict(False, "planner_format", "missing Tool Name:")
        chosen = names[-1].strip().strip("`'\"")
        offered = offered_planner_tools(request)
        if offered and chosen not in offered:
            return Verdict(False, "planner_unknown_tool", chosen)
        return PASS


def is_planner_step(request: ChatRequest) -> bool:
    return any("Tool Name:" in (m.content or "") for m in request.messages if m.role in ("system", "user"))


def offered_planner_tools(request: ChatRequest) -> set[str]:
    offered = {t.name for t in request.tools}
    for message in request.messages:
        for listed in _LISTED_TOOLS.findall(message.content or ""):
            offered |= {n.strip().strip("'\"` ") for n in listed.strip("[]").split(",") if n.strip()}
    return offered


DEFAULT_VERIFIERS = ("not_empty", "not_truncated", "tool_calls_valid", "json_answer_valid")


class VerificationChain:
    """The verifiers a deployment runs on local answers, in order; the first failure decides. A model may add its
    own (`per_model`, keyed by the name its answers carry: a planner preset adds the planner format check)."""

    def __init__(
        self, names: Iterable[str] = DEFAULT_VERIFIERS, per_model: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        names = list(names)
        wanted = names + [n for extra in (per_model or {}).values() for n in extra]
        unknown = [n for n in wanted if n not in VERIFIERS]
        if unknown:
            raise ValueError(f"unknown verifiers: {', '.join(unknown)}; known: {', '.join(sorted(VERIFIERS))}")
        self.verifiers = [VERIFIERS[n]() for n in names]
        # Built once here, so a request pays one dict lookup for its model's chain.
        self._by_model = {
            model: self.verifiers + [VERIFIERS[n]() for n in dict.fromkeys(extra) if n not in names]
            for model, extra in (per_model or {}).items()
        }

    def check(self, request: ChatRequest, completion: Completion) -> Verdict:
        for verifier in self._by_model.get(completion.model, self.verifiers):
            verdict = verifier.check(request, completion)
            if not verdict.ok:
                return verdict
        return PASS
