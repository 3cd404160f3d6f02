"""The escalation rules' complexity score as an evaluation scorer: how good is the default rule's ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Self

from router.chat import ChatRequest, Message
from router.evaluation.scorers import Scorer, ScorerOptions
from router.rules import RuleSet, default_rules_path, load_rules
from router.signals import SignalContext, extract_signals

EVAL_CONTEXT: Final = SignalContext(local_context_tokens=1 << 20)
"""Benchmark prompts are scored for their content; a context window this large keeps "does not fit" out of it."""


class RulesScorer(Scorer):
    """`RuleSet.score` of a request holding the prompt as its one user message.

    Only the score is evaluated, not the ordered rules before the default one: RouteLLM's metrics sweep a
    threshold, which is what the default rule compares the score with.
    """

    name = "rules"

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    @classmethod
    def create(cls, options: ScorerOptions) -> Self:
        return cls(load_rules(options.rules_path or default_rules_path()))

    def score(self, prompt: str) -> float:
        request = ChatRequest(request_id="eval", model="auto", messages=[Message(role="user", content=prompt)])
        return self.rules.score(extract_signals(request, EVAL_CONTEXT))

    def describe(self) -> str:
        source = Path(self.rules.source)
        if source.is_absolute() and source.is_relative_to(Path.cwd()):
            source = source.relative_to(Path.cwd())
        return f"{source} ({self.rules.version})"
