"""`tiergate eval-router` and `tiergate train-router` end to end, on a small data folder laid out like RouteLLM's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from router.evaluation.cli import main, train_main
from router.evaluation.datasets import STRONG_MODEL, WEAK_MODEL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """60 MMLU-style, 40 GSM8K-style prompts and 6 MT-Bench questions; prompts about "orbits" are the hard ones."""
    rng = np.random.default_rng(0)
    root = tmp_path / "routellm"
    (root / "mmlu_responses").mkdir(parents=True)
    topics = ["orbits", "poems", "rivers", "taxes"]

    def outcome(hard: bool) -> tuple[bool, bool]:
        return (not hard and rng.random() < 0.9, rng.random() < 0.9)

    for subject in ("astronomy", "poetry"):
        with (root / "mmlu_responses" / f"mmlu_{subject}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prompt", WEAK_MODEL, STRONG_MODEL])
            for i in range(30):
                topic = topics[i % 4]
                prompt = f"Question {i} about {topic} in {subject}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
                writer.writerow([prompt, *outcome(topic == "orbits")])
    with (root / "gsm8k_responses.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", WEAK_MODEL, STRONG_MODEL, f"{WEAK_MODEL}_response", f"{STRONG_MODEL}_response"])
        for i in range(40):
            topic = topics[i % 4]
            writer.writerow(
                [f"Tom has {i} {topic}. He buys 3 more. How many now?", *outcome(topic == "orbits"), "", ""]
            )
    for name in ("mmlu", "gsm8k"):
        (root / f"{name}_contaminated_prompts.jsonl").write_text(json.dumps({"eval_prompt": "not in the data"}) + "\n")
    mt = root / "mt_bench"
    mt.mkdir()
    questions = [{"question_id": q, "turns": [f"Tell me about {topics[q % 4]} ({q}).", "More."]} for q in range(6)]
    (mt / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (mt / "contaminated_prompts.jsonl").write_text(json.dumps({"eval_prompt": "Tell me about rivers (2)."}) + "\n")
    judgements = [
        {"question_id": q, "model": model, "turn": turn, "score": 3 if (model == WEAK_MODEL and q % 4 == 0) else 9}
        for q in range(6)
        for model in (WEAK_MODEL, STRONG_MODEL)
        for turn in (1, 2)
    ]
    (mt / "judgements.jsonl").write_text("".join(json.dumps(j) + "\n" for j in judgements))
    return root


def test_eval_router_prints_plots_and_records(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "BENCHMARKS.md"
    record.write_text("# Benchmarks\n\nearlier figures\n")
    argv = ["--data", str(data_dir), "--scorer", "length", "--scorer", "random", "--repeats", "3"]
    argv += ["--out", str(tmp_path / "plots"), "--record", str(record)]
    assert main(argv) == 0

    table = capsys.readouterr().out
    assert "APGR" in table and "CPT(50%)" in table and "contaminated removed" in table
    for name in ("mmlu", "gsm8k", "mt-bench"):
        assert (tmp_path / "plots" / f"router-curve-{name}.png").read_bytes().startswith(PNG_MAGIC)
    text = record.read_text()
    assert text.startswith("# Benchmarks\n\nearlier figures\n")  # appended, not rewritten
    assert "## Router quality (issue 5): eval-router" in text
    assert f"Command: `tiergate eval-router --data {data_dir} --scorer length" in text
    rows = [line for line in text.splitlines() if line.startswith(("| mmlu", "| gsm8k", "| mt-bench"))]
    assert len(rows) == 6
    mt_row = next(row for row in rows if row.startswith("| mt-bench | length"))
    assert "| 1 | 5 |" in mt_row  # one question removed as contaminated, five left


def test_eval_router_without_record_leaves_the_file_alone(data_dir: Path, tmp_path: Path) -> None:
    record = tmp_path / "BENCHMARKS.md"
    argv = ["--benchmark", "gsm8k", "--data", str(data_dir), "--scorer", "length", "--out", str(tmp_path)]
    assert main([*argv, "--record", str(record), "--no-record"]) == 0
    assert not record.exists()


def test_train_router_writes_an_artifact_the_eval_command_scores_honestly(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact, record = tmp_path / "scorer.npz", tmp_path / "BENCHMARKS.md"
    assert train_main(["--data", str(data_dir), "--out", str(artifact), "--folds", "3", "--record", str(record)]) == 0
    assert artifact.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "held-out prompts: 3-fold cross-fitted" in printed
    assert printed.count("leave-one-benchmark-out") == 4  # the artifact on MT-Bench, and one run per benchmark
    assert "## Router quality (issue 5): train-router" in record.read_text()

    argv = ["--benchmark", "all", "--data", str(data_dir), "--scorer", "learned", "--artifact", str(artifact)]
    assert main([*argv, "--out", str(tmp_path), "--no-record"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "learned" in line}
    assert "held-out prompts" in rows["gsm8k"] and "held-out prompts" in rows["mmlu"]
    assert "leave-one-benchmark-out" in rows["mt-bench"]
    # "orbits" prompts are the ones only the strong model gets right; the learned scorer must rank them first.
    apgr = float(rows["gsm8k"].split()[2])
    assert apgr > 0.7


def test_missing_data_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "nowhere"), "--scorer", "length", "--no-record"]) == 2
    assert "nowhere" in capsys.readouterr().err
