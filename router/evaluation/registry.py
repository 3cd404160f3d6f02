"""Scorers by name, as `tiergate eval-router --scorer NAME` selects them."""

from __future__ import annotations

from router.evaluation.learned import LearnedScorer
from router.evaluation.rules_scorer import RulesScorer
from router.evaluation.scorers import LengthScorer, RandomScorer, Scorer, ScorerOptions

SCORERS: dict[str, type[Scorer]] = {
    scorer.name: scorer for scorer in (RandomScorer, LengthScorer, LearnedScorer, RulesScorer)
}


def create_scorer(name: str, options: ScorerOptions | None = None) -> Scorer:
    """Build the scorer registered as `name`; raises KeyError naming the known ones."""
    try:
        scorer_class = SCORERS[name]
    except KeyError:
        raise KeyError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}") from None
    return scorer_class.create(options or ScorerOptions())
