"""Loading RouteLLM's outcome data: decontamination and MT-Bench's per-turn judge scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from router.evaluation.datasets import STRONG_MODEL, WEAK_MODEL, load_benchmark

ROUTELLM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "routellm"


def _write_csv(path: Path, rows: list[tuple[str, bool, bool]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", WEAK_MODEL, STRONG_MODEL])
        writer.writerows(rows)


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_mmlu_reads_every_subject_and_drops_contaminated_prompts(tmp_path: Path) -> None:
    _write_csv(tmp_path / "mmlu_responses" / "mmlu_anatomy.csv", [("Q1\nA. x\nB. y", True, True), ("Q2", False, True)])
    _write_csv(tmp_path / "mmlu_responses" / "mmlu_law.csv", [("Q3", False, False)])
    _write_jsonl(tmp_path / "mmlu_contaminated_prompts.jsonl", [{"train_prompt": "q2", "eval_prompt": "Q2"}])
    mmlu = load_benchmark("mmlu", tmp_path)
    assert mmlu.prompts == ("Q1\nA. x\nB. y", "Q3")
    assert mmlu.weak.tolist() == [1.0, 0.0]
    assert mmlu.strong.tolist() == [1.0, 0.0]
    assert mmlu.contaminated_removed == 1


def test_mt_bench_averages_both_turns_and_drops_questions_with_a_contaminated_turn(tmp_path: Path) -> None:
    folder = tmp_path / "mt_bench"
    _write_jsonl(
        folder / "question.jsonl",
        [
            {"question_id": 1, "turns": ["Write a poem.", "Shorter."]},
            {"question_id": 2, "turns": ["Solve x+1=2.", "Now x+2=5."]},
            {"question_id": 3, "turns": ["Plan a trip.", "A leaked follow-up."]},
        ],
    )
    _write_jsonl(folder / "contaminated_prompts.jsonl", [{"eval_prompt": "A leaked follow-up."}])
    scores = {(1, WEAK_MODEL): (8, 6), (1, STRONG_MODEL): (9, 9), (2, WEAK_MODEL): (2, 3), (2, STRONG_MODEL): (10, 10)}
    scores |= {(3, WEAK_MODEL): (5, 5), (3, STRONG_MODEL): (5, 5)}
    judgements = [
        {"question_id": q, "model": model, "turn": turn, "score": pair[turn - 1]}
        for (q, model), pair in scores.items()
        for turn in (1, 2)
    ]
    _write_jsonl(folder / "judgements.jsonl", judgements)
    bench = load_benchmark("mt-bench", tmp_path)
    assert bench.prompts == ("Write a poem.", "Solve x+1=2.")
    assert bench.weak.tolist() == [7.0, 2.5]
    assert bench.strong.tolist() == [9.0, 10.0]
    assert bench.contaminated_removed == 1

    _write_jsonl(folder / "judgements.jsonl", judgements[1:])  # question 1 loses a judged turn
    with pytest.raises(ValueError, match="question 1 lacks two judged turns"):
        load_benchmark("mt-bench", tmp_path)


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("hellaswag", tmp_path)


def test_real_data_matches_routellm_counts() -> None:
    """RouteLLM reports 14037/14042 MMLU prompts after decontamination; the README's model accuracies match."""
    mmlu = load_benchmark("mmlu", ROUTELLM)
    assert (mmlu.size, mmlu.contaminated_removed) == (14037, 5)
    assert mmlu.weak.mean() == pytest.approx(0.681, abs=0.001)
    assert mmlu.strong.mean() == pytest.approx(0.806, abs=0.001)
    gsm8k = load_benchmark("gsm8k", ROUTELLM)
    assert gsm8k.size + gsm8k.contaminated_removed == 1319
    mt_bench = load_benchmark("mt-bench", ROUTELLM)
    assert mt_bench.size + mt_bench.contaminated_removed == 80
    assert mt_bench.weak.mean() < mt_bench.strong.mean() <= 10
