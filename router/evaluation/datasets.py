"""RouteLLM's outcome data (`../shared/data/routellm`): per prompt, how the weak and the strong model did.

Each benchmark loads into one `Benchmark`: the prompts a router scores and, per prompt, the quality each model
reached, with the prompts that overlap RouteLLM's training data removed as RouteLLM's evaluation removes them.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

WEAK_MODEL: Final = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL: Final = "gpt-4-1106-preview"
BENCHMARK_NAMES: Final = ("mmlu", "gsm8k", "mt-bench")
DEFAULT_DATA_DIR: Final = Path("../shared/data/routellm")


@dataclass(frozen=True)
class Benchmark:
    name: str
    prompts: tuple[str, ...]
    """What a router scores. MT-Bench: the question's first turn (RouteLLM routes a conversation on it)."""
    weak: NDArray[np.float64]
    """Quality of the weak model per prompt: 1/0 correctness, or for MT-Bench the mean judge score of both turns."""
    strong: NDArray[np.float64]
    contaminated_removed: int
    """Prompts dropped because they overlap RouteLLM's training data."""
    score_range: tuple[float, float] = field(default=(0.0, 1.0))
    """The scale of `weak` and `strong` (MT-Bench judges score 1..10)."""

    def __post_init__(self) -> None:
        if not len(self.prompts) == len(self.weak) == len(self.strong):
            raise ValueError(f"{self.name}: prompts and results differ in length")

    @property
    def size(self) -> int:
        return len(self.prompts)

    def subset(self, keep: NDArray[np.bool_]) -> Benchmark:
        """The same benchmark restricted to the prompts where `keep` is true."""
        return Benchmark(
            name=self.name,
            prompts=tuple(prompt for prompt, kept in zip(self.prompts, keep, strict=True) if kept),
            weak=self.weak[keep],
            strong=self.strong[keep],
            contaminated_removed=self.contaminated_removed,
            score_range=self.score_range,
        )


def load_benchmark(name: str, data_dir: Path = DEFAULT_DATA_DIR) -> Benchmark:
    """Load one benchmark by name (`mmlu`, `gsm8k` or `mt-bench`)."""
    if name == "mmlu":
        return _load_correctness("mmlu", sorted((data_dir / "mmlu_responses").glob("mmlu_*.csv")), data_dir)
    if name == "gsm8k":
        return _load_correctness("gsm8k", [data_dir / "gsm8k_responses.csv"], data_dir)
    if name == "mt-bench":
        return _load_mt_bench(data_dir / "mt_bench")
    raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARK_NAMES)}")


def _load_correctness(name: str, files: list[Path], data_dir: Path) -> Benchmark:
    if not files:
        raise FileNotFoundError(f"no {name} response files under {data_dir}")
    contaminated = _contaminated_prompts(data_dir / f"{name}_contaminated_prompts.jsonl")
    prompts: list[str] = []
    weak: list[bool] = []
    strong: list[bool] = []
    removed = 0
    for path in files:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["prompt"] in contaminated:
                    removed += 1
                    continue
                prompts.append(row["prompt"])
                weak.append(_parse_bool(row[WEAK_MODEL], path))
                strong.append(_parse_bool(row[STRONG_MODEL], path))
    return Benchmark(
        name, tuple(prompts), np.array(weak, dtype=np.float64), np.array(strong, dtype=np.float64), removed
    )


def _load_mt_bench(folder: Path) -> Benchmark:
    """One prompt per question; its quality is the mean judge score over the question's two turns.

    RouteLLM routes both turns of a question on the first turn's score and averages the judge scores of every
    (question, turn) row it routed. Every question has exactly two judged turns per model (checked below), so the
    mean over rows equals the mean over questions of their two-turn means, and a question's strong share equals its
    rows' share. A question goes when either of its turns is contaminated.
    """
    contaminated = _contaminated_prompts(folder / "contaminated_prompts.jsonl")
    questions = [_json_object(line) for line in _lines(folder / "question.jsonl")]
    kept = [q for q in questions if not any(turn in contaminated for turn in q["turns"])]
    scores: dict[tuple[int, str], dict[int, float]] = defaultdict(dict)
    for judgement in map(_json_object, _lines(folder / "judgements.jsonl")):
        turns = scores[(int(judgement["question_id"]), str(judgement["model"]))]
        turn = int(judgement["turn"])
        if turn in turns:
            raise ValueError(f"{folder}: two judgements for question {judgement['question_id']} turn {turn}")
        turns[turn] = float(judgement["score"])

    def quality(question_id: int, model: str) -> float:
        turns = scores.get((question_id, model), {})
        if sorted(turns) != [1, 2]:
            raise ValueError(f"{folder}: question {question_id} lacks two judged turns for {model}")
        return (turns[1] + turns[2]) / 2

    return Benchmark(
        name="mt-bench",
        prompts=tuple(str(q["turns"][0]) for q in kept),
        weak=np.array([quality(int(q["question_id"]), WEAK_MODEL) for q in kept]),
        strong=np.array([quality(int(q["question_id"]), STRONG_MODEL) for q in kept]),
        contaminated_removed=len(questions) - len(kept),
        score_range=(1.0, 10.0),
    )


def _contaminated_prompts(path: Path) -> frozenset[str]:
    return frozenset(str(_json_object(line)["eval_prompt"]) for line in _lines(path))


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _json_object(line: str) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object per line, got {type(value).__name__}")
    return value


def _parse_bool(text: str, path: Path) -> bool:
    if text not in ("True", "False"):
        raise ValueError(f"{path}: expected True/False, got {text!r}")
    return text == "True"
