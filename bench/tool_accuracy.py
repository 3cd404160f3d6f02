"""Does dropping tool descriptions cost the local model tool-call accuracy? Measured on a seeded BFCL sample.

For a fixed, seeded sample of BFCL questions (default 25 from simple_python and 25 from live_multiple) the real
gateway (`python -m gateway serve`, embedded Gemma 3 270M, one llama.cpp thread) is asked for a tool call with the
official openai client (`tool_choice="required"`, temperature 0, small max_tokens), once per compression setting of
the local tier. One gateway runs per setting, all started up front; each question goes to every gateway in turn
(rotated order), one request at a time, so the settings share the machine's load as evenly as possible.

Scored per setting and category:
- name: the called function is one of the ground truth's functions (BFCL's possible_answer);
- args: additionally, the call was complete and its argument names are those of the ground truth's call of that
  function (every argument the ground truth requires present, none it does not know);
- gold kept: the compressor (same settings, in process, no token budget) kept a gold function, so the model could call
  it at all (the grammar allows only the tools sent);
- cut: calls cut short by max_tokens (the name is then read from the partial `{"name": ...` text);
- prompt tokens (`usage.prompt_tokens`, what the model read) and mean latency per request.
The p column is a two-sided exact sign test on the questions where the setting and "off" disagree on the name score.

BFCL function names contain dots (`math.factorial`), which the OpenAI wire format forbids: they are sent with `_`
for `.` (as BFCL does for OpenAI models) and mapped back for scoring.
max_tokens defaults to 96, not less: the gateway's tool-call grammar makes the model write `arguments` before `name`
(keys sorted), so a call cut short loses its name.

    .venv/bin/python bench/tool_accuracy.py [--per-category 25] [--seed 6] [--max-tokens 96] [--append BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import openai  # noqa: E402

from prompt_compression.bfcl import BfclCase, load_category  # noqa: E402
from prompt_compression.compressor import Compressor  # noqa: E402
from prompt_compression.settings import CompressionSettings  # noqa: E402
from router.chat import ChatRequest, Tool  # noqa: E402
from tests.support.gateway_server import GatewayProcess  # noqa: E402

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("off", {"enabled": False}),
    ("defaults (best 100/50, others 40/0)", {}),
    (
        "best 30/0, others 0/0",
        {"description_chars": 30, "parameter_description_chars": 0, "other_description_chars": 0},
    ),
    ("no descriptions (0/0)", {"description_chars": 0, "parameter_description_chars": 0, "other_description_chars": 0}),
]
_PREFIX = "BFCL_v4_"
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"]*)"')


@dataclass(frozen=True, slots=True)
class Question:
    case: BfclCase
    request: ChatRequest
    """The request as sent: tool names with `_` for `.`."""
    to_bfcl: dict[str, str]
    """Sent name -> BFCL name."""
    gold_calls: tuple[tuple[str, dict[str, list[Any]]], ...]
    """Ground truth: (function, {argument: allowed values}) per expected call."""


@dataclass(slots=True)
class Outcome:
    name: str | None
    name_ok: bool
    args_ok: bool
    gold_kept: bool
    cut: bool
    prompt_tokens: int
    latency_s: float
    error: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Row:
    outcomes: list[Outcome] = field(default_factory=list)


def _wire_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]


def _lines(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_sample(data: Path, category: str, n: int, seed: int) -> list[Question]:
    cases = [c for c in load_category(data, category) if c.gold]
    truth = {row["id"]: row["ground_truth"] for row in _lines(data / "possible_answer" / f"{_PREFIX}{category}.json")}
    rng = random.Random(f"{seed}:{category}")
    picked = sorted(rng.sample(range(len(cases)), min(n, len(cases))))
    out: list[Question] = []
    for i in picked:
        case = cases[i]
        to_bfcl = {_wire_name(t.name): t.name for t in case.request.tools}
        if len(to_bfcl) != len(case.request.tools):
            raise ValueError(f"{case.id}: tool names collide once dots are replaced")
        tools = [dataclasses.replace(t, name=_wire_name(t.name)) for t in case.request.tools]
        request = dataclasses.replace(case.request, tools=tools)
        gold_calls = tuple((fn, dict(args)) for call in truth[case.id] for fn, args in call.items())
        out.append(Question(case, request, to_bfcl, gold_calls))
    return out


def openai_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


def openai_messages(request: ChatRequest) -> list[dict[str, Any]]:
    return [{"role": m.role, "content": m.content or ""} for m in request.messages]


def gold_kept(compressor: Compressor, q: Question) -> bool:
    kept = {q.to_bfcl[t.name] for t in compressor.compress(q.request).request.tools}
    return any(fn in kept for fn, _ in q.gold_calls)


def args_match(q: Question, name: str, arguments: Mapping[str, Any]) -> bool:
    for fn, allowed in q.gold_calls:
        if fn != name:
            continue
        required = {a for a, values in allowed.items() if "" not in values}
        if required <= set(arguments) <= set(allowed):
            return True
    return False


def ask(client: openai.OpenAI, q: Question, max_tokens: int, kept: bool) -> Outcome:
    gold_names = {fn for fn, _ in q.gold_calls}
    start = time.perf_counter()
    try:
        r = client.chat.completions.create(  # type: ignore[call-overload]
            model="local",
            messages=openai_messages(q.request),
            tools=openai_tools(q.request.tools),
            tool_choice="required",
            temperature=0,
            seed=0,
            max_tokens=max_tokens,
        )
    except openai.APIError as exc:
        return Outcome(None, False, False, kept, False, 0, time.perf_counter() - start, type(exc).__name__)
    latency = time.perf_counter() - start
    msg = r.choices[0].message
    tokens = r.usage.prompt_tokens if r.usage is not None else 0
    if msg.tool_calls:
        call = msg.tool_calls[0]
        fn = getattr(call, "function", None)
        wire = fn.name if fn is not None else ""
        name = q.to_bfcl.get(wire, wire)
        try:
            arguments = json.loads(fn.arguments) if fn is not None else {}
        except json.JSONDecodeError:
            arguments = None
        ok_args = isinstance(arguments, dict) and args_match(q, name, arguments)
        text = fn.arguments if fn is not None else ""
        return Outcome(name, name in gold_names, ok_args, kept, False, tokens, latency, None, text)
    m = _NAME_RE.search(msg.content or "")
    name = q.to_bfcl.get(m.group(1), m.group(1)) if m else None
    return Outcome(name, name in gold_names, False, kept, True, tokens, latency, None, msg.content or "")


def sign_test(b: int, c: int) -> float:
    """Two-sided exact binomial test of b vs c discordant pairs (p = 0.5)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    p = 2 * sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)
    return min(1.0, p)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks: int = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def table(
    categories: Sequence[str], results: Mapping[tuple[str, str], list[Outcome]], per_question: bool = False
) -> list[str]:
    lines = [
        "| category | setting | n | name acc | args acc | gold kept | cut | p vs off | prompt tokens (mean) "
        "| cut vs off | mean latency s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cat in categories:
        base = results[(cat, SETTINGS[0][0])]
        base_tokens = statistics.fmean(o.prompt_tokens for o in base)
        for label, _ in SETTINGS:
            outs = results[(cat, label)]
            n = len(outs)
            b = sum(1 for o, x in zip(outs, base, strict=True) if o.name_ok and not x.name_ok)
            c = sum(1 for o, x in zip(outs, base, strict=True) if x.name_ok and not o.name_ok)
            tokens = statistics.fmean(o.prompt_tokens for o in outs)
            errors = sum(1 for o in outs if o.error)
            lines.append(
                f"| {cat} | {label}{f' ({errors} errors)' if errors else ''} | {n} "
                f"| {sum(o.name_ok for o in outs)}/{n} | {sum(o.args_ok for o in outs)}/{n} "
                f"| {sum(o.gold_kept for o in outs)}/{n} | {sum(o.cut for o in outs)} "
                f"| {'' if label == SETTINGS[0][0] else f'{sign_test(b, c):.2f} (+{b}/-{c})'} "
                f"| {tokens:.0f} | {'' if label == SETTINGS[0][0] else f'{1 - tokens / base_tokens:.1%}'} "
                f"| {statistics.fmean(o.latency_s for o in outs):.2f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bfcl")
    parser.add_argument("--categories", nargs="+", default=["simple_python", "live_multiple"])
    parser.add_argument("--per-category", type=int, default=25)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--context-tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--append", type=Path)
    args = parser.parse_args(argv)

    questions = {cat: load_sample(args.data, cat, args.per_category, args.seed) for cat in args.categories}
    compressors = {
        label: Compressor(CompressionSettings(**cfg), lambda r: sum(len(t.description) for t in r.tools))
        for label, cfg in SETTINGS
    }
    model = {
        "name": "gemma3-270m",
        "context_tokens": args.context_tokens,
        "max_queue": 1,
        "default_max_tokens": args.max_tokens,
        "threads": args.threads,
    }
    load_before = os.getloadavg()
    wall_start = time.monotonic()
    results: dict[tuple[str, str], list[Outcome]] = {(c, label): [] for c in args.categories for label, _ in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="tool-accuracy-") as tmp:
        gateways: dict[str, GatewayProcess] = {}
        try:
            for i, (label, cfg) in enumerate(SETTINGS):
                workdir = Path(tmp) / f"g{i}"
                workdir.mkdir()
                config = {"local_models": [model], "compression": {"local": cfg}, "request_log": False}
                gateways[label] = GatewayProcess(config, workdir).start()
            clients = {
                label: openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0, timeout=args.timeout_s)
                for label, g in gateways.items()
            }
            cpu_start = sum(_cpu_s(g.proc.pid) for g in gateways.values() if g.proc is not None)
            step = 0
            for cat in args.categories:
                for qi, q in enumerate(questions[cat]):
                    for k in range(len(SETTINGS)):
                        label = SETTINGS[(qi + k) % len(SETTINGS)][0]
                        kept = gold_kept(compressors[label], q)
                        outcome = ask(clients[label], q, args.max_tokens, kept)
                        results[(cat, label)].append(outcome)
                        step += 1
                        print(
                            f"[{step}] {cat} {q.case.id} {label}: {outcome.name} ok={outcome.name_ok} "
                            f"args={outcome.args_ok} cut={outcome.cut} tokens={outcome.prompt_tokens} "
                            f"{outcome.latency_s:.1f}s{' ' + outcome.error if outcome.error else ''} "
                            f"{outcome.arguments[:160]}",
                            flush=True,
                        )
            cpu_s = sum(_cpu_s(g.proc.pid) for g in gateways.values() if g.proc is not None) - cpu_start
        finally:
            for g in gateways.values():
                g.stop()
    # Each setting got one outcome per question, in question order (the rotation only changes who goes first).
    for cat in args.categories:
        for label, _ in SETTINGS:
            assert len(results[(cat, label)]) == len(questions[cat])
    wall_s = time.monotonic() - wall_start
    load_after = os.getloadavg()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = ".venv/bin/python bench/tool_accuracy.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    sample = ", ".join(f"{len(questions[c])} from {c}" for c in args.categories)
    lines = [
        f"## Prompt compression (issue 6): tool-call accuracy of the local model per setting, {when}",
        "",
        f"Command: `{command.strip()}`  ",
        f"Sample: {sample} (seeded with {args.seed}; questions with ground truth only), each sent once per setting "
        f'through the real gateway with the openai client: `tool_choice="required"`, temperature 0, max_tokens '
        f"{args.max_tokens}. Embedded Gemma 3 270M Q4_K_M, n_ctx {args.context_tokens}, {args.threads} llama.cpp "
        f"thread, one gateway per setting, one request at a time. Machine: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in load_before)} before, {', '.join(f'{x:.1f}' for x in load_after)} after; "
        f"{wall_s / 60:.1f} min wall, {cpu_s / 60:.1f} min CPU in the gateways.",
        "",
        *table(args.categories, results),
        "",
        "name acc: the called function is a ground-truth function; args acc: also complete, with the ground truth's "
        "argument names; gold kept: the compressor kept a ground-truth function (the grammar allows only the tools "
        "sent); cut: calls cut short by max_tokens (name read from the partial text); p vs off: two-sided exact sign "
        "test on the questions where this setting and off disagree on the name (+ right only here / - right only "
        "with off); prompt tokens: `usage.prompt_tokens`, the local model's tokens as read.",
        "",
    ]
    print("\n".join(lines))
    if args.append is not None:
        with args.append.open("a", encoding="utf-8") as out:
            out.write("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
