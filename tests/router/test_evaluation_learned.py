"""The learned scorer: the shipped artifact, the artifact format, training, and honest evaluation scores."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from router.chat import ChatRequest, Message
from router.evaluation import features
from router.evaluation.datasets import Benchmark, load_benchmark
from router.evaluation.learned import DEFAULT_ARTIFACT, LearnedModel, LearnedScorer, LinearModel, RulesLogit
from router.evaluation.metrics import evaluate_scores
from router.evaluation.registry import create_scorer
from router.evaluation.scorers import RandomScorer, ScorerOptions
from router.evaluation.splits import fold_of
from router.evaluation.training import FeatureTable, Outcomes, train
from router.rules import default_rules_path, load_rules

ROUTELLM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "routellm"
BITS = 10


def _constant_model(biases: list[float], meta: dict[str, object]) -> LearnedModel:
    """Fold models that ignore the prompt: fold k always answers `biases[k]`."""
    folds = tuple(
        LinearModel(np.zeros(1 << BITS, dtype=np.float32), np.zeros(len(features.NUMERIC_NAMES)), bias)
        for bias in biases
    )
    base = {"format": 1, "features_version": features.FEATURES_VERSION, "hash_bits": BITS}
    return LearnedModel.from_folds(folds, {**base, "numeric_names": list(features.NUMERIC_NAMES), **meta})


def _benchmark(name: str, prompts: list[str]) -> Benchmark:
    return Benchmark(name, tuple(prompts), np.zeros(len(prompts)), np.ones(len(prompts)), 0)


def test_shipped_artifact_loads_once_and_scores_fast() -> None:
    assert DEFAULT_ARTIFACT.stat().st_size < 5_000_000
    scorer = LearnedScorer.create(ScorerOptions())
    prompts = ["What is the capital of France?", "A train leaves at 3 pm at 60 mph; another at 4 pm at 80 mph. When?"]
    scores = [scorer.score(prompt) for prompt in prompts]
    assert all(0.0 < score < 1.0 for score in scores)
    assert scores == [scorer.score(prompt) for prompt in prompts]
    started = time.perf_counter()
    for _ in range(50):
        scorer.score(prompts[1])
    assert (time.perf_counter() - started) / 50 < 0.01  # generous; bench/router_scorer.py measures p99


def test_a_request_is_scored_on_its_latest_user_message() -> None:
    scorer = LearnedScorer.create(ScorerOptions())
    question = "Solve for x: 3x + 7 = 22, then explain each step."
    messages = [
        Message(role="system", content="You are a helpful assistant."),
        Message(role="user", content="Hello"),
        Message(role="assistant", content="Hi! How can I help?"),
        Message(role="user", content=question),
    ]
    request = ChatRequest(request_id="r1", model="auto", messages=messages)
    assert scorer.score_request(request) == scorer.score(question)
    assert scorer.score_request(ChatRequest(request_id="r2", model="auto", messages=[])) == scorer.score("")


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


def test_served_score_stacks_the_mean_fold_model_with_the_default_rules_score() -> None:
    model = LearnedModel.load(DEFAULT_ARTIFACT)
    assert model.stack is not None and model.stack.rules > 0 and model.stack.learned > 0
    rules = create_scorer("rules")  # the shipped rules' score, as `tiergate eval-router --scorer rules` reports it
    prompt = "Prove that the square root of 2 is irrational, step by step, and compare two proofs."
    found = features.extract(prompt, model.hash_bits)
    mean_logit = float(np.mean([fold.logit(found) for fold in model.folds]))
    rules_logit = _logit(rules.score(prompt))
    assert model.stack.rules_score.logit(prompt) == pytest.approx(rules_logit, abs=1e-9)
    stacked = model.stack.bias + model.stack.learned * mean_logit + model.stack.rules * rules_logit
    assert LearnedScorer(model).score(prompt) == pytest.approx(1 / (1 + math.exp(-stacked)), rel=1e-5)


def test_shipped_artifact_on_unseen_mt_bench_beats_95_percent_of_random_routers() -> None:
    """Leave-one-benchmark-out: trained on MMLU + GSM8K only, scored on MT-Bench's 72 questions."""
    scorer = LearnedScorer.create(ScorerOptions())
    assert "mt-bench" not in scorer.model.meta["trained_on"]
    mt_bench = load_benchmark("mt-bench", ROUTELLM)
    scores = scorer.evaluation_scores(mt_bench)
    assert scores is not None
    learned = evaluate_scores(scores, mt_bench.weak, mt_bench.strong).apgr
    random = [
        evaluate_scores(RandomScorer(seed).score_many(mt_bench.prompts), mt_bench.weak, mt_bench.strong).apgr
        for seed in range(200)
    ]
    assert learned > float(np.percentile(random, 95))


def test_shipped_artifact_beats_the_published_best_on_held_out_gsm8k() -> None:
    """Every GSM8K prompt scored by the fold model that never saw it; RouteLLM's best router reached 0.622."""
    scorer = LearnedScorer.create(ScorerOptions())
    gsm8k = load_benchmark("gsm8k", ROUTELLM)
    scores = scorer.evaluation_scores(gsm8k)
    assert scores is not None
    assert evaluate_scores(scores, gsm8k.weak, gsm8k.strong).apgr > 0.622


def test_evaluation_uses_the_fold_model_that_never_saw_the_prompt() -> None:
    meta: dict[str, object] = {"trained_on": ["gsm8k", "mmlu"], "cross_fitted": {"benchmarks": ["gsm8k"], "seed": 3}}
    scorer = LearnedScorer(_constant_model([4.0, -4.0], meta))
    prompts = [f"prompt {i}" for i in range(40)]
    scores = scorer.evaluation_scores(_benchmark("gsm8k", prompts))
    assert scores is not None
    expected = [1 / (1 + math.exp(-4.0 if fold_of(p, 3, 2) == 0 else 4.0)) for p in prompts]
    assert scores.tolist() == pytest.approx(expected)
    assert scorer.evaluation_scores(_benchmark("mmlu", prompts)) is None  # trained on all of it
    unseen = scorer.evaluation_scores(_benchmark("mt-bench", prompts))
    assert unseen is not None and unseen.tolist() == pytest.approx([0.5] * 40)  # the mean model: logit 0
    assert "held-out" in scorer.evaluation_note(_benchmark("gsm8k", []))
    assert "leave-one-benchmark-out" in scorer.evaluation_note(_benchmark("mt-bench", []))


def test_training_learns_a_planted_signal_and_round_trips_through_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = ["apple", "river", "table", "music", "garden", "window", "yellow", "summer"]
    prompts, labels = [], []
    for i in range(120):
        hard = i % 3 == 0
        # Same length either way: only the words tell the labels apart.
        text = " ".join(rng.choice(words, 6)) + (" integral derivative" if hard else " pleasant afternoons") + f" #{i}"
        prompts.append(text)
        labels.append(hard)
    outcomes = Outcomes(tuple(prompts), np.array(labels), ("synthetic",) * len(prompts))
    model = train(outcomes, FeatureTable.build(prompts, BITS), folds=3, seed=0)
    path = tmp_path / "scorer.npz"
    model.save(path)
    loaded = LearnedScorer(LearnedModel.load(path))
    hard_score = loaded.score("apple river table music garden window integral derivative #7")
    easy_score = loaded.score("apple river table music garden window pleasant afternoons #7")
    assert hard_score > 0.5 > easy_score
    # float16 on disk: scores match the in-memory model to a few parts in a thousand.
    in_memory = LearnedScorer(model).score("apple river table music garden window integral derivative #7")
    assert hard_score == pytest.approx(in_memory, abs=5e-3)
    assert loaded.model.meta["cross_fitted"] == {"benchmarks": ["synthetic"], "seed": 0}
    assert len(loaded.model.folds) == 3


def test_the_stack_is_fitted_out_of_fold_and_round_trips_through_the_file(tmp_path: Path) -> None:
    default = load_rules(default_rules_path()).scorer
    rules = RulesLogit(default.bias, default.weights)
    prompts = [f"{'prove and compare ' if i % 2 else ''}apple river table music #{i}" for i in range(60)]
    labels = np.array([i % 2 == 1 for i in range(60)])
    outcomes = Outcomes(tuple(prompts), labels, ("synthetic",) * len(prompts))
    table = FeatureTable.build(prompts, BITS)
    with pytest.raises(ValueError, match="folds"):
        train(outcomes, table, folds=1, rules=rules)
    model = train(outcomes, table, folds=3, seed=0, rules=rules)
    assert model.stack is not None and model.meta["stack"]["rules_score"]["bias"] == default.bias
    path = tmp_path / "stacked.npz"
    model.save(path)
    loaded = LearnedScorer(LearnedModel.load(path))
    assert loaded.model.stack == model.stack
    assert loaded.score(prompts[1]) == pytest.approx(LearnedScorer(model).score(prompts[1]), abs=5e-3)


def test_an_artifact_for_other_features_is_refused(tmp_path: Path) -> None:
    model = _constant_model([0.0], {"trained_on": [], "cross_fitted": {"benchmarks": [], "seed": 0}})
    path = tmp_path / "old.npz"
    model.save(path)
    with np.load(path) as arrays:
        stored = {name: arrays[name] for name in arrays.files}
    meta = json.loads(str(stored["meta"]))
    meta["features_version"] = features.FEATURES_VERSION - 1
    stored["meta"] = np.array(json.dumps(meta))
    with path.open("wb") as handle:
        np.savez(handle, **stored)
    with pytest.raises(ValueError, match="retrain"):
        LearnedModel.load(path)
