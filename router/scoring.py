"""The complexity score: the probability-like chance, in [0, 1], that a request needs the frontier tier.

    score = 1 / (1 + exp(-(bias + sum(weight * feature(signal)))))

Each weighted signal becomes a feature in [0, 1]: a bool is 0 or 1; a count is divided by the value at which it
saturates (`linear`), or its logarithm by that of the saturation value (`log`, for sizes such as token counts,
where 100 to 1,000 matters as much as 1,000 to 10,000), and capped at 1. A logistic form keeps the score in range
whatever the weights, makes each signal's part additive (what `tiergate rules explain` prints), and is what a
logistic regression fitted on logged outcomes produces, so calibrated weights can be written straight back into the
rules file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from router.signals import Signals

Transform = Literal["linear", "log"]


@dataclass(frozen=True, slots=True)
class Weight:
    signal: str
    weight: float
    saturate: float = 1.0
    """The signal's value at which its feature reaches 1."""
    transform: Transform = "linear"

    def feature(self, value: float) -> float:
        if value <= 0:
            return 0.0
        if self.transform == "log":
            return min(math.log1p(value) / math.log1p(self.saturate), 1.0)
        return min(value / self.saturate, 1.0)


@dataclass(frozen=True, slots=True)
class Contribution:
    """One weighted signal's part in a score, for explanations."""

    signal: str
    value: float
    feature: float
    term: float
    """weight * feature: what it adds to the logit."""


class Scorer:
    """Scores signals with a bias and weights that the caller has already checked (names and types)."""

    def __init__(self, bias: float, weights: Sequence[Weight]) -> None:
        self.bias = bias
        self.weights = tuple(weights)
        self._terms = tuple((attrgetter(w.signal), w) for w in self.weights)

    def score(self, signals: Signals) -> float:
        logit = self.bias
        for get, w in self._terms:
            value = get(signals)
            if value:
                logit += w.weight * w.feature(value)
        return _sigmoid(logit)

    def explain(self, signals: Signals) -> tuple[float, list[Contribution]]:
        """The score and every weighted signal's part in it, largest part first."""
        parts = []
        for get, w in self._terms:
            value = float(get(signals))
            feature = w.feature(value)
            parts.append(Contribution(w.signal, value, feature, w.weight * feature))
        parts.sort(key=lambda c: -abs(c.term))
        return _sigmoid(self.bias + sum(c.term for c in parts)), parts


def _sigmoid(x: float) -> float:
    # Written out to avoid math.exp overflow for large negative logits.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
