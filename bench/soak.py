"""Soak: thousands of mixed requests through the real gateway on loopback, with its resident memory sampled.

    .venv/bin/python bench/soak.py [--requests 4000] [--concurrency 8] [--local-share 0.02] [--no-append]

The gateway runs as a user runs it (`python -m gateway serve`), with the embedded local model and three scripted
frontier upstreams on 127.0.0.1: one that answers, one that always fails with a 500, one whose streams break off
mid-answer. The mix: local answers (short: the local model is slow on a small machine), requests the rules escalate
to the frontier tier, pinned frontier requests, streams, upstream failures, cut streams and malformed bodies. Every
second the gateway's RSS (VmRSS) is read; memory must level off after the warm-up, not grow with the request count.
The table, the command and the core count are appended to BENCHMARKS.md. tests/gateway/test_soak_short.py runs the
same driver for a few hundred requests and bounds the growth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess  # noqa: E402
from support.scripted_upstream import Reply, ScriptedUpstream  # noqa: E402

EASY = [{"role": "user", "content": "Hi there!"}]
HARD = [
    {
        "role": "user",
        "content": "Prove step by step that the sum of the first n odd numbers is n^2, then implement a Python "
        "function that checks it, compare its complexity with a closed-form check, and explain the trade-offs.",
    }
]
FRONTIER_TEXT = "an answer from the frontier tier, streamed in small pieces"

# kind -> (request body, expected status). Each kind has one expected outcome; any other counts against the gateway.
KINDS: dict[str, tuple[dict[str, Any] | bytes, int]] = {
    "local": ({"model": "local", "messages": EASY, "max_tokens": 2, "temperature": 0}, 200),
    "escalated": ({"model": "auto", "messages": HARD, "max_tokens": 16}, 200),
    "frontier": ({"model": "frontier", "messages": EASY}, 200),
    "streamed": (
        {"model": "frontier", "messages": EASY, "stream": True, "stream_options": {"include_usage": True}},
        200,
    ),
    "upstream-500": ({"model": "gpt-failing", "messages": EASY}, 502),
    "stream-cut": ({"model": "gpt-cut", "messages": EASY, "stream": True}, 200),
    "bad-input": (b'{"model": "frontier", "messages": [{"role": "wizard"}]', 400),
}


@dataclass(frozen=True)
class Mix:
    """Requests per kind in every block of `sum(weights)` requests, interleaved."""

    weights: dict[str, int]

    def sequence(self, total: int) -> list[str]:
        block = _interleave(self.weights)
        return [block[i % len(block)] for i in range(total)]


def _interleave(weights: dict[str, int]) -> list[str]:
    """Each kind spread evenly through the block, not in runs: every stretch of the soak sees the whole mix."""
    total = sum(weights.values())
    slots: list[tuple[float, str]] = []
    for kind, weight in weights.items():
        slots += [((i + 0.5) * total / weight, kind) for i in range(weight)]
    return [kind for _, kind in sorted(slots)]


BENCH_MIX = Mix(
    {"local": 2, "escalated": 18, "frontier": 30, "streamed": 25, "upstream-500": 10, "stream-cut": 7, "bad-input": 8}
)
NO_MODEL_MIX = Mix(
    {"escalated": 20, "frontier": 30, "streamed": 27, "upstream-500": 10, "stream-cut": 5, "bad-input": 8}
)


@dataclass
class Sample:
    at_s: float
    done: int
    rss_mb: float


@dataclass
class SoakResult:
    requests: int
    seconds: float
    by_kind: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    warmup_requests: int = 0

    @property
    def rss_start_mb(self) -> float:
        return self.samples[0].rss_mb

    @property
    def rss_after_warmup_mb(self) -> float:
        return next(s.rss_mb for s in self.samples if s.done >= self.warmup_requests)

    @property
    def rss_end_mb(self) -> float:
        return self.samples[-1].rss_mb

    @property
    def rss_peak_mb(self) -> float:
        return max(s.rss_mb for s in self.samples)

    @property
    def growth_after_warmup_mb(self) -> float:
        return self.rss_end_mb - self.rss_after_warmup_mb

    @property
    def slope_mb_per_1000(self) -> float:
        """Least-squares slope of RSS against requests completed, after the warm-up."""
        points = [(s.done / 1000, s.rss_mb) for s in self.samples if s.done >= self.warmup_requests]
        if len(points) < 2:
            return 0.0
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        spread = sum((x - mean_x) ** 2 for x, _ in points)
        return 0.0 if spread == 0 else sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def gateway_config(upstream: str, failing: str, cutting: str, local_model: dict[str, Any]) -> dict[str, Any]:
    def frontier(name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": "gpt-4.1-mini",
            "api_base": base_url,
            "api_key_env": None,
            "timeout_s": 5.0,
            "max_retries": 0,
        }

    return {
        "log_level": "warning",
        "local_models": [{**local_model, "max_queue": 64}],
        "frontier_models": [
            frontier("gpt-test", upstream),
            frontier("gpt-failing", failing),
            frontier("gpt-cut", cutting),
        ],
    }


async def _one(session: aiohttp.ClientSession, url: str, kind: str) -> bool:
    """Send one request of `kind`; whether its outcome is the one expected of the gateway."""
    body, expected = KINDS[kind]
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(url, data=data, headers={"content-type": "application/json"}) as response:
        payload = await response.read()
    if response.status != expected:
        return False
    if kind == "stream-cut":  # a broken stream must end in an error event, never in a normal finish
        return b'"error"' in payload and b'"finish_reason":"stop"' not in payload
    if kind == "streamed":
        return payload.rstrip().endswith(b"data: [DONE]") and b'"error"' not in payload
    return True


async def drive(
    gateway_url: str, pid: int, kinds: list[str], concurrency: int, warmup: int, sample_every_s: float
) -> SoakResult:
    url = gateway_url + "/v1/chat/completions"
    result = SoakResult(requests=len(kinds), seconds=0.0, warmup_requests=warmup)
    queue = iter(kinds)
    done = 0
    started = time.monotonic()
    # Samples by progress as well as by time: at the end of the warm-up and every 1/20th of the run, so that a run
    # that is over in a second still has its after-warm-up reading and a curve, however fast the machine.
    every = max(1, len(kinds) // 20)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for kind in queue:
            try:
                ok = await _one(session, url, kind)
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            result.by_kind[kind] += 1
            if not ok:
                result.unexpected[kind] += 1
            done += 1
            if done == warmup or done % every == 0:
                result.samples.append(Sample(time.monotonic() - started, done, rss_mb(pid)))

    async def sampler() -> None:
        while True:
            result.samples.append(Sample(time.monotonic() - started, done, rss_mb(pid)))
            await asyncio.sleep(sample_every_s)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        sampling.cancel()
    await asyncio.sleep(1.0)  # let the ledger's last batch land before the final reading
    result.samples.append(Sample(time.monotonic() - started, done, rss_mb(pid)))
    result.seconds = time.monotonic() - started
    return result


def run_soak(
    requests: int,
    mix: Mix,
    *,
    concurrency: int = 8,
    warmup_share: float = 0.2,
    sample_every_s: float = 1.0,
    local_model: dict[str, Any] | None = None,
    workdir: Path | None = None,
) -> SoakResult:
    """Start the upstreams and the gateway, drive `requests` of `mix`, stop everything, return the figures."""
    kinds = mix.sequence(requests)
    with (
        tempfile.TemporaryDirectory(prefix="tiergate-soak-") as scratch,
        ScriptedUpstream(default=Reply.text(FRONTIER_TEXT, delay_s=0.005, chunk_chars=8), record=False) as good,
        ScriptedUpstream(default=Reply.status(500), record=False) as failing,
        ScriptedUpstream(default=Reply.cut(FRONTIER_TEXT, after_chunks=2, chunk_chars=8), record=False) as cutting,
    ):
        config = gateway_config(good.base_url, failing.base_url, cutting.base_url, local_model or LOCAL_TEST_MODEL)
        gateway = GatewayProcess(config, workdir or Path(scratch)).start()
        try:
            assert gateway.proc is not None
            return asyncio.run(
                drive(gateway.url, gateway.proc.pid, kinds, concurrency, int(requests * warmup_share), sample_every_s)
            )
        finally:
            gateway.stop()


def table(result: SoakResult) -> str:
    lines = ["| kind | requests | unexpected outcome |", "|---|---:|---:|"]
    for kind in KINDS:
        if result.by_kind[kind]:
            lines.append(f"| {kind} | {result.by_kind[kind]} | {result.unexpected[kind]} |")
    lines.append(f"| all | {sum(result.by_kind.values())} | {sum(result.unexpected.values())} |")
    lines += [
        "",
        "| gateway RSS | MB |",
        "|---|---:|",
        f"| at start (ready, before any request) | {result.rss_start_mb:.1f} |",
        f"| after warm-up ({result.warmup_requests} requests) | {result.rss_after_warmup_mb:.1f} |",
        f"| peak | {result.rss_peak_mb:.1f} |",
        f"| at end | {result.rss_end_mb:.1f} |",
        f"| growth after warm-up | {result.growth_after_warmup_mb:+.1f} |",
        f"| slope after warm-up, MB per 1000 requests | {result.slope_mb_per_1000:+.2f} |",
        "",
        f"{result.requests} requests in {result.seconds:.0f} s ({result.requests / result.seconds:.0f}/s), "
        f"{len(result.samples)} RSS samples.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-append", action="store_true", help="print the table only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    result = run_soak(args.requests, BENCH_MIX, concurrency=args.concurrency)
    text = table(result)
    print(text)
    if not args.no_append:
        command = ".venv/bin/python bench/soak.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        load = os.getloadavg()
        with (REPO / "BENCHMARKS.md").open("a") as out:
            out.write(
                f"\n## Soak: memory under {args.requests} mixed requests "
                f"({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, load average {load[0]:.1f})\n\n"
                f"`{command.strip()}` (concurrency {args.concurrency}; the gateway with the embedded model and "
                "scripted frontier upstreams on loopback; mix per 100 requests: "
                + ", ".join(f"{k} {w}" for k, w in BENCH_MIX.weights.items())
                + ")\n\n"
                + text
                + "\n"
            )
    return 1 if sum(result.unexpected.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
