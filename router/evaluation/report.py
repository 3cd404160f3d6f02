"""Evaluate scorers on a benchmark and render the results: a console table and a `BENCHMARKS.md` entry."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from router.evaluation.datasets import Benchmark
from router.evaluation.metrics import RouterMetrics, evaluate_scores, mean_curve, metrics_from_curve, routing_curve
from router.evaluation.registry import create_scorer
from router.evaluation.scorers import Scorer, ScorerOptions


@dataclass(frozen=True, slots=True)
class ScorerResult:
    benchmark: str
    scorer: str
    metrics: RouterMetrics | None
    """None when no prompt of the benchmark could be evaluated (a learned scorer trained on all of them)."""
    prompts: int
    contaminated_removed: int
    note: str


def evaluate(scorer: Scorer, benchmark: Benchmark, options: ScorerOptions, repeats: int = 1) -> ScorerResult:
    """The scorer's metrics on the benchmark.

    A seeded scorer is built once per seed (`options.seed` onwards, `repeats` of them) and its curves averaged
    point by point: one random draw over MT-Bench's 72 questions has an APGR spread of about 0.06, so one seed
    says little about the router.
    """
    if scorer.seeded and repeats > 1:
        curves = []
        for seed in range(options.seed, options.seed + repeats):
            seeded = create_scorer(scorer.name, replace(options, seed=seed))
            curves.append(routing_curve(seeded.score_many(benchmark.prompts), benchmark.weak, benchmark.strong))
        weak, strong = float(benchmark.weak.mean()), float(benchmark.strong.mean())
        metrics: RouterMetrics | None = metrics_from_curve(mean_curve(curves), weak, strong)
        note = f"mean of seeds {options.seed}..{options.seed + repeats - 1}"
    else:
        scores = scorer.evaluation_scores(benchmark)
        metrics = None if scores is None else evaluate_scores(scores, benchmark.weak, benchmark.strong)
        note = "; ".join(part for part in (scorer.describe(), scorer.evaluation_note(benchmark)) if part)
    return ScorerResult(benchmark.name, scorer.name, metrics, benchmark.size, benchmark.contaminated_removed, note)


_COLUMNS = ("benchmark", "scorer", "APGR", "CPT(50%)", "CPT(80%)", "contaminated removed", "n", "note")


def _cells(result: ScorerResult) -> tuple[str, ...]:
    metrics = result.metrics
    figures = (f"{metrics.apgr:.3f}", f"{metrics.cpt50:.1%}", f"{metrics.cpt80:.1%}") if metrics else ("-", "-", "-")
    return (
        result.benchmark,
        result.scorer,
        *figures,
        str(result.contaminated_removed),
        str(result.prompts),
        result.note,
    )


def format_table(results: Sequence[ScorerResult]) -> str:
    """A fixed-width console table, one row per benchmark and scorer."""
    rows = [_COLUMNS, *(_cells(result) for result in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_entry(title: str, command: str, results: Sequence[ScorerResult], notes: Sequence[str] = ()) -> str:
    """A `BENCHMARKS.md` section: its own heading, the exact command, a table of the figures."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "",
        f"## {title} ({when})",
        "",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "|".join("---" for _ in _COLUMNS) + "|",
        *("| " + " | ".join(_cells(result)) + " |" for result in results),
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def append_entry(path: Path, entry: str) -> None:
    """Append, never rewrite: other benchmarks record in the same file."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(entry)
