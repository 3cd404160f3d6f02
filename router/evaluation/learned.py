"""The learned scorer: a logistic model over hashed prompt words that predicts the strong model would do better.

The artifact is one `.npz` file (numpy arrays only, read with `allow_pickle=False`): the weights of K models, each
trained with one fold of the training prompts left out, and a JSON string of metadata. The scorer serves the mean
of the K models (their logits average into one linear model, so serving costs one model). The evaluation scores
each training prompt with the one model that never saw it (cross-fitting), so every prompt of a training benchmark
is a held-out prompt there. `tiergate train-router` (`router.evaluation.cli.train_main`) writes the artifact.

An artifact may also hold a stack (`meta["stack"]`): a logistic model over two logits, the learned one and that of
the default escalation rules' score, with the rules' score weights frozen into the artifact (editing the rules file
does not change a trained scorer). Its three numbers are fitted on the cross-fitted (out-of-fold) learned logits of
the training prompts, so the stack learns how far to trust the learned logit on prompts it never saw. The rules'
signals read the same head of the prompt as the features (`features.WINDOW_CHARS`; the length from all of it), which
keeps the cost of a call bounded on a pasted document.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
from numpy.typing import NDArray

from router.chat import ChatRequest, Message
from router.evaluation import features
from router.evaluation.datasets import Benchmark
from router.evaluation.scorers import Scorer, ScorerOptions
from router.evaluation.splits import fold_indices
from router.scoring import Weight
from router.signals import MESSAGE_OVERHEAD_TOKENS, SignalContext, estimate_tokens, extract_signals

ARTIFACT_FORMAT: Final = 1
DEFAULT_ARTIFACT: Final = Path(__file__).with_name("learned_scorer.npz")
_CONTEXT: Final = SignalContext(local_context_tokens=1 << 20)
"""Prompts are scored for their content; a context window this large keeps "does not fit" out of the rules' part."""


@dataclass(frozen=True)
class RulesLogit:
    """The logit of an escalation rules file's complexity score (`router.scoring.Scorer`) for a one-message request."""

    bias: float
    weights: tuple[Weight, ...]

    @classmethod
    def from_meta(cls, spec: dict[str, Any]) -> Self:
        return cls(
            float(spec["bias"]),
            tuple(
                Weight(w["signal"], float(w["weight"]), float(w["saturate"]), w["transform"]) for w in spec["weights"]
            ),
        )

    def to_meta(self) -> dict[str, Any]:
        return {
            "bias": self.bias,
            "weights": [
                {"signal": w.signal, "weight": w.weight, "saturate": w.saturate, "transform": w.transform}
                for w in self.weights
            ],
        }

    def logit(self, prompt: str) -> float:
        window = prompt[: features.WINDOW_CHARS]
        request = ChatRequest(request_id="score", model="auto", messages=[Message(role="user", content=window)])
        signals = extract_signals(request, _CONTEXT)
        logit = self.bias
        for w in self.weights:
            value = (
                estimate_tokens(prompt) + MESSAGE_OVERHEAD_TOKENS
                if w.signal == "content_tokens"
                else float(getattr(signals, w.signal))
            )
            logit += w.weight * w.feature(value)
        return logit


@dataclass(frozen=True)
class Stack:
    """logit = bias + learned * (learned model's logit) + rules * (rules score's logit)."""

    learned: float
    rules: float
    bias: float
    rules_score: RulesLogit

    @classmethod
    def from_meta(cls, spec: dict[str, Any]) -> Self:
        return cls(
            float(spec["learned"]), float(spec["rules"]), float(spec["bias"]), RulesLogit.from_meta(spec["rules_score"])
        )

    def to_meta(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "rules": self.rules,
            "bias": self.bias,
            "rules_score": self.rules_score.to_meta(),
        }

    def logit(self, learned_logit: float, prompt: str) -> float:
        return self.bias + self.learned * learned_logit + self.rules * self.rules_score.logit(prompt)


@dataclass(frozen=True)
class LinearModel:
    """Weights over the raw features of `router.evaluation.features`; the logit is their weighted sum."""

    bucket_weights: NDArray[np.float32]
    numeric_weights: NDArray[np.float64]
    bias: float

    def logit(self, found: features.PromptFeatures) -> float:
        words = float(self.bucket_weights[found.buckets].sum(dtype=np.float64)) * found.bucket_value
        return self.bias + words + float(found.numeric @ self.numeric_weights)

    @classmethod
    def mean(cls, models: list[LinearModel]) -> LinearModel:
        return cls(
            bucket_weights=np.stack([m.bucket_weights for m in models])
            .mean(axis=0, dtype=np.float64)
            .astype(np.float32),
            numeric_weights=np.stack([m.numeric_weights for m in models]).mean(axis=0),
            bias=float(np.mean([m.bias for m in models])),
        )


@dataclass(frozen=True)
class LearnedModel:
    """What the artifact holds: the fold models and their metadata."""

    folds: tuple[LinearModel, ...]
    meta: dict[str, Any]
    """`features_version`, `hash_bits`, `numeric_names`, `label`, `trained_on` (benchmark names), `cross_fitted`
    ({benchmarks, seed}: the training benchmarks whose prompts were split into the folds), `prompts`, ..."""
    serving: LinearModel
    """The mean of the fold models: what scores requests."""
    stack: Stack | None = None
    """How the learned logit is combined with the rules score's (`meta["stack"]`); None: the learned logit alone."""

    @classmethod
    def from_folds(cls, folds: tuple[LinearModel, ...], meta: dict[str, Any]) -> Self:
        if not folds:
            raise ValueError("a learned model needs at least one fold model")
        stack = Stack.from_meta(meta["stack"]) if meta.get("stack") else None
        return cls(folds, meta, LinearModel.mean(list(folds)), stack)

    def save(self, path: Path) -> None:
        # np.savez_compressed appends ".npz" to a name without it; write to the exact path the caller named.
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                bucket_weights=np.stack([m.bucket_weights for m in self.folds]).astype(np.float16),
                numeric_weights=np.stack([m.numeric_weights for m in self.folds]),
                bias=np.array([m.bias for m in self.folds]),
                meta=np.array(json.dumps(self.meta, sort_keys=True)),
            )

    @classmethod
    def load(cls, path: Path) -> Self:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            buckets, numeric, bias = arrays["bucket_weights"], arrays["numeric_weights"], arrays["bias"]
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{path}: artifact format {meta.get('format')!r}, expected {ARTIFACT_FORMAT}")
        if meta.get("features_version") != features.FEATURES_VERSION:
            raise ValueError(f"{path}: trained on other features than this code extracts; retrain it")
        expected = (len(bias), 1 << int(meta["hash_bits"]))
        if buckets.shape != expected or numeric.shape != (len(bias), len(features.NUMERIC_NAMES)):
            raise ValueError(f"{path}: weight arrays of shape {buckets.shape}, {numeric.shape}, expected {expected}")
        # float16 on disk keeps the file small; scores sum hundreds of weights, so compute in float32 and up.
        folds = tuple(
            LinearModel(buckets[i].astype(np.float32), numeric[i].astype(np.float64), float(bias[i]))
            for i in range(len(bias))
        )
        return cls.from_folds(folds, meta)

    @property
    def hash_bits(self) -> int:
        return int(self.meta["hash_bits"])


class LearnedScorer(Scorer):
    """Probability (0..1) that the strong model would answer this prompt better than the weak one."""

    name = "learned"

    def __init__(self, model: LearnedModel) -> None:
        self.model = model
        self._serving = model.serving
        self._bits = model.hash_bits

    @classmethod
    def create(cls, options: ScorerOptions) -> Self:
        return cls(LearnedModel.load(options.artifact_path or DEFAULT_ARTIFACT))

    def score(self, prompt: str) -> float:
        return _sigmoid(self._logit(self._serving, prompt))

    def _logit(self, linear: LinearModel, prompt: str) -> float:
        logit = linear.logit(features.extract(prompt, self._bits))
        stack = self.model.stack
        return logit if stack is None else stack.logit(logit, prompt)

    def evaluation_scores(self, benchmark: Benchmark) -> NDArray[np.float64] | None:
        """Cross-fitted scores on a benchmark the model trained on, served scores on one it never saw, and None
        for one it trained on whole (no honest score exists)."""
        meta = self.model.meta
        cross_fitted = meta["cross_fitted"]
        if benchmark.name in cross_fitted["benchmarks"]:
            fold = fold_indices(benchmark.prompts, int(cross_fitted["seed"]), len(self.model.folds))
            return np.array(
                [
                    _sigmoid(self._logit(self.model.folds[k], prompt))
                    for prompt, k in zip(benchmark.prompts, fold, strict=True)
                ]
            )
        if benchmark.name in meta["trained_on"]:
            return None
        return self.score_many(benchmark.prompts)

    def evaluation_note(self, benchmark: Benchmark) -> str:
        meta = self.model.meta
        if benchmark.name in meta["cross_fitted"]["benchmarks"]:
            folds, seed = len(self.model.folds), meta["cross_fitted"]["seed"]
            return f"held-out prompts: {folds}-fold cross-fitted, fold seed {seed}"
        if benchmark.name in meta["trained_on"]:
            return "trained on all of it: no held-out prompts"
        return f"leave-one-benchmark-out: trained on {' + '.join(meta['trained_on'])}"


def _sigmoid(logit: float) -> float:
    # Split by sign so that exp never overflows.
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    odds = math.exp(logit)
    return odds / (1.0 + odds)
