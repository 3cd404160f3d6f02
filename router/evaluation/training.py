"""Training the learned scorer from labelled outcomes, and the leave-one-benchmark-out experiment.

A labelled outcome is a prompt and whether the weak model's answer was good enough. From RouteLLM's data a prompt
needs the strong model when the strong model did strictly better on it (MMLU, GSM8K: the strong model right and the
weak one wrong; MT-Bench: a higher mean judge score). A prompt both models got wrong is labelled "good enough":
escalating it buys nothing. (Measured: labelling "the weak model was wrong" instead ranks worse on both MMLU and
GSM8K.)

scikit-learn fits the model, here and only here; the request path needs numpy alone. The fit is a logistic loss
minimised by averaged stochastic gradient descent (`SGDClassifier`): measured here it ranks as well as liblinear's
exact logistic regression on these features and is 10-20x faster, which keeps training to a minute on 2 cores.

With `rules` given, `train` also fits the stack of `router.evaluation.learned` (the learned logit beside the rules
score's logit) on the out-of-fold learned logits of the training prompts: an unregularised two-feature logistic
regression. On MMLU + GSM8K it gives the rules' logit about 0.4 and the learned one about 0.5 (the fold models'
logits are over-confident on prompts they never saw).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression, SGDClassifier  # type: ignore[import-untyped]

from router.evaluation import features
from router.evaluation.datasets import Benchmark
from router.evaluation.learned import ARTIFACT_FORMAT, LearnedModel, LearnedScorer, LinearModel, RulesLogit, Stack
from router.evaluation.metrics import RouterMetrics, evaluate_scores
from router.evaluation.splits import DEFAULT_FOLDS, DEFAULT_SEED, fold_indices

DEFAULT_ALPHA = 2e-4
"""L2 strength of the logistic regression."""
EPOCHS = 30
LABEL = "the strong model did strictly better than the weak model"


@dataclass(frozen=True)
class Outcomes:
    """Labelled outcomes ready to fit: prompts and whether each needed the strong model."""

    prompts: tuple[str, ...]
    needs_strong: NDArray[np.bool_]
    sources: tuple[str, ...]
    """The benchmark each prompt came from."""

    @classmethod
    def from_benchmarks(cls, benchmarks: Sequence[Benchmark]) -> Outcomes:
        return cls(
            prompts=tuple(prompt for benchmark in benchmarks for prompt in benchmark.prompts),
            needs_strong=np.concatenate([benchmark.strong > benchmark.weak for benchmark in benchmarks]),
            sources=tuple(benchmark.name for benchmark in benchmarks for _ in benchmark.prompts),
        )

    def rows(self, keep: NDArray[np.bool_]) -> Outcomes:
        return Outcomes(
            prompts=tuple(p for p, kept in zip(self.prompts, keep, strict=True) if kept),
            needs_strong=self.needs_strong[keep],
            sources=tuple(s for s, kept in zip(self.sources, keep, strict=True) if kept),
        )


@dataclass(frozen=True)
class FeatureTable:
    """The features of many prompts: hashed words as a sparse matrix, numeric features as a dense one."""

    words: Any
    """scipy CSR matrix, one row per prompt, one column per hash bucket."""
    numeric: NDArray[np.float64]
    hash_bits: int

    @classmethod
    def build(cls, prompts: Sequence[str], hash_bits: int = features.HASH_BITS) -> FeatureTable:
        if not prompts:
            raise ValueError("no prompts to build features from")
        found = [features.extract(prompt, hash_bits) for prompt in prompts]
        indptr = np.cumsum([0, *(len(f.buckets) for f in found)])
        columns = np.concatenate([f.buckets for f in found])
        values = np.concatenate([np.full(len(f.buckets), f.bucket_value) for f in found])
        # Duplicate columns in a row (a salted bucket landing on another word's) add up, as in LinearModel.logit.
        words = sparse.csr_matrix((values, columns, indptr), shape=(len(found), 1 << hash_bits))
        words.sum_duplicates()
        return cls(words, np.stack([f.numeric for f in found]), hash_bits)

    def rows(self, keep: NDArray[np.bool_]) -> FeatureTable:
        return FeatureTable(self.words[keep], self.numeric[keep], self.hash_bits)


def fit_linear(table: FeatureTable, labels: NDArray[np.bool_], *, alpha: float, seed: int) -> LinearModel:
    """One logistic model; returned in raw-feature form (the standardisation folded into its weights and bias)."""
    if labels.all() or not labels.any():
        raise ValueError("need prompts of both labels to train on")
    mean = table.numeric.mean(axis=0)
    scale = table.numeric.std(axis=0)
    # A constant column (std 0, or a rounding error's worth) carries nothing; dividing by its std would blow the
    # raw-form weight up to where the bias cannot cancel it in floating point.
    scale[scale < 1e-9] = 1.0
    design = sparse.hstack([table.words, sparse.csr_matrix((table.numeric - mean) / scale)], format="csr")
    classifier = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=EPOCHS, tol=None, average=True, random_state=seed)
    classifier.fit(design, labels)
    weights = classifier.coef_[0]
    buckets = table.words.shape[1]
    numeric_weights = weights[buckets:] / scale
    return LinearModel(
        bucket_weights=weights[:buckets].astype(np.float32),
        numeric_weights=numeric_weights,
        bias=float(classifier.intercept_[0] - mean @ numeric_weights),
    )


def train(
    outcomes: Outcomes,
    table: FeatureTable,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    alpha: float = DEFAULT_ALPHA,
    rules: RulesLogit | None = None,
) -> LearnedModel:
    """Fit one model per fold, each without that fold's prompts (`folds=1`: one model on everything), and with
    `rules` the stack over the learned and the rules' logits (needs `folds` of at least 2)."""
    if rules is not None and folds < 2:
        raise ValueError("the stack is fitted on out-of-fold logits: it needs at least 2 folds")
    started = time.perf_counter()
    stack = None
    if folds == 1:
        models: tuple[LinearModel, ...] = (fit_linear(table, outcomes.needs_strong, alpha=alpha, seed=seed),)
    else:
        fold = fold_indices(outcomes.prompts, seed, folds)
        models = tuple(
            fit_linear(table.rows(fold != k), outcomes.needs_strong[fold != k], alpha=alpha, seed=seed)
            for k in range(folds)
        )
        if rules is not None:
            stack = fit_stack(outcomes, table, models, fold, rules)
    trained_on = sorted(set(outcomes.sources))
    meta = {
        "format": ARTIFACT_FORMAT,
        "features_version": features.FEATURES_VERSION,
        "hash_bits": table.hash_bits,
        "max_tokens": features.MAX_TOKENS,
        "window_chars": features.WINDOW_CHARS,
        "numeric_names": list(features.NUMERIC_NAMES),
        "label": LABEL,
        "alpha": alpha,
        "epochs": EPOCHS,
        "trained_on": trained_on,
        "cross_fitted": {"benchmarks": trained_on if folds > 1 else [], "seed": seed},
        "prompts": len(outcomes.prompts),
        "fit_seconds": round(time.perf_counter() - started, 1),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stack": stack.to_meta() if stack is not None else None,
    }
    return LearnedModel.from_folds(models, meta)


def fit_stack(
    outcomes: Outcomes,
    table: FeatureTable,
    models: Sequence[LinearModel],
    fold: NDArray[np.int64],
    rules: RulesLogit,
) -> Stack:
    """The stack's weights, fitted on each training prompt's logit from the fold model that never saw it."""
    out_of_fold = np.zeros(len(outcomes.prompts))
    for k, model in enumerate(models):
        rows = fold == k
        words = table.words[rows] @ model.bucket_weights.astype(np.float64)
        out_of_fold[rows] = model.bias + words + table.numeric[rows] @ model.numeric_weights
    rules_logits = np.array([rules.logit(prompt) for prompt in outcomes.prompts])
    # C large: two weights on 15,000 prompts need no penalty, and a penalty would shrink them towards 0.
    stacker = LogisticRegression(C=1e4).fit(np.column_stack([out_of_fold, rules_logits]), outcomes.needs_strong)
    learned_weight, rules_weight = (float(w) for w in stacker.coef_[0])
    return Stack(learned_weight, rules_weight, float(stacker.intercept_[0]), rules)


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    benchmark: str
    trained_on: tuple[str, ...]
    train_prompts: int
    metrics: RouterMetrics


def leave_one_benchmark_out(
    benchmarks: Sequence[Benchmark],
    outcomes: Outcomes,
    table: FeatureTable,
    *,
    seed: int = DEFAULT_SEED,
    alpha: float = DEFAULT_ALPHA,
    rules: RulesLogit | None = None,
    folds: int = 1,
) -> list[ExperimentResult]:
    """For each benchmark: one model on all prompts of the others (with `rules`: fold models and their stack, served
    as the artifact is), evaluated on all of it.

    `outcomes` and `table` hold every benchmark's prompts in `benchmarks` order (built once by the caller).
    """
    sources = np.array(outcomes.sources)
    results = []
    for test in benchmarks:
        keep = sources != test.name
        model = train(outcomes.rows(keep), table.rows(keep), folds=folds, seed=seed, alpha=alpha, rules=rules)
        scores = LearnedScorer(model).score_many(test.prompts)
        trained_on = tuple(b.name for b in benchmarks if b.name != test.name)
        results.append(
            ExperimentResult(test.name, trained_on, int(keep.sum()), evaluate_scores(scores, test.weak, test.strong))
        )
    return results
