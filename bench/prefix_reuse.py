"""Step latency of two interleaved agent sessions on ~4k-token prompts, with the per-session KV prefix cache on vs off.

    .venv/bin/python bench/prefix_reuse.py [--steps 4] [--prefix-tokens 3600] [--max-tokens 16] [--no-write]

Each session's prompt is planner-like: a long stable head (task, tool descriptions) and a tail that grows by one
step each turn (the model's previous answer, then that step's tool result). Sessions A and B alternate, so each
step of A follows a step of B: llama-cpp-python's own prefix reuse (within one context) keeps nothing of A, and
only the cache can spare A's head. Both modes run the same requests through `LocalBackend` (the gateway's local
path, streaming), greedy, one after another; time to first token and step latency are measured per request.
Also measured once: the size and copy time of `Llama.save_state()` against the per-sequence state this cache keeps.
Appends a table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import llama_cpp  # noqa: E402
from llama_cpp import Llama  # noqa: E402

from local_models.backend import LocalBackend  # noqa: E402
from local_models.embedded import ensure_embedded_model  # noqa: E402
from local_models.settings import LocalModelSettings  # noqa: E402
from router.chat import ChatRequest, Message, Sampling, StreamEnd, TextDelta  # noqa: E402

CONTEXT_TOKENS = 6144
CACHE_DIR = Path("~/.cache/tiergate").expanduser()
WORDS = ("search", "fetch", "parse", "rank", "filter", "merge", "verify", "summarize", "translate", "compute", "plot")


def head(topic: str, tokens: int) -> str:
    """A stable planner head of about `tokens` tokens: the task and a list of tools (about 26 tokens per tool)."""
    lines = [f"You are the planner of an agent that answers questions about {topic}. Choose the next tool."]
    for i in range(max(1, tokens // 26)):
        verb, other = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
        lines.append(
            f"Tool {topic}_{i}: {verb}s {topic} records of kind {i}, then {other}s them; arguments: id, limit."
        )
    return "\n".join(lines)


def tool_result(topic: str, step: int) -> str:
    rows = ", ".join(f"{topic} row {step}-{j} = {(step * 37 + j * 11) % 97}" for j in range(8))
    return f"Result of step {step}: {rows}. Which tool next? Answer with Tool Name: and Sub-Goal:."


@dataclass
class Step:
    session: str
    step: int
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    latency_s: float
    answer: str


async def one_step(backend: LocalBackend, session: str, messages: list[Message], max_tokens: int) -> Step:
    request = ChatRequest(
        f"{session}-{len(messages)}",
        "local",
        messages,
        sampling=Sampling(max_tokens=max_tokens, temperature=0.0, seed=1),
        stream=True,
        session_id=session,
    )
    started = time.perf_counter()
    first: float | None = None
    text = ""
    end: StreamEnd | None = None
    async for event in backend.stream(request):
        first = first or time.perf_counter()
        if isinstance(event, StreamEnd):
            end = event
        elif isinstance(event, TextDelta):
            text += event.text
    assert end is not None and first is not None
    return Step(
        session,
        0,
        end.usage.prompt_tokens,
        end.usage.cached_tokens,
        first - started,
        time.perf_counter() - started,
        text,
    )


async def run_mode(cache_mb: float, steps: int, prefix_tokens: int, max_tokens: int) -> tuple[list[Step], int]:
    backend = LocalBackend(
        LocalModelSettings(context_tokens=CONTEXT_TOKENS, prefix_cache_mb=cache_mb, max_tokens_limit=max_tokens),
        CACHE_DIR,
    )
    await backend.start()
    assert backend.ready, backend.not_ready_reason
    sessions = {"A": "invoices", "B": "shipments"}
    history = {
        s: [Message("user", head(topic, prefix_tokens) + "\n\n" + tool_result(topic, 0))]
        for s, topic in sessions.items()
    }
    results: list[Step] = []
    for step in range(1, steps + 1):
        for session, topic in sessions.items():
            result = await one_step(backend, session, history[session], max_tokens)
            result.step = step
            results.append(result)
            print(
                f"cache {cache_mb:g} MB  {session} step {step}: prompt {result.prompt_tokens}, cached "
                f"{result.cached_tokens}, ttft {result.ttft_s:.2f} s, latency {result.latency_s:.2f} s",
                flush=True,
            )
            history[session] += [Message("assistant", result.answer), Message("user", tool_result(topic, step))]
    held = backend.prefix_cache_bytes
    await backend.close()
    return results, held


def library_state_cost(prefix_tokens: int) -> tuple[int, int, int, float, float, int, float]:
    """(prompt tokens, Llama.save_state() bytes in all, of which `scores`, its save s, its load s, sequence state
    bytes, its save s)."""
    llama = Llama(model_path=str(ensure_embedded_model(CACHE_DIR)), n_ctx=CONTEXT_TOKENS, n_threads=1, verbose=False)
    tokens = llama.tokenize(head("invoices", prefix_tokens).encode(), add_bos=True)
    llama.eval(tokens)
    started = time.perf_counter()
    state = llama.save_state()
    save_s = time.perf_counter() - started
    started = time.perf_counter()
    llama.load_state(state)
    load_s = time.perf_counter() - started
    library_bytes = state.llama_state_size + state.scores.nbytes + state.input_ids.nbytes
    started = time.perf_counter()
    size = llama_cpp.llama_state_seq_get_size(llama.ctx, 0)
    buffer = (ctypes.c_uint8 * size)()
    llama_cpp.llama_state_seq_get_data(llama.ctx, buffer, size, 0)
    seq_s = time.perf_counter() - started
    llama.close()
    return len(tokens), library_bytes, state.scores.nbytes, save_s, load_s, size, seq_s


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prefix-tokens", type=int, default=3600)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    load_before = os.getloadavg()
    off, _ = asyncio.run(run_mode(0, args.steps, args.prefix_tokens, args.max_tokens))
    on, held = asyncio.run(run_mode(512, args.steps, args.prefix_tokens, args.max_tokens))
    state_cost = library_state_cost(args.prefix_tokens)
    load_after = os.getloadavg()

    rows = [
        "| session | step | prompt tokens | cached (on) | TTFT off s | TTFT on s | latency off s | latency on s | "
        "latency off/on | same answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a, b in zip(off, on, strict=True):
        rows.append(
            f"| {a.session} | {a.step} | {a.prompt_tokens:,} | {b.cached_tokens:,} | {a.ttft_s:.2f} | {b.ttft_s:.2f} | "
            f"{a.latency_s:.2f} | {b.latency_s:.2f} | {a.latency_s / b.latency_s:.1f}x | "
            f"{'yes' if a.answer == b.answer else 'no'} |"
        )
    later_off = [s.latency_s for s in off if s.step > 1]
    later_on = [s.latency_s for s in on if s.step > 1]
    ttft_off = [s.ttft_s for s in off if s.step > 1]
    ttft_on = [s.ttft_s for s in on if s.step > 1]
    n_tokens, library_bytes, scores_bytes, save_s, load_s, seq_bytes, seq_s = state_cost
    summary = (
        f"Steps 2-{args.steps} (both sessions): median latency {median(later_off):.2f} s off vs "
        f"{median(later_on):.2f} s on ({median(later_off) / median(later_on):.1f}x); median TTFT "
        f"{median(ttft_off):.2f} s vs {median(ttft_on):.2f} s. Cache held {held / 2**20:.1f} MB at the end (two "
        f"sessions).\n\nState of one {n_tokens:,}-token context: `Llama.save_state()` {library_bytes / 2**20:.0f} MB "
        f"(of which `scores`, up to n_batch x vocabulary floats, {scores_bytes / 2**20:.0f} MB), saved in "
        f"{save_s:.2f} s "
        f"and loaded in {load_s:.2f} s; the sequence state this cache keeps (`llama_state_seq_get_data`) "
        f"{seq_bytes / 2**20:.1f} MB, saved in {seq_s * 1000:.0f} ms."
    )
    print("\n".join(rows))
    print(summary)
    if args.no_write:
        return
    command = "`.venv/bin/python bench/prefix_reuse.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "") + "`"
    with (REPO / "BENCHMARKS.md").open("a") as out:
        out.write(
            f"\n## Local KV prefix reuse per session (issue 10 C), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
            f"Command: {command}  \n"
            f"Machine: {os.cpu_count()} CPUs, embedded Gemma 3 270M Q4_K_M, n_ctx {CONTEXT_TOKENS}, 1 llama.cpp "
            f"thread, greedy, {args.max_tokens} completion tokens; load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after (other engineers' work shared the machine: single runs, noisy). Sessions "
            f"A and B alternate; cache off first, then on (`prefix_cache_mb` 0 vs 512).\n\n"
            + "\n".join(rows)
            + "\n\n"
            + summary
            + "\n"
        )


if __name__ == "__main__":
    main()
