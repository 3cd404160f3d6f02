"""Tokens/s and time to first token of the embedded model: through the gateway vs llama-cpp-python in-process.

    .venv/bin/python bench/local_throughput.py [--runs 3] [--max-tokens 128] [--clients 1]

Both sides get the same prompt, greedy sampling and the same token budget; runs alternate between the two so that
machine noise hits both alike. With --clients N, N streams run at once through the gateway (they queue: one
generation at a time per model) and the figure is the aggregate rate. Appends a table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import openai  # noqa: E402
from llama_cpp import Llama  # noqa: E402
from support.gateway_server import GatewayProcess  # noqa: E402

from local_models.embedded import ensure_embedded_model  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
N_CTX = 4096


def direct_run(llama: Llama, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token s, decode tokens/s, tokens) with llama-cpp-python's own chat completion, streamed."""
    started = time.perf_counter()
    first = None
    pieces = 0
    for chunk in llama.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, temperature=0, stream=True
    ):
        if chunk["choices"][0]["delta"].get("content"):  # type: ignore[union-attr, index]
            first = first or time.perf_counter()
            pieces += 1
    ended = time.perf_counter()
    tokens = pieces  # one content chunk per token here (no stop sequence in play mid-stream)
    assert first is not None
    return first - started, (tokens - 1) / (ended - first), tokens


def gateway_run(client: openai.OpenAI, max_tokens: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    usage = None
    for chunk in client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
        if chunk.usage:
            usage = chunk.usage
    ended = time.perf_counter()
    assert first is not None and usage is not None
    return first - started, (usage.completion_tokens - 1) / (ended - first), usage.completion_tokens


def concurrent_gateway(client: openai.OpenAI, max_tokens: int, clients: int) -> float:
    """Aggregate completion tokens/s of `clients` simultaneous streams."""
    totals: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        _, _, n = gateway_run(client, max_tokens)
        with lock:
            totals.append(n)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="both sides alike")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    threads = args.threads
    model = ensure_embedded_model(Path("~/.cache/tiergate").expanduser())
    workdir = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    config = {"local_models": [{"name": "gemma3-270m", "context_tokens": N_CTX, "max_queue": 16, "threads": threads}]}
    results: dict[str, list[tuple[float, float, int]]] = {"direct": [], "gateway": []}
    with GatewayProcess(config, workdir) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="bench", max_retries=0, timeout=600)
        llama = Llama(model_path=str(model), n_ctx=N_CTX, n_threads=threads, chat_format="gemma", verbose=False)
        gateway_run(client, 8)  # warm both
        direct_run(llama, 8)
        for _ in range(args.runs):
            results["direct"].append(direct_run(llama, args.max_tokens))
            results["gateway"].append(gateway_run(client, args.max_tokens))
        llama.close()
        del llama
        aggregate = concurrent_gateway(client, args.max_tokens, args.clients) if args.clients > 1 else None

    rows = []
    for name, runs in results.items():
        ttft = statistics.median(r[0] for r in runs) * 1000
        tps = statistics.median(r[1] for r in runs)
        rows.append((name, ttft, tps, runs[0][2]))
    ratio = rows[1][2] / rows[0][2]
    lines = [
        "| path | TTFT p50 (ms) | decode tokens/s p50 | tokens |",
        "|---|---|---|---|",
        *[f"| {n} | {t:.0f} | {s:.1f} | {k} |" for n, t, s, k in rows],
        "",
        f"Gateway / direct decode rate: **{ratio:.3f}x**.",
    ]
    if aggregate is not None:
        lines.append(f"{args.clients} concurrent streams through the gateway: {aggregate:.1f} tokens/s in aggregate.")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        command = "python bench/local_throughput.py " + " ".join(sys.argv[1:])
        with (REPO / "BENCHMARKS.md").open("a") as out:
            out.write(
                f"\n## Local model throughput: gateway vs llama-cpp-python direct ({datetime.now(UTC):%Y-%m-%d})\n\n"
                f"Embedded Gemma 3 270M Q4_K_M, {os.cpu_count()} cores, {threads} llama.cpp thread(s) on both sides, "
                f"load average {os.getloadavg()[0]:.1f}, n_ctx {N_CTX}, greedy, {args.max_tokens} tokens, "
                f"median of {args.runs} alternating runs. Command: `{command.strip()}`\n\n{table}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
