"""The rule engine: a rules file, parsed strictly and compiled into a `RuleSet` that decides where a request goes.

A rules file (schema and examples in escalation_rules/README.md) holds the score's weights, a threshold, and an
ordered list of rules. For a request to model `auto` the rules are tried in order and the first whose condition
holds decides; when none does, the final `default` rule sends the request to the frontier tier if its score is at
least the threshold, else to the local tier. A request that names a tier or model keeps it, except where a rule
marked `enforce` (a privacy pin, a reject) matches: `RuleSet.enforced` finds those.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from router.chat import ChatRequest
from router.conditions import Condition, ConditionError, Facts, compile_condition, subject_kind
from router.scoring import Contribution, Scorer, Weight
from router.signals import Signals

Action = Literal["local", "frontier", "reject"]
DEFAULT_RULE = "default"
"""The name of the final rule, which compares the score with the threshold."""
RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Rule names travel in the `x-tiergate-rule` header, so they are kept to header-safe characters."""


class RulesError(Exception):
    """A rules file that cannot be used. The message names the file, the path of the bad field and the problem."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    model: str | None
    """A configured model name, or None for the tier's default model."""
    rule: str
    score: float
    reason: str
    """Why the rule fired: its condition and the values it saw (never message text)."""
    allow_fallback: bool
    """Whether the request may be answered by the other tier when this one fails (false for privacy pins)."""
    message: str | None = None
    """For `reject`: what the client is told."""


# --- the file's schema ----------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _number_as_weight(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"weight": value}
    return value


class WeightSpec(_Strict):
    weight: float = Field(ge=-100, le=100, description="What the signal adds to the logit when its feature is 1.")
    saturate: float = Field(1.0, gt=0, allow_inf_nan=False, description="The signal's value where its feature is 1.")
    transform: Literal["linear", "log"] = Field("linear", description="How a count grows towards saturation.")


class ScoreSpec(_Strict):
    bias: float = Field(0.0, ge=-100, le=100, description="The logit of a request with every feature at 0.")
    weights: dict[str, Annotated[WeightSpec, BeforeValidator(_number_as_weight)]] = Field(
        default_factory=dict, description="Signal name to weight (a number, or weight/saturate/transform)."
    )


class RuleSpec(_Strict):
    name: str = Field(pattern=RULE_NAME_PATTERN)
    description: str = ""
    when: dict[str, Any] = Field(description="The condition; see router.conditions.")
    action: Action
    model: str | None = Field(None, min_length=1, description="A configured model; empty for the tier's default.")
    message: str | None = Field(None, min_length=1, description="For reject: the error message the client sees.")
    fallback: bool = Field(True, description="Whether the other tier may answer when the chosen one fails.")
    enforce: bool = Field(False, description="Also applies to requests that name a tier or model themselves.")

    @model_validator(mode="after")
    def _action_fields(self) -> RuleSpec:
        if self.action == "reject":
            if self.message is None:
                raise ValueError("a reject rule needs a message")
            if self.model is not None:
                raise ValueError("a reject rule names no model")
        elif self.message is not None:
            raise ValueError("only a reject rule has a message")
        return self


class DefaultSpec(_Strict):
    local_model: str | None = Field(None, min_length=1)
    frontier_model: str | None = Field(None, min_length=1)
    fallback: bool = True


class RulesFile(_Strict):
    version: Literal[1] = Field(description="The file format's version.")
    threshold: float = Field(ge=0, le=1, description="Score at or above which the default rule picks frontier.")
    regex_timeout_ms: float = Field(20.0, gt=0, le=1000, description="Time limit of one regex search.")
    score: ScoreSpec = Field(default_factory=ScoreSpec)
    rules: list[RuleSpec] = Field(default_factory=list)
    default: DefaultSpec = Field(default_factory=DefaultSpec)

    @model_validator(mode="after")
    def _unique_names(self) -> RulesFile:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name == DEFAULT_RULE:
                raise ValueError(f"rule name {DEFAULT_RULE!r} is reserved for the final score rule")
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return self


# --- compiled rules -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: Condition
    action: Action
    model: str | None
    message: str | None
    allow_fallback: bool
    enforce: bool
    description: str = ""


class RuleSet:
    """Compiled rules. Immutable after construction apart from the `regex_timeouts` counter."""

    def __init__(self, spec: RulesFile, rules: list[Rule], *, source: str, version: str) -> None:
        self.source = source
        self.version = version
        """The first 12 hex digits of the file's sha256."""
        self.threshold = spec.threshold
        self.rules = tuple(rules)
        self.default = spec.default
        self.scorer = Scorer(
            spec.score.bias,
            [Weight(name, w.weight, w.saturate, w.transform) for name, w in spec.score.weights.items()],
        )
        self.regex_timeouts = 0
        """Rule conditions whose regex search ran past its limit (each counted as a match)."""

    def score(self, signals: Signals) -> float:
        return self.scorer.score(signals)

    def explain_score(self, signals: Signals) -> tuple[float, list[Contribution]]:
        return self.scorer.explain(signals)

    def decide(self, signals: Signals, request: ChatRequest) -> Decision:
        """Where a request to model `auto` goes: the first rule that matches, else the score against the threshold."""
        score = self.scorer.score(signals)
        facts = Facts(signals, score, request)
        for rule in self.rules:
            decision = self._try(rule, facts)
            if decision is not None:
                return decision
        return self._by_score(score, facts.threshold_bias)

    def enforced(self, signals: Signals, request: ChatRequest) -> Decision | None:
        """For a request that names a tier or model: the first `enforce` rule that matches, else None (keep it)."""
        score = self.scorer.score(signals)
        facts = Facts(signals, score, request)
        for rule in self.rules:
            if rule.enforce:
                decision = self._try(rule, facts)
                if decision is not None:
                    return decision
        return None

    def referenced_models(self) -> dict[str, str]:
        """Model name to tier for every model the rules name, so the caller can check them against its config."""
        models: dict[str, str] = {r.model: r.action for r in self.rules if r.model is not None}
        if self.default.local_model:
            models[self.default.local_model] = "local"
        if self.default.frontier_model:
            models[self.default.frontier_model] = "frontier"
        return models

    def _try(self, rule: Rule, facts: Facts) -> Decision | None:
        try:
            if not rule.when.test(facts):
                return None
            note = ""
        except TimeoutError:
            # Fail closed: a rule we cannot rule out applies (a privacy pin stays a pin).
            self.regex_timeouts += 1
            note = "; a regex search ran past its time limit and counts as a match"
        return Decision(
            action=rule.action,
            model=rule.model,
            rule=rule.name,
            score=facts.score,
            reason=f"{rule.when.describe()}{_seen(rule.when, facts)}{note}",
            allow_fallback=rule.allow_fallback,
            message=rule.message,
        )

    def _by_score(self, score: float, bias: float = 0.0) -> Decision:
        """`bias` (the caller's escalation bias, from its frontier budget) raises the threshold for this request."""
        frontier = score >= self.threshold + bias
        biased = f" + budget bias {bias:.3f}" if bias else ""
        return Decision(
            action="frontier" if frontier else "local",
            model=self.default.frontier_model if frontier else self.default.local_model,
            rule=DEFAULT_RULE,
            score=score,
            reason=f"score {score:.3f} {'>=' if frontier else '<'} threshold {self.threshold:g}{biased}",
            allow_fallback=self.default.fallback,
        )


def _seen(condition: Condition, facts: Facts) -> str:
    values = [f"{s}={_short(facts.get(s))}" for s in condition.subjects() if subject_kind(s) != "text"]
    return f" [{', '.join(values)}]" if values else ""


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, tuple):
        return "[" + ",".join(value) + "]"
    return str(value)


# --- loading --------------------------------------------------------------------------------------------------


def default_rules_path() -> Path:
    """The rules file that ships with Tiergate, wherever the package is installed.

    `escalation_rules` is installed beside `router` (same site-packages, or the same checkout for an editable
    install), so the path is found from this file; it does not need `escalation_rules` to be importable.
    """
    return Path(__file__).resolve().parent.parent / "escalation_rules" / "default.yaml"


def load_rules(path: Path) -> RuleSet:
    """Read, validate and compile a rules file. Raises `RulesError` naming the file, the bad field and the problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_rules(data, source=str(path))


def parse_rules(data: bytes | str, *, source: str = "<rules>") -> RuleSet:
    """Validate and compile the text of a rules file; `source` names it in errors."""
    raw = data.encode() if isinstance(data, str) else data
    version = hashlib.sha256(raw).hexdigest()[:12]
    try:
        doc = YAML(typ="rt").load(raw)
    except YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML: {_one_line(str(exc))}") from None
    if not isinstance(doc, dict):
        raise RulesError(f"{source}: a rules file is a mapping with version, threshold, score and rules")
    try:
        spec = RulesFile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        where = _where(doc, list(err["loc"]))
        raise RulesError(f"{source}: {where}: {_message(err['msg'])}{more}") from None
    for name, w in spec.score.weights.items():
        kind = subject_kind(name)
        if kind not in ("number", "bool") or name == "score":
            what = "not a signal" if kind is None else "not a number or bool signal"
            raise RulesError(f"{source}: {_where(doc, ['score', 'weights', name])}: {name!r} is {what}")
        if w.transform == "log" and w.saturate <= 1:
            raise RulesError(f"{source}: {_where(doc, ['score', 'weights', name])}: a log transform needs saturate > 1")
    timeout_s = spec.regex_timeout_ms / 1000
    rules = []
    for i, rule in enumerate(spec.rules):
        try:
            when = compile_condition(rule.when, ("when",), regex_timeout_s=timeout_s)
        except ConditionError as exc:
            where = _where(doc, ["rules", i, *exc.path])
            raise RulesError(f"{source}: {where}: {exc.message}") from None
        rules.append(
            Rule(rule.name, when, rule.action, rule.model, rule.message, rule.fallback, rule.enforce, rule.description)
        )
    return RuleSet(spec, rules, source=source, version=version)


def _message(msg: str) -> str:
    return "unknown field" if msg == "Extra inputs are not permitted" else msg


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _where(doc: Any, loc: list[str | int]) -> str:
    """`rules[2].when.images (line 14)`: the path of a field, with its line where the YAML document knows it."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    line = None
    node = doc
    for part in loc:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                position = lc.item(part) if isinstance(part, int) else lc.key(part)
                line = position[0] + 1
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return f"{text} (line {line})" if line is not None else text
