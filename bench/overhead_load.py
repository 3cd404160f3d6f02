"""The overhead benchmark's load generator: an open loop at a fixed arrival rate, run in its own process.

    .venv/bin/python bench/overhead_load.py --url http://127.0.0.1:9200/v1/chat/completions --rate 200 \\
        --duration 10 [--warmup 1] [--stream] [--model auto]

Request i is launched at `start + i / rate` whether or not the earlier ones have answered (a closed loop would wait,
and so hide the queueing a slow server causes). Latency is measured from that scheduled moment, so a launch that
came late because this process was starved of CPU counts against the target too; the launch lag is reported apart
(`lag_p99_ms`) to show whether the generator kept up. Every run is bounded: `rate * duration` requests at most,
each with a timeout, and requests still unanswered `--timeout` seconds after the last launch are cancelled and
counted as timeouts. A warm-up at the same rate opens the connection pool first; its requests are not counted.

It prints one JSON object (see `LoadResult`); `bench/overhead.py` runs it once per target and rate.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import aiohttp
import orjson

MAX_IN_FLIGHT = 4000
"""Requests outstanding at once at most; a launch beyond it is counted as an error (`client_cap`), not queued."""


@dataclass
class LoadResult:
    offered_rps: float
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    latency_ms: list[float]
    """End to end, from the scheduled launch to the last byte, for each successful request."""
    ttft_ms: list[float]
    """Streams only: from the scheduled launch to the first content token."""
    achieved_rps: float
    """Successful answers per second in steady state: those that completed within a window as long as the launch
    window, shifted by the shortest latency seen (a target that keeps up with a fixed latency L completes in
    [start + L, start + duration + L] what was launched in [start, start + duration]; one that falls behind
    completes only what it can serve)."""
    span_s: float
    """From the first scheduled launch to the last successful answer."""
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float


@dataclass
class _Tally:
    latency_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def request_body(model: str, stream: bool) -> bytes:
    """A small agent-like chat request (the gateway's work per request is what is measured, not payload size)."""
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "Reply with the single word ok."},
        ],
        "max_tokens": 16,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _has_token(line: bytes) -> bool | None:
    """For one SSE line: True when it carries content, None when it carries an error, else False."""
    if not line.startswith(b"data:"):
        return False
    data = line[5:].strip()
    if data == b"[DONE]" or not data:
        return False
    chunk = orjson.loads(data)
    if "error" in chunk:
        return None
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ())


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    scheduled: float,
    tally: _Tally | None,
    limit: aiohttp.ClientTimeout,
) -> None:
    started = time.perf_counter()
    first: float | None = None
    error: str | None = None
    try:
        async with session.post(url, data=body, timeout=limit) as response:
            if response.status != 200:
                await response.read()
                error = f"http_{response.status}"
            elif stream:
                async for line in response.content:
                    if first is None:
                        token = _has_token(line)
                        if token is None:
                            error = "stream_error"
                        elif token:
                            first = time.perf_counter()
                if error is None and first is None:
                    error = "no_token"
            else:
                payload = await response.read()
                if b'"choices"' not in payload:
                    error = "bad_body"
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientError as exc:
        error = type(exc).__name__
    except ValueError:  # orjson.JSONDecodeError: a stream line that is not JSON
        error = "bad_stream"
    ended = time.perf_counter()
    if tally is None:
        return
    tally.lag_ms.append((started - scheduled) * 1000)
    if error is not None:
        tally.errors[error] += 1
        return
    tally.latency_ms.append((ended - scheduled) * 1000)
    tally.ends.append(ended)
    if first is not None:
        tally.ttft_ms.append((first - scheduled) * 1000)


async def _phase(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    rate: float,
    seconds: float,
    timeout_s: float,
    tally: _Tally | None,
) -> tuple[int, float]:
    """Launch `rate * seconds` requests on schedule; wait for them (at most `timeout_s` after the last launch)."""
    total = int(rate * seconds)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.01
    sent = 0
    capped = 0
    while sent < total:
        elapsed = time.perf_counter() - start
        due = min(total, math.floor(elapsed * rate) + 1) if elapsed >= 0 else 0
        while sent < due:
            scheduled = start + sent / rate
            sent += 1
            if len(tasks) >= MAX_IN_FLIGHT:
                capped += 1
                continue
            task = asyncio.create_task(_one(session, url, body, stream, scheduled, tally, timeout))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if sent < total:
            next_due = start + sent / rate
            await asyncio.sleep(max(0.0, next_due - time.perf_counter()))
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=timeout_s + 1)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            if tally is not None:
                tally.errors["timeout"] += len(pending)
    if tally is not None and capped:
        tally.errors["client_cap"] += capped
    return sent, start


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_load(
    url: str,
    body: bytes,
    *,
    rate: float,
    duration: float,
    warmup: float,
    stream: bool,
    timeout_s: float,
    api_key: str = "sk-bench",
) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, limit_per_host=0, keepalive_timeout=60)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        if warmup > 0:
            await _phase(session, url, body, stream, rate, warmup, timeout_s, None)
        tally = _Tally()
        sent, start = await _phase(session, url, body, stream, rate, duration, timeout_s, tally)
    shift = min(tally.latency_ms, default=0.0) / 1000
    in_window = sum(1 for end in tally.ends if start + shift <= end <= start + duration + shift)
    return LoadResult(
        offered_rps=rate,
        duration_s=duration,
        sent=sent,
        ok=len(tally.latency_ms),
        errors=dict(tally.errors),
        latency_ms=tally.latency_ms,
        ttft_ms=tally.ttft_ms,
        achieved_rps=in_window / duration,
        span_s=max(tally.ends, default=start) - start,
        lag_p50_ms=_percentile(tally.lag_ms, 0.5),
        lag_p99_ms=_percentile(tally.lag_ms, 0.99),
        lag_max_ms=max(tally.lag_ms, default=float("nan")),
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Open-loop load at a fixed rate; prints a JSON result.")
    parser.add_argument("--url", required=True, help="the chat completions URL")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--stream", action="store_true", help="ask for server-sent events; time the first token")
    parser.add_argument("--model", default="auto", help="the request's model field")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds one request may take")
    parser.add_argument("--api-key-env", default=None, help="variable holding the bearer token to send")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 20_000 or not 0 < args.duration <= 600:
        parser.error("rate must be in (0, 20000] and duration in (0, 600]")
    body = request_body(args.model, args.stream)
    loop = _new_loop()
    try:
        result = loop.run_until_complete(
            run_load(
                args.url,
                body,
                rate=args.rate,
                duration=args.duration,
                warmup=args.warmup,
                stream=args.stream,
                timeout_s=args.timeout,
                api_key=os.environ.get(args.api_key_env, "sk-bench") if args.api_key_env else "sk-bench",
            )
        )
    finally:
        loop.close()
    sys.stdout.buffer.write(orjson.dumps(asdict(result)) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
