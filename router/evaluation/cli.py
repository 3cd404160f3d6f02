"""`tiergate eval-router` and `tiergate train-router`.

Both take their arguments without the subcommand name, print a table, and append the figures with the exact
command to BENCHMARKS.md (unless `--no-record`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.evaluation.datasets import BENCHMARK_NAMES, DEFAULT_DATA_DIR, Benchmark, load_benchmark
from router.evaluation.learned import DEFAULT_ARTIFACT, LearnedScorer, RulesLogit
from router.evaluation.ledger_source import add_ledger_arguments
from router.evaluation.ledger_training import train_from_ledger
from router.evaluation.plotting import plot_curves
from router.evaluation.registry import SCORERS, create_scorer
from router.evaluation.report import ScorerResult, append_entry, evaluate, format_table, markdown_entry
from router.evaluation.scorers import Scorer, ScorerOptions
from router.evaluation.splits import DEFAULT_FOLDS, DEFAULT_SEED
from router.evaluation.training import DEFAULT_ALPHA, FeatureTable, Outcomes, leave_one_benchmark_out, train
from router.rules import RulesError, default_rules_path, load_rules

DEFAULT_REPEATS = 100
DEFAULT_OUT = Path("bench/results")
DEFAULT_RECORD = Path("BENCHMARKS.md")
TRAINED_BENCHMARKS = ("mmlu", "gsm8k")
"""The artifact learns from these; MT-Bench (160 judged turns) stays out: its test is leave-one-benchmark-out."""


def _eval_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measure router scorers with RouteLLM's metrics (APGR, CPT) on RouteLLM's outcome data.",
    )
    parser.add_argument("--benchmark", choices=[*BENCHMARK_NAMES, "all"], default="all")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the routellm data folder")
    parser.add_argument(
        "--scorer",
        action="append",
        choices=sorted(SCORERS),
        help="scorer to evaluate; repeat to compare several on the same prompts (default: rules)",
    )
    parser.add_argument("--rules", type=Path, help="rules file for the rules scorer (default: the shipped one)")
    parser.add_argument("--artifact", type=Path, help="weights for the learned scorer (default: the shipped ones)")
    parser.add_argument("--seed", type=int, default=0, help="first seed of seeded scorers (random)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="seeds averaged for seeded scorers")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the curve PNGs")
    parser.add_argument("--record", type=Path, default=DEFAULT_RECORD, help="file the figures are appended to")
    parser.add_argument("--no-record", action="store_true", help="print only; append nothing")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "tiergate eval-router") -> int:
    """`tiergate eval-router`: evaluate scorers, print the table, write a PNG per benchmark, record the figures.

    `argv` excludes the subcommand; `prog` is how the command was invoked, as BENCHMARKS.md records it.
    """
    args_list = sys.argv[1:] if argv is None else argv
    args = _eval_parser(prog).parse_args(args_list)
    if args.repeats < 1:
        print("--repeats must be at least 1", file=sys.stderr)
        return 2
    options = ScorerOptions(seed=args.seed, rules_path=args.rules, artifact_path=args.artifact)
    names = list(BENCHMARK_NAMES) if args.benchmark == "all" else [args.benchmark]
    try:
        scorers = [create_scorer(name, options) for name in dict.fromkeys(args.scorer or ["rules"])]
        benchmarks = [load_benchmark(name, args.data) for name in names]
    except (OSError, ValueError, RulesError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    results: list[ScorerResult] = []
    notes: list[str] = []
    for benchmark in benchmarks:
        name = benchmark.name
        found = [evaluate(scorer, benchmark, options, args.repeats) for scorer in scorers]
        results.extend(found)
        if any(result.metrics is not None for result in found):
            png = plot_curves(
                found, args.out / f"router-curve-{name}.png", title=name, quality_label=_quality(benchmark)
            )
            notes.append(f"Curve: `{png}`")
    print(format_table(results))
    print("\n".join(notes))
    if not args.no_record:
        command = f"{prog} {shlex.join(args_list)}".rstrip()
        entry = markdown_entry("Router quality (issue 5): eval-router", command, results, _eval_notes(scorers))
        append_entry(args.record, entry)
        print(f"recorded in {args.record}")
    return 0


def _quality(benchmark: Benchmark) -> str:
    return "mean judge score (1-10)" if benchmark.name == "mt-bench" else "accuracy"


def _eval_notes(scorers: Sequence[Scorer]) -> list[str]:
    notes = [
        "APGR and CPT as RouteLLM computes them: thresholds are the qcut bin edges of the scores (numpy quantiles "
        "standing in for pandas.qcut); CPT is the share of strong-model calls. Contaminated prompts removed. "
        "MT-Bench: one routing decision per question on its first turn, quality the mean GPT-4 judge score of "
        "both turns."
    ]
    for scorer in scorers:
        if isinstance(scorer, LearnedScorer):
            meta = scorer.model.meta
            notes.append(
                f"learned: {len(scorer.model.folds)} fold models trained on {' + '.join(meta['trained_on'])} "
                f"({meta['prompts']} prompts; folds by blake2b of fold seed {meta['cross_fitted']['seed']} and the "
                "prompt). On a benchmark it trained on, each prompt is scored by the fold model that never saw it; "
                "on any other, by the served model (the mean of the fold models)." + _stack_note(meta)
            )
    return notes


def _stack_note(meta: dict[str, Any]) -> str:
    stack = meta.get("stack")
    if not stack:
        return ""
    return (
        f" Served logit: {stack['bias']:.3f} + {stack['learned']:.3f} x learned logit + {stack['rules']:.3f} x the "
        "default rules' score logit (stack fitted on MMLU + GSM8K out-of-fold logits)."
    )


def _train_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train the learned scorer on RouteLLM's outcome data, report honest splits, write the artifact.",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the routellm data folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the weights (.npz); default: the shipped artifact, except with --from-ledger, which "
        "must name its own file so a gateway's own data never silently replaces the shipped scorer",
    )
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="cross-fitting folds (models shipped)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="fold seed (also seeds the optimiser)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="L2 strength")
    parser.add_argument("--record", type=Path, default=DEFAULT_RECORD, help="file the figures are appended to")
    parser.add_argument("--no-record", action="store_true", help="print only; append nothing")
    ledger = parser.add_argument_group("training on the gateway's own ledger (instead of --data)")
    ledger.add_argument(
        "--from-ledger", action="store_true", help="label stored prompts by local outcomes and escalations"
    )
    ledger.add_argument("--metric", default=None, help="feedback metric that defines success (default: success)")
    add_ledger_arguments(parser, since_default="90d")
    return parser


def train_main(argv: list[str] | None = None, *, prog: str = "tiergate train-router") -> int:
    """`tiergate train-router`: train on MMLU and GSM8K, write the artifact, then report it (cross-fitted on those
    two, leave-one-benchmark-out on MT-Bench) and a leave-one-benchmark-out run for each of the three."""
    args_list = sys.argv[1:] if argv is None else argv
    args = _train_parser(prog).parse_args(args_list)
    if args.folds < 2 or args.alpha <= 0:
        print("--folds must be at least 2 and --alpha positive", file=sys.stderr)
        return 2
    if args.from_ledger:
        if args.out is None:
            print(f"{prog}: --from-ledger needs --out FILE.npz (the shipped scorer stays as it is)", file=sys.stderr)
            return 2
        return train_from_ledger(args, prog)
    args.out = args.out or DEFAULT_ARTIFACT
    started = time.perf_counter()
    try:
        benchmarks = [load_benchmark(name, args.data) for name in BENCHMARK_NAMES]
    except (OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    outcomes = Outcomes.from_benchmarks(benchmarks)
    table = FeatureTable.build(outcomes.prompts)
    featurized_s = time.perf_counter() - started
    training = np.isin(outcomes.sources, TRAINED_BENCHMARKS)
    default_score = load_rules(default_rules_path()).scorer
    rules = RulesLogit(default_score.bias, default_score.weights)
    model = train(
        outcomes.rows(training),
        table.rows(training),
        folds=args.folds,
        seed=args.seed,
        alpha=args.alpha,
        rules=rules,
    )
    trained_s = time.perf_counter() - started - featurized_s
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)

    scorer = LearnedScorer(model)
    results = [evaluate(scorer, benchmark, ScorerOptions()) for benchmark in benchmarks]
    experiments = leave_one_benchmark_out(
        benchmarks, outcomes, table, seed=args.seed, alpha=args.alpha, rules=rules, folds=args.folds
    )
    for experiment in experiments:
        test = next(b for b in benchmarks if b.name == experiment.benchmark)
        note = f"leave-one-benchmark-out: {args.folds} fold models and their stack on all of " + " + ".join(
            experiment.trained_on
        )
        results.append(
            ScorerResult(test.name, "learned", experiment.metrics, test.size, test.contaminated_removed, note)
        )
    total_s = time.perf_counter() - started
    print(format_table(results))
    size_mb = args.out.stat().st_size / 1e6
    timing = f"features {featurized_s:.1f} s, {args.folds} fold fits {trained_s:.1f} s, whole command {total_s:.1f} s"
    print(f"wrote {args.out} ({size_mb:.1f} MB); {timing}")
    if not args.no_record:
        command = f"{prog} {shlex.join(args_list)}".rstrip()
        stack = model.meta["stack"]
        notes = [
            f"Artifact: {args.folds} fold models on {' + '.join(TRAINED_BENCHMARKS)}, folds by blake2b of (fold seed "
            f"{args.seed}, prompt); the first {len(BENCHMARK_NAMES)} rows score each prompt with the fold model that "
            f"never saw it (MT-Bench: the served mean model, never trained on MT-Bench). Label: {model.meta['label']}. "
            f"Stack (fitted on the out-of-fold logits of the training prompts): logit = {stack['bias']:.3f} + "
            f"{stack['learned']:.3f} x learned + {stack['rules']:.3f} x default rules' score "
            f"(weights of {default_rules_path().name} frozen in the artifact). "
            f"Timing ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}): {timing}; {size_mb:.1f} MB."
        ]
        append_entry(args.record, markdown_entry("Router quality (issue 5): train-router", command, results, notes))
        print(f"recorded in {args.record}")
    return 0
