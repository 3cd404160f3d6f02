"""Where Tiergate's time goes under load: py-spy samples the gateway while the overhead benchmark's open loop runs.

    .venv/bin/python bench/overhead_profile.py [--rate 100] [--duration 15] [--latency-ms 50] [--stream]
        [--variant NAME=PATH[,KEY=VALUE...]] [--out DIR]

It starts the mock upstream and Tiergate exactly as bench/overhead.py does (every request to the frontier tier),
warms it up, then runs py-spy (`record --threads --nonblocking`, 250 samples/s, idle frames left out) on the
gateway process for the length of one load run, and prints: samples per thread, samples per area of the request
path (see `area_of`), the functions with the most samples of their own, and Tiergate's own functions by inclusive
samples, each also in milliseconds per request. The collapsed stacks (`--out`, default a temporary folder) load into
speedscope or flamegraph.pl. py-spy lives in its own virtual environment (~/.cache/tiergate/bench-profile-venv,
created on first use), never in the project's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson
from overhead_load import request_body
from overhead_targets import (
    BENCH,
    PeakMemory,
    ServerProcess,
    Variant,
    prime,
    start_upstream,
    tiergate_target,
    tree_cpu_s,
)

PY_SPY_VERSION = "0.4.3"
PROFILE_VENV = Path("~/.cache/tiergate/bench-profile-venv").expanduser()
SAMPLES_PER_S = 250

OURS = ("(gateway/", "(router/", "(local_models/", "(prompt_compression/")

THREAD_AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ledger writer thread", ("tiergate-ledger",)),
    ("local model worker thread", ("llama-",)),
)
"""Threads other than the event loop's, by name."""

STACK_AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (the per-request log line)", ("logging/__init__.py",)),
    ("rules file watcher and reloads", ("router/rule_store.py", "watchfiles/")),
)
"""Areas that own a stack wherever in it they appear."""

CODE_AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "routing decision (signals, score, rules)",
        (
            "router/signals.py",
            "router/rules.py",
            "router/conditions.py",
            "router/scoring.py",
            "router/sessions.py",
            "router/catalog.py",
        ),
    ),
    (
        "upstream call (aiohttp client, frontier backend)",
        ("router/frontier/", "aiohttp/", "aiohappyeyeballs/", "yarl/", "multidict/"),
    ),
    ("body reading and parsing (orjson, pydantic wire types)", ("gateway/body.py", "gateway/wire.py", "pydantic/")),
    ("ledger record and request trace", ("gateway/recording.py", "gateway/ledger/", "router/trace.py")),
    ("answer rendering", ("gateway/render.py", "gateway/responses.py", "starlette/responses.py")),
    ("chat handler and service glue", ("gateway/chat.py", "router/service.py", "gateway/state.py")),
    (
        "FastAPI native telemetry (OpenTelemetry provider checks)",
        (
            "fastapi/telemetry/_api",
            "opentelemetry/",
            "trace/__init__",
            "metrics/_internal",
            "_logs/_internal",
            "NativeTelemetry.enabled",
        ),
    ),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("ASGI framework (starlette, fastapi routing and middleware)", ("starlette/", "fastapi/")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop", "Runner.run")),
)
"""For the rest, the area of the frame nearest the leaf that belongs to one (a library call made from our code
counts where our code is, except for the libraries listed before it)."""


def ensure_py_spy(venv: Path = PROFILE_VENV) -> Path:
    executable = venv / "bin" / "py-spy"
    if executable.exists():
        return executable
    print(f"creating {venv} with py-spy=={PY_SPY_VERSION} (once)", file=sys.stderr)
    base = shutil.which("python3.11") or str(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"py-spy=={PY_SPY_VERSION}"],
        check=True,
        timeout=900,
    )
    return executable


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _thread_name(root: str) -> str:
    """`thread (1234): MainThread` -> `MainThread`."""
    return root.partition("): ")[2] or root


def area_of(frames: list[str]) -> str:
    thread = _thread_name(frames[0])
    for area, markers in THREAD_AREAS:
        if any(marker in thread for marker in markers):
            return area
    for area, markers in STACK_AREAS:
        if any(marker in frame for frame in frames[1:] for marker in markers):
            return area
    for frame in reversed(frames[1:]):
        for area, markers in CODE_AREAS:
            if any(marker in frame for marker in markers):
                return area
    return "other"


def summary(stacks: list[tuple[list[str], int]], top: int, requests: int) -> str:
    total = sum(n for _, n in stacks)
    if not total:
        return "no samples (was the gateway idle, or is ptrace not permitted?)"
    threads: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        threads[_thread_name(frames[0])] += n
        areas[area_of(frames)] += n
        own[frames[-1]] += n
        for frame in set(frames[1:]):
            if any(p in frame for p in OURS):
                inclusive[frame] += n
    ms_per_sample = 1000 / SAMPLES_PER_S

    def share(n: int) -> str:
        return f"{n / total:6.1%} {n * ms_per_sample / max(1, requests):6.3f} ms/req"

    lines = [f"{total} samples ({total * ms_per_sample / 1000:.1f} s busy) over {requests} requests", "", "threads:"]
    lines += [f"  {share(n)}  {name}" for name, n in threads.most_common()]
    lines += ["", "areas (each stack in the first area it touches):"]
    lines += [f"  {share(n)}  {name}" for name, n in areas.most_common()]
    lines += ["", f"top {top} functions by own samples:"]
    lines += [f"  {share(n)}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", f"top {top} Tiergate frames by inclusive samples:"]
    lines += [f"  {share(n)}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Profile Tiergate's request path under open-loop load with py-spy.")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load while sampling")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the mock upstream's fixed latency")
    parser.add_argument("--stream", action="store_true", help="stream the answers")
    parser.add_argument("--variant", default=None, metavar="NAME=PATH[,KEY=VALUE...]", help="profile this instead")
    parser.add_argument("--out", type=Path, default=None, help="folder for the collapsed stacks")
    parser.add_argument("--top", type=int, default=30, help="functions to list")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 5000 or not 0 < args.duration <= 120:
        parser.error("rate must be in (0, 5000] and duration in (0, 120]")
    variant = Variant.parse(args.variant) if args.variant else None
    py_spy = ensure_py_spy()
    out = args.out or Path(tempfile.mkdtemp(prefix="tiergate-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    collapsed = out / f"tiergate-{args.rate:g}rps{'-stream' if args.stream else ''}.collapsed.txt"
    servers: list[ServerProcess] = []
    loader: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="tiergate-profile-run-") as tmp:
        workdir = Path(tmp)
        try:
            upstream = start_upstream(workdir, args.latency_ms, 8, 5.0)
            servers.append(upstream)
            upstream.wait_ready(30)
            target = tiergate_target(workdir, upstream, variant)
            assert target.server is not None
            servers.append(target.server)
            target.server.wait_ready(300)
            prime(target, request_body(target.model, stream=False))
            load = [
                sys.executable,
                str(BENCH / "overhead_load.py"),
                "--url",
                target.url,
                "--rate",
                f"{args.rate:g}",
                "--duration",
                f"{args.duration:g}",
                "--warmup",
                "2",
                "--model",
                target.model,
            ] + (["--stream"] if args.stream else [])
            loader = subprocess.Popen(load, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            pid = target.server.pid
            # Sample the measured part only: start once the 2 s warm-up is over.
            with contextlib.suppress(subprocess.TimeoutExpired):
                loader.wait(2.2)
            cpu_before = tree_cpu_s(pid)
            with PeakMemory(pid).watching() as memory:
                spy = subprocess.run(
                    [
                        str(py_spy),
                        "record",
                        "--pid",
                        str(pid),
                        "--threads",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--rate",
                        str(SAMPLES_PER_S),
                        "--duration",
                        f"{max(1, int(args.duration) - 1)}",
                        "--output",
                        str(collapsed),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=args.duration + 60,
                    check=False,
                )
            cpu_s = tree_cpu_s(pid) - cpu_before
            stdout, stderr = loader.communicate(timeout=args.duration + 120)
        finally:
            if loader is not None and loader.poll() is None:
                loader.kill()
                loader.wait(10)
            for server in reversed(servers):
                server.stop()
    if spy.returncode != 0 or not collapsed.exists():
        print(f"py-spy failed: {spy.stderr[-2000:]}", file=sys.stderr)
        return 1
    requests = int(args.rate * max(1, int(args.duration) - 1))
    print(
        f"Tiergate at {args.rate:g} RPS ({'streaming' if args.stream else 'non-streaming'}), "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"CPU {cpu_s * 1000 / max(1, requests):.2f} ms/request while sampled (sampling included); "
        f"peak RSS {memory.peak_mb:.0f} MB ({memory.peak_anon_mb:.0f} MB anonymous)"
    )
    print(f"collapsed stacks: {collapsed}")
    if loader.returncode == 0:
        result = orjson.loads(stdout)
        latency = sorted(result["latency_ms"])
        if latency:
            p50, p99 = latency[len(latency) // 2], latency[min(len(latency) - 1, int(len(latency) * 0.99))]
            print(
                f"load: {result['ok']} / {result['sent']} ok, errors {result['errors']}, p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms (with the profiler attached)"
            )
    else:
        print(f"load generator failed: {stderr.decode(errors='replace')[-2000:]}", file=sys.stderr)
    print(summary(read_collapsed(collapsed), args.top, requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
