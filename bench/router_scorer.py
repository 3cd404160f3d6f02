"""Time of one learned-scorer call on the request path (feature extraction + score), beside the other scorers.

    .venv/bin/python bench/router_scorer.py [--fold-seeds 1,2,3,4,5] [--no-record]

Prompts: every RouteLLM benchmark prompt (MMLU, GSM8K, MT-Bench first turns, from ../shared/data/routellm), and two
long synthetic ones built from GSM8K text: a 16,000-character user message (about 4k tokens, an agent step) and a
100,000-character pasted document. Columns: p50/p99/max microseconds per call as wall-clock time and as this
thread's CPU time (which a busy machine does not inflate by making the process wait), for the shipped learned
scorer, the prompt-length baseline and the default rules' score. Target: learned p99 under 2,000 µs.

With --fold-seeds, also retrains the learned scorer with other fold seeds (about 30 s each on 2 cores) and reports
its cross-fitted APGR on MMLU and GSM8K and its MT-Bench APGR, to show how much the shipped figures (fold seed 0)
depend on the split. Appends the tables with the command and the load average to BENCHMARKS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.evaluation.datasets import BENCHMARK_NAMES, Benchmark, load_benchmark  # noqa: E402
from router.evaluation.learned import DEFAULT_ARTIFACT, LearnedScorer  # noqa: E402
from router.evaluation.metrics import evaluate_scores  # noqa: E402
from router.evaluation.registry import create_scorer  # noqa: E402
from router.evaluation.scorers import Scorer, ScorerOptions  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "routellm"
TARGET_P99_US = 2000


def _percentiles(values_ns: list[int]) -> tuple[float, float, float]:
    micro = np.array(values_ns) / 1000
    return float(np.percentile(micro, 50)), float(np.percentile(micro, 99)), float(micro.max())


def _time(scorer: Scorer, prompts: list[str], rounds: int) -> tuple[list[int], list[int]]:
    for prompt in prompts[:200]:  # warm up caches and the regex engine
        scorer.score(prompt)
    wall: list[int] = []
    cpu: list[int] = []
    for _ in range(rounds):
        for prompt in prompts:
            wall_start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
            scorer.score(prompt)
            cpu.append(time.thread_time_ns() - cpu_start)
            wall.append(time.perf_counter_ns() - wall_start)
    return wall, cpu


def latency_rows(benchmarks: list[Benchmark]) -> list[list[str]]:
    prompts = [prompt for benchmark in benchmarks for prompt in benchmark.prompts]
    gsm8k_text = " ".join(next(b for b in benchmarks if b.name == "gsm8k").prompts)
    groups = {
        f"RouteLLM prompts ({len(prompts):,})": (prompts, 1),
        "16,000-char message": ([gsm8k_text[i * 500 : i * 500 + 16_000] for i in range(200)], 1),
        "100,000-char document": ([gsm8k_text[i * 500 : i * 500 + 100_000] for i in range(100)], 1),
    }
    scorers = {name: create_scorer(name) for name in ("learned", "length", "rules")}
    rows = []
    for group, (texts, rounds) in groups.items():
        for name, scorer in scorers.items():
            wall, cpu = _time(scorer, texts, rounds)
            wall_p = _percentiles(wall)
            cpu_p = _percentiles(cpu)
            rows.append([group, name, *(f"{v:,.0f}" for v in (*wall_p, *cpu_p))])
    return rows


def fold_seed_rows(benchmarks: list[Benchmark], seeds: list[int]) -> list[list[str]]:
    from router.evaluation.cli import TRAINED_BENCHMARKS
    from router.evaluation.training import FeatureTable, Outcomes, train

    trained = [b for b in benchmarks if b.name in TRAINED_BENCHMARKS]
    outcomes = Outcomes.from_benchmarks(trained)
    table = FeatureTable.build(outcomes.prompts)
    rows = []
    for seed in seeds:
        started = time.perf_counter()
        scorer = LearnedScorer(train(outcomes, table, seed=seed))
        apgrs = []
        for benchmark in benchmarks:
            scores = scorer.evaluation_scores(benchmark)
            assert scores is not None
            apgrs.append(evaluate_scores(scores, benchmark.weak, benchmark.strong).apgr)
        rows.append([str(seed), *(f"{apgr:.3f}" for apgr in apgrs), f"{time.perf_counter() - started:.0f}"])
    return rows


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fold-seeds", default="", help="comma-separated fold seeds to retrain with (slow)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    benchmarks = [load_benchmark(name, DATA) for name in BENCHMARK_NAMES]
    started = time.perf_counter()
    LearnedScorer.create(ScorerOptions())
    load_ms = (time.perf_counter() - started) * 1000
    latency_header = ["prompts", "scorer", "p50 µs", "p99 µs", "max µs", "CPU p50 µs", "CPU p99 µs", "CPU max µs"]
    latency = latency_rows(benchmarks)
    lines = _markdown(latency_header, latency)
    seeds = [int(seed) for seed in args.fold_seeds.split(",") if seed.strip()]
    if seeds:
        lines += [
            "",
            *_markdown(
                ["fold seed", *(f"{name} APGR" for name in BENCHMARK_NAMES), "seconds"],
                fold_seed_rows(benchmarks, seeds),
            ),
        ]
    print("\n".join(lines))
    print(f"artifact load: {load_ms:.0f} ms ({DEFAULT_ARTIFACT.stat().st_size / 1e6:.1f} MB)")

    if not args.no_record:
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        command = shlex.join([".venv/bin/python", "bench/router_scorer.py", *sys.argv[1:]])
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}, Python {platform.python_version()}"
        )
        entry = [
            "",
            f"## Router quality (issue 5): learned scorer latency, {when} ({machine})",
            "",
            f"Command: `{command}`. Artifact {DEFAULT_ARTIFACT.relative_to(ROOT)}, loaded once in {load_ms:.0f} ms; "
            f"target p99 < {TARGET_P99_US:,} µs per call including feature extraction. `length` and `rules` (the "
            "default rules' score of a one-message request) are timed in the same run for comparison.",
            "",
            *lines,
        ]
        if seeds:
            entry += [
                "",
                "Fold-seed rows: the learned scorer retrained with that fold seed; MMLU and GSM8K cross-fitted "
                "(each prompt scored by the fold model that never saw it), MT-Bench by the served model (never "
                "trained on MT-Bench). The shipped artifact uses fold seed 0.",
            ]
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as handle:
            handle.write("\n".join(entry) + "\n")
        print("recorded in BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
