"""Time of one routing decision: signal extraction + score + rules, per request size, with and without 30 tools.

    .venv/bin/python bench/router_decision.py [--no-record]

Requests are agent-shaped: a system prompt (a tenth of the tokens), a user task, then assistant tool calls and tool
results, written from GSM8K answers in ../shared/data/routellm; the 30 tools are BFCL live_multiple definitions.
Columns: p50/p99 microseconds of `extract_signals` + `RuleSet.decide` with escalation_rules/default.yaml, as
wall-clock time and as this thread's CPU time (which a busy machine does not inflate by making the process wait);
the CPU time with a content privacy pin added (two regexes over every message's text); for comparison, the CPU time
of one exact tiktoken count (cl100k_base) of the same text; and the ratio of our token estimate to that count.
Appends the table with the command and the load average to BENCHMARKS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.chat import ChatRequest, Message, Tool, ToolCall  # noqa: E402
from router.rules import RuleSet, default_rules_path, load_rules, parse_rules  # noqa: E402
from router.signals import SignalContext, estimate_tokens, extract_signals  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SIZES = (100, 1_000, 4_000, 16_000)
PII_RULE = """
  - name: pii-stays-local
    when:
      any:
        - text: {matches: '\\b\\d{3}-\\d{2}-\\d{4}\\b'}
        - text: {matches: '\\b(?:\\d[ -]?){13,16}\\b'}
    action: local
    fallback: false
    enforce: true
"""


def _tiktoken() -> Any:
    """cl100k_base from the copy in litellm's wheel (tiktoken would download it otherwise)."""
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.submodule_search_locations and not os.environ.get("TIKTOKEN_CACHE_DIR"):
        bundled = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def _texts() -> list[str]:
    with (DATA / "routellm" / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [row["gpt-4-1106-preview_response"] for row in rows[:400]]


def _tools(count: int) -> list[Tool]:
    tools: dict[str, Tool] = {}
    with (DATA / "bfcl" / "BFCL_v4_live_multiple.json").open(encoding="utf-8") as f:
        for line in f:
            for fn in json.loads(line)["function"]:
                tools.setdefault(fn["name"], Tool(fn["name"], fn.get("description", ""), fn["parameters"]))
                if len(tools) == count:
                    return list(tools.values())
    return list(tools.values())


def _take(texts: list[str], start: int, tokens: int, enc: Any) -> tuple[str, int]:
    """Text of about `tokens` tokens from `texts` from index `start` on, and the next index."""
    parts: list[str] = []
    have = 0
    i = start
    while have < tokens:
        piece = texts[i % len(texts)]
        need = tokens - have
        ids = enc.encode(piece)
        if len(ids) > need:
            piece = enc.decode(ids[:need])
        parts.append(piece)
        have += min(len(ids), need)
        i += 1
    return "\n".join(parts), i


def build_request(tokens: int, tools: list[Tool], enc: Any) -> ChatRequest:
    texts = _texts()
    system, i = _take(texts, 0, max(10, tokens // 10), enc)
    task, i = _take(texts, i, max(20, tokens // 5), enc)
    messages = [Message("system", system), Message("user", task + "\nWhat is the answer? Show your work.")]
    left = tokens - tokens // 10 - tokens // 5
    step = 0
    while left > 0:
        chunk = min(500, left)
        result, i = _take(texts, i, chunk, enc)
        call = ToolCall(f"call_{step}", "calculator", json.dumps({"expression": f"{step} * 17 + 3"}))
        messages += [Message("assistant", None, tool_calls=(call,)), Message("tool", result, tool_call_id=call.id)]
        left -= chunk
        step += 1
    return ChatRequest(request_id="bench", model="auto", messages=messages, tools=tools)


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 / 1000, p99 / 1000


def time_decision(request: ChatRequest, rules: RuleSet, runs: int) -> tuple[float, float, float, float]:
    """p50 and p99 of wall-clock time, then p50 and p99 of this thread's CPU time, in microseconds."""
    context = SignalContext(local_context_tokens=32_768)
    for _ in range(20):
        rules.decide(extract_signals(request, context), request)
    gc.collect()
    wall = []
    cpu = []
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    for _ in range(runs):
        c0 = cpu_clock()
        t0 = clock()
        rules.decide(extract_signals(request, context), request)
        wall.append(clock() - t0)
        cpu.append(cpu_clock() - c0)
    return (*_percentiles(wall), *_percentiles(cpu))


def time_tiktoken(request: ChatRequest, enc: Any, runs: int) -> tuple[float, int]:
    """CPU p50 of one exact count of the messages' text, and the count."""
    text = "\n".join(m.content or "" for m in request.messages)
    exact = len(enc.encode(text))
    samples = []
    for _ in range(runs):
        t0 = time.thread_time_ns()
        enc.encode(text)
        samples.append(time.thread_time_ns() - t0)
    return _percentiles(samples)[0], exact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-record", action="store_true", help="Print only; do not append to BENCHMARKS.md.")
    parser.add_argument("--runs", type=int, default=2000, help="Timed decisions per row (a quarter at 16k).")
    args = parser.parse_args(argv)
    enc = _tiktoken()
    rules = load_rules(default_rules_path())
    text = default_rules_path().read_text(encoding="utf-8").replace("\nrules:\n", "\nrules:\n" + PII_RULE, 1)
    pinned = parse_rules(text, source="default.yaml + pii-stays-local")
    thirty = _tools(30)
    header = (
        "| prompt tokens | tools | p50 µs | p99 µs | CPU p50 µs | CPU p99 µs | + PII regex CPU p50 µs "
        "| + PII regex CPU p99 µs | tiktoken count CPU p50 µs | estimate / exact |"
    )
    lines = [header, "|" + "---|" * 10]
    print(header)
    for size in SIZES:
        runs = args.runs if size < 16_000 else max(50, args.runs // 4)
        for tools in ([], thirty):
            request = build_request(size, tools, enc)
            p50, p99, cpu50, cpu99 = time_decision(request, rules, runs)
            _, _, pii50, pii99 = time_decision(request, pinned, runs)
            tk50, exact = time_tiktoken(request, enc, max(20, runs // 10))
            estimate = sum(estimate_tokens(m.content or "") for m in request.messages)
            row = (
                f"| {size:,} | {len(tools)} | {p50:.0f} | {p99:.0f} | {cpu50:.0f} | {cpu99:.0f} | {pii50:.0f} "
                f"| {pii99:.0f} | {tk50:.0f} | {estimate / exact:.2f} |"
            )
            lines.append(row)
            print(row, flush=True)
    if not args.no_record:
        _record(lines, argv)
    return 0


def _record(lines: list[str], argv: list[str] | None) -> None:
    command = ".venv/bin/python bench/router_decision.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}, Python {platform.python_version()}"
    block = [
        "",
        f"## Router decision: signals + score + rules ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}` ({machine}). Rules: escalation_rules/default.yaml; target p99 < 1,000 µs at 4k tokens.",
        "CPU columns are this thread's CPU time; on a busy machine the wall-clock p99 also holds the time the process "
        "waited to be scheduled.",
        "",
        *lines,
        "",
    ]
    with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as f:
        f.write("\n".join(block))


if __name__ == "__main__":
    raise SystemExit(main())
