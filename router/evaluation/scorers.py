"""Scorers: one number per prompt, higher when the prompt more likely needs the strong model.

A scorer implements one method, `score`. The evaluation sweeps thresholds over the scores, so only their order
matters there; the gateway compares them with a configured threshold. Scorers are built by name from
`router.evaluation.registry`, each taking what it needs from one `ScorerOptions`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
from numpy.typing import NDArray

from router.chat import ChatRequest
from router.evaluation.datasets import Benchmark


@dataclass(frozen=True, slots=True)
class ScorerOptions:
    seed: int = 0
    """For seeded scorers (`random`)."""
    rules_path: Path | None = None
    """Escalation rules file for the `rules` scorer; None for the shipped default."""
    artifact_path: Path | None = None
    """Trained weights for the `learned` scorer; None for the shipped artifact."""


class Scorer(ABC):
    name: ClassVar[str]
    seeded: ClassVar[bool] = False
    """True when the scores depend on `ScorerOptions.seed`; the evaluation then averages several seeds."""

    @classmethod
    def create(cls, options: ScorerOptions) -> Self:
        """Build the scorer from the options; loads whatever it needs once, here, never per prompt."""
        return cls()

    @abstractmethod
    def score(self, prompt: str) -> float:
        """The score of one user prompt."""

    def score_request(self, request: ChatRequest) -> float:
        """The score of a chat request: that of its latest user message (benchmark prompts are one user turn)."""
        latest = next((m for m in reversed(request.messages) if m.role == "user"), None)
        return self.score(latest.content or "" if latest is not None else "")

    def score_many(self, prompts: Sequence[str]) -> NDArray[np.float64]:
        return np.fromiter((self.score(prompt) for prompt in prompts), dtype=np.float64, count=len(prompts))

    def evaluation_scores(self, benchmark: Benchmark) -> NDArray[np.float64] | None:
        """Scores to evaluate on `benchmark`: each prompt scored by a scorer that did not learn from it, or None
        where no such score exists. A scorer that learned nothing scores as it serves."""
        return self.score_many(benchmark.prompts)

    def evaluation_note(self, benchmark: Benchmark) -> str:
        """How `evaluation_scores` scored this benchmark, for tables (empty when it scores as it serves)."""
        return ""

    def describe(self) -> str:
        """A short note on what the scorer is, for tables."""
        return ""


class RandomScorer(Scorer):
    """A uniform score in [0, 1) that depends only on the seed and the prompt, not on the order of scoring."""

    name = "random"
    seeded = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @classmethod
    def create(cls, options: ScorerOptions) -> Self:
        return cls(options.seed)

    def score(self, prompt: str) -> float:
        digest = hashlib.blake2b(f"{self.seed}\0{prompt}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def describe(self) -> str:
        return f"seed {self.seed}"


class LengthScorer(Scorer):
    """The longer the prompt (in characters), the more it needs the strong model: the baseline to beat."""

    name = "length"

    def score(self, prompt: str) -> float:
        return float(len(prompt))
