"""How token reduction trades against gold-function recall, across compressor settings, on BFCL.

Prints one row per setting: live_multiple's reduction (o200k and the local model's tokenizer) and gold recall, and
the single-function categories' reduction (compaction alone: with one tool nothing is selected away). An "oracle"
row keeps exactly the gold functions (the best any selection could do) to show what the settings leave on the table.
"best tool X/Y, others A/B": rank-aware budgets (`full_description_tools`, `other_*`): the best-ranked kept tool's
function/parameter descriptions are cut to X/Y characters, the other kept tools' to A/B.

    .venv/bin/python bench/compression.py [--data ../shared/data/bfcl] [--no-local] [--append BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from prompt_compression.bfcl import BfclCase, load_category
from prompt_compression.evaluation import (
    DEFAULT_CACHE_DIR,
    CategoryReport,
    TextCounter,
    evaluate_category,
    local_text_counter,
    run_context,
)
from prompt_compression.schema import content_key
from prompt_compression.selection import ToolSelector
from prompt_compression.settings import CompressionSettings

SINGLE = ("simple_python", "live_simple", "parallel", "live_parallel")
_FLAT = {"full_description_tools": 10_000}
"""Every kept tool gets the same budgets (no rank-aware budgets)."""
SETTINGS: list[tuple[str, CompressionSettings]] = [
    (
        "compaction only, 120/60 chars",
        CompressionSettings(
            description_chars=120, parameter_description_chars=60, relative_score_cutoff=0, max_tools=10_000, **_FLAT
        ),
    ),
    ("100/50 chars for every kept tool, cutoff 0.3, max 8", CompressionSettings(**_FLAT)),
    ("defaults: best tool 100/50, others 40/0", CompressionSettings()),
    ("best tool 100/50, others 0/0", CompressionSettings(other_description_chars=0)),
    (
        "best tool 100/50, others 60/20",
        CompressionSettings(other_description_chars=60, other_parameter_description_chars=20),
    ),
    (
        "best tool 60/30, others 0/0",
        CompressionSettings(description_chars=60, parameter_description_chars=30, other_description_chars=0),
    ),
    (
        "best tool 30/0, others 0/0",
        CompressionSettings(description_chars=30, parameter_description_chars=0, other_description_chars=0),
    ),
    (
        "0/0 chars (no descriptions), cutoff 0.3",
        CompressionSettings(description_chars=0, parameter_description_chars=0, other_description_chars=0),
    ),
    (
        "0/0 chars, max 3 tools",
        CompressionSettings(description_chars=0, parameter_description_chars=0, other_description_chars=0, max_tools=3),
    ),
]


def _gold_only(cases: Sequence[BfclCase]) -> list[BfclCase]:
    out = []
    for case in cases:
        gold = case.gold or frozenset()
        tools = [t for t in case.request.tools if t.name in gold]
        out.append(dataclasses.replace(case, request=dataclasses.replace(case.request, tools=tools)))
    return out


def _merge(reports: Sequence[CategoryReport]) -> CategoryReport:
    total = CategoryReport("single-function")
    for r in reports:
        total.tiktoken_before += r.tiktoken_before
        total.tiktoken_after += r.tiktoken_after
        total.local_before += r.local_before
        total.local_after += r.local_after
    return total


def gold_rank_recall(cases: Sequence[BfclCase], depths: Sequence[int] = (1, 2, 3)) -> list[float]:
    """Share of gold functions the BM25 ranker puts within the top 1, 2, 3 (what any cutoff can build on)."""
    selector = ToolSelector(max_indexes=0, max_sessions=0)
    ranks: list[int] = []
    for case in cases:
        tools = case.request.tools
        ranking = selector.rank(case.request, ToolSelector.tool_set_key([content_key(t) for t in tools]))
        names = [tools[i].name for i in ranking.order]
        ranks.extend(names.index(g) for g in case.gold or ())
    return [100 * sum(r < d for r in ranks) / max(len(ranks), 1) for d in depths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/bfcl"))
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--append", type=Path)
    args = parser.parse_args(argv)
    local: TextCounter | None = None if args.no_local else local_text_counter(DEFAULT_CACHE_DIR)
    multiple = load_category(args.data, "live_multiple")
    single = {c: load_category(args.data, c) for c in SINGLE}
    rows = [
        "| settings | live_multiple o200k cut | live_multiple local cut | gold recall | tools kept "
        "| single-function o200k cut | single-function local cut |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, settings in SETTINGS:
        m = evaluate_category(multiple, settings, local, 1)
        s = _merge([evaluate_category(cases, settings, local, 1) for cases in single.values()])
        rows.append(
            f"| {label} | {m.tiktoken_reduction:.1f}% | {m.local_reduction:.1f}% | {m.recall or 0:.1f}% "
            f"| {m.tools_after}/{m.tools_before} | {s.tiktoken_reduction:.1f}% | {s.local_reduction:.1f}% |"
        )
        print(rows[-1], flush=True)
    # Oracle: the request reduced to its gold functions before compaction; its before-count is the full request's.
    settings = CompressionSettings(relative_score_cutoff=0, max_tools=10_000, **_FLAT)
    oracle = evaluate_category(_gold_only(multiple), settings, local, 1)
    full = evaluate_category(multiple, CompressionSettings(enabled=False), local, 1)
    o200k = 100 * (1 - oracle.tiktoken_after / full.tiktoken_before)
    local_cut = 100 * (1 - oracle.local_after / full.local_before) if full.local_before else 0.0
    rows.append(
        f"| oracle selection (gold only), 100/50 chars | {o200k:.1f}% | {local_cut:.1f}% | 100.0% "
        f"| {oracle.tools_after}/{full.tools_before} | | |"
    )
    print(rows[-1])
    top = gold_rank_recall(multiple)
    rows.append(
        f"\nlive_multiple, gold function within the ranker's top 1 / 2 / 3: {top[0]:.1f}% / {top[1]:.1f}% / "
        f"{top[2]:.1f}%. Single-function columns: simple_python, live_simple, parallel, live_parallel together."
    )
    table = "\n".join(rows)
    print("\n" + table)
    if args.append is not None:
        command = ".venv/bin/python bench/compression.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        with args.append.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## Prompt compression (issue 6): settings vs gold recall, {run_context()}\n\n"
                f"Command: `{command}`\n\n{table}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
