"""`tiergate eval-compression`: how much the compressor saves on BFCL, and what it must not break.

Per BFCL category: prompt tokens before and after (tiktoken o200k_base, and the local model's own tokenizer),
recall of the gold functions through tool selection, the structural check on every surviving tool, that no request
gains a tool (irrelevance questions above all), and compression time per request (p50/p99 wall clock, p99 CPU,
token counting excluded, once the schemas are cached).

o200k counts what a frontier model bills: OpenAI renders tools itself, so only compaction and selection count.
The local count renders the prompt in Gemma's turn format with the tools in a `<tools>` block of the system turn.
"Before" writes the client's tools as a tool-aware chat template does (`render.template_tools`); "after" writes the
compressed tools as the local tier does (`render.render_tools`, minified). The last local column renders both sides
the template's way, which isolates compaction and selection from the rendering. Counts use the embedded GGUF's
vocabulary; `evaluate` takes any other text counter.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prompt_compression.bfcl import BfclCase, categories, load_category
from prompt_compression.compressor import Compressor
from prompt_compression.render import render_tools, template_tools
from prompt_compression.settings import CompressionSettings
from prompt_compression.structure import structural_differences
from prompt_compression.tokens import FrontierTokenCounter, TokenCounter
from router.chat import ChatRequest, Tool

DEFAULT_CACHE_DIR = Path("~/.cache/tiergate").expanduser()

TextCounter = Callable[[str], int]
"""Tokens of a rendered prompt in one model's tokenizer."""


def render_for_local_model(request: ChatRequest, tool_block: Callable[[Sequence[Tool]], str] = template_tools) -> str:
    """The prompt a tool-aware chat template builds for `request`, in Gemma's turn format, tools by `tool_block`."""
    system = [m.content or "" for m in request.messages if m.role in ("system", "developer")]
    if request.tools:
        system.append(
            "You may call one or more functions. Function signatures, in <tools></tools>:\n<tools>\n"
            + tool_block(request.tools)
            + '\n</tools>\nAnswer a call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
        )
    parts = ["<bos>"]
    pending_system = bool(system)
    for message in request.messages:
        if message.role in ("system", "developer"):
            continue
        role = "model" if message.role == "assistant" else "user"
        text = message.content or ""
        for call in message.tool_calls:
            text += f'\n<tool_call>{{"name": "{call.name}", "arguments": {call.arguments}}}</tool_call>'
        if message.role == "tool":
            text = f"<tool_response>\n{text}\n</tool_response>"
        if role == "user" and pending_system:
            text = "\n\n".join(system) + "\n\n" + text
            pending_system = False
        parts.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return "".join(parts)


def local_text_counter(cache_dir: Path) -> TextCounter:
    """Counts with the embedded model's tokenizer (vocabulary only: loads in a fraction of a second)."""
    import llama_cpp

    from local_models.embedded import ensure_embedded_model

    model = llama_cpp.Llama(model_path=str(ensure_embedded_model(cache_dir)), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(model.tokenize(text.encode(), add_bos=False, special=True))

    return count


class _TimedCounter:
    """Wraps a counter and adds up the time spent in it, so compression time can exclude the tokenizer."""

    def __init__(self, count: TokenCounter) -> None:
        self._count = count
        self.wall_ns = 0
        self.cpu_ns = 0

    def __call__(self, request: ChatRequest) -> int:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        try:
            return self._count(request)
        finally:
            self.wall_ns += time.perf_counter_ns() - wall
            self.cpu_ns += time.thread_time_ns() - cpu


@dataclass
class CategoryReport:
    category: str
    requests: int = 0
    tiktoken_before: int = 0
    tiktoken_after: int = 0
    local_before: int = 0
    local_after: int = 0
    local_after_template: int = 0
    gold_total: int = 0
    gold_kept: int = 0
    tools_before: int = 0
    tools_after: int = 0
    tools_checked: int = 0
    tools_broken: int = 0
    structure_broken: list[str] = field(default_factory=list)
    gained_tools: int = 0
    wall_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    @staticmethod
    def _reduction(before: int, after: int) -> float:
        return 100.0 * (1 - after / before) if before else 0.0

    @property
    def tiktoken_reduction(self) -> float:
        return self._reduction(self.tiktoken_before, self.tiktoken_after)

    @property
    def local_reduction(self) -> float:
        return self._reduction(self.local_before, self.local_after)

    @property
    def local_template_reduction(self) -> float:
        return self._reduction(self.local_before, self.local_after_template)

    @property
    def recall(self) -> float | None:
        return 100.0 * self.gold_kept / self.gold_total if self.gold_total else None


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def evaluate_category(
    cases: Sequence[BfclCase], settings: CompressionSettings, local_count: TextCounter | None, repeats: int
) -> CategoryReport:
    """Compress every case; time all passes after the first (which fills the caches)."""
    counter = _TimedCounter(FrontierTokenCounter("o200k_base"))
    compressor = Compressor(settings, counter)
    report = CategoryReport(cases[0].category if cases else "")
    for case in cases:
        result = compressor.compress(case.request, None, None)
        for _ in range(repeats - 1):
            counter.wall_ns = counter.cpu_ns = 0
            wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
            result = compressor.compress(case.request, None, None)
            report.wall_us.append((time.perf_counter_ns() - wall - counter.wall_ns) / 1000)
            report.cpu_us.append((time.thread_time_ns() - cpu - counter.cpu_ns) / 1000)
        report.requests += 1
        report.tiktoken_before += result.tokens_before
        report.tiktoken_after += result.tokens_after
        if local_count is not None:
            report.local_before += local_count(render_for_local_model(case.request, template_tools))
            report.local_after += local_count(render_for_local_model(result.request, render_tools))
            report.local_after_template += local_count(render_for_local_model(result.request, template_tools))
        kept = {t.name for t in result.request.tools}
        offered = {t.name for t in case.request.tools}
        report.tools_before += len(offered)
        report.tools_after += len(kept)
        report.gained_tools += len(kept - offered)
        if case.gold is not None:
            report.gold_total += len(case.gold)
            report.gold_kept += len(case.gold & kept)
        originals = {f.name: f for f in case.functions}
        for tool in result.request.tools:
            problems = structural_differences(originals[tool.name], tool)
            report.tools_checked += 1
            report.tools_broken += bool(problems)
            report.structure_broken.extend(f"{case.id}: {p}" for p in problems)
    return report


def evaluate(
    data_dir: Path,
    settings: CompressionSettings,
    local_count: TextCounter | None,
    only: Sequence[str] = (),
    repeats: int = 2,
) -> list[CategoryReport]:
    return [
        evaluate_category(load_category(data_dir, category), settings, local_count, repeats)
        for category in categories(data_dir)
        if not only or category in only
    ]


def format_table(reports: Sequence[CategoryReport], with_local: bool) -> str:
    head = "| category | requests | tools kept | gold recall | structure intact | tools gained | o200k tokens "
    head += "| o200k cut |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if with_local:
        head += " local tokens | local cut | local cut, template rendering |"
        rule += "---:|---:|---:|"
    head += " p50 us | p99 us | p99 us CPU |"
    rule += "---:|---:|---:|"
    rows = [head, rule]
    for r in reports:
        recall = f"{r.recall:.1f}%" if r.recall is not None else "n/a"
        row = (
            f"| {r.category} | {r.requests} | {r.tools_after}/{r.tools_before} | {recall} "
            f"| {r.tools_checked - r.tools_broken}/{r.tools_checked} | {r.gained_tools} "
            f"| {r.tiktoken_before} -> {r.tiktoken_after} | {r.tiktoken_reduction:.1f}% |"
        )
        if with_local:
            row += (
                f" {r.local_before} -> {r.local_after} | {r.local_reduction:.1f}% | {r.local_template_reduction:.1f}% |"
            )
        row += (
            f" {_percentile(r.wall_us, 50):.0f} | {_percentile(r.wall_us, 99):.0f} | {_percentile(r.cpu_us, 99):.0f} |"
        )
        rows.append(row)
    wall = [t for r in reports for t in r.wall_us]
    cpu = [t for r in reports for t in r.cpu_us]
    rows.append(
        f"\nAll {sum(r.requests for r in reports)} requests, schemas cached, token counting excluded: wall p50 "
        f"{_percentile(wall, 50):.0f} us, p99 {_percentile(wall, 99):.0f} us; CPU p50 {_percentile(cpu, 50):.0f} us, "
        f"p99 {_percentile(cpu, 99):.0f} us. Structural changes: {sum(len(r.structure_broken) for r in reports)}. "
        f"Tools gained: {sum(r.gained_tools for r in reports)}."
    )
    return "\n".join(rows)


def run_context() -> str:
    """When and where figures were taken: these machines are shared, so the load matters."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{when} ({platform.machine()}, {os.cpu_count()} CPUs, load average {load}, Python {platform.python_version()})"
    )


def _settings_from(args: argparse.Namespace) -> CompressionSettings:
    return CompressionSettings(
        max_tools=args.max_tools,
        min_tools=args.min_tools,
        relative_score_cutoff=args.relative_score_cutoff,
        description_chars=args.description_chars,
        parameter_description_chars=args.parameter_description_chars,
        full_description_tools=args.full_description_tools,
        other_description_chars=args.other_description_chars,
        other_parameter_description_chars=args.other_parameter_description_chars,
    )


def main(argv: list[str] | None = None) -> int:
    defaults = CompressionSettings()
    parser = argparse.ArgumentParser(prog="tiergate eval-compression", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/bfcl"), help="BFCL data directory.")
    parser.add_argument("--category", action="append", default=[], help="Only this category (repeatable).")
    parser.add_argument("--max-tools", type=int, default=defaults.max_tools)
    parser.add_argument("--min-tools", type=int, default=defaults.min_tools)
    parser.add_argument("--relative-score-cutoff", type=float, default=defaults.relative_score_cutoff)
    parser.add_argument("--description-chars", type=int, default=defaults.description_chars)
    parser.add_argument("--parameter-description-chars", type=int, default=defaults.parameter_description_chars)
    parser.add_argument("--full-description-tools", type=int, default=defaults.full_description_tools)
    parser.add_argument("--other-description-chars", type=int, default=defaults.other_description_chars)
    parser.add_argument(
        "--other-parameter-description-chars", type=int, default=defaults.other_parameter_description_chars
    )
    parser.add_argument("--no-local", action="store_true", help="Skip counting with the local model's tokenizer.")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="Where the embedded model lives.")
    parser.add_argument("--repeats", type=int, default=3, help="Passes per request; all but the first are timed.")
    parser.add_argument("--append", type=Path, help="Append the table and the command to this Markdown file.")
    parser.add_argument("--show-broken", type=int, default=10, help="Structural changes to print (at most).")
    args = parser.parse_args(argv)
    if not (args.data / "possible_answer").is_dir():
        parser.error(f"{args.data} does not look like the BFCL data directory (no possible_answer/)")
    settings = _settings_from(args)
    local = None if args.no_local else local_text_counter(args.cache_dir)
    reports = evaluate(args.data, settings, local, args.category, max(args.repeats, 2))
    table = format_table(reports, local is not None)
    print(table)
    broken = [p for r in reports for p in r.structure_broken]
    for problem in broken[: args.show_broken]:
        print("structure changed:", problem, file=sys.stderr)
    if args.append is not None:
        through_cli = Path(sys.argv[0]).name == "tiergate"
        program = "tiergate eval-compression" if through_cli else ".venv/bin/python -m prompt_compression.evaluation"
        command = f"{program} {shlex.join(argv if argv is not None else sys.argv[1:])}"
        settings_text = ", ".join(f"{k}={v}" for k, v in settings.model_dump().items())
        with args.append.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## Prompt compression (issue 6): eval-compression on BFCL, {run_context()}\n\n"
                f"Command: `{command}`  \nSettings: {settings_text}\n\n{table}\n"
            )
    return 1 if broken or any(r.gained_tools for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
