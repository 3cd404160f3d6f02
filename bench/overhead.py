"""Gateway overhead: what Tiergate adds to a request, side by side with the floor and LiteLLM's proxy, in one run.

    .venv/bin/python bench/overhead.py [--rates 50,100,200,400,800] [--duration 10] [--latency-ms 50] [--stream]

It starts a mock OpenAI-compatible upstream on loopback that answers every request after `--latency-ms`
(tests/support/scripted_upstream.py, uvloop + aiohttp, each answer encoded once), then, at each rate, drives an open
loop (fixed arrival rate: requests are launched on schedule whether or not earlier ones have answered) from a
separate process (bench/overhead_load.py, aiohttp on uvloop) at each target in turn:

- `direct`: the mock itself, the baseline;
- `floor`: the thinnest pass-through on Tiergate's own server stack (bench/overhead_floor.py: FastAPI on uvicorn
  with httptools + uvloop, one pooled aiohttp session), so the cost of the stack itself is visible;
- `tiergate`: `python -m gateway serve` with a rules file that sends every request (model `auto`) to its frontier
  tier, the mock, over the `openai_compatible` backend; the embedded local model is configured (and loaded) as
  usual, and the ledger writes to SQLite;
- `litellm`: LiteLLM's proxy (`litellm[proxy]==1.106.2`, in its own virtual environment under
  ~/.cache/tiergate/bench-litellm-venv, created on first use; 2 uvicorn workers, `--litellm-workers` to change it)
  configured for the same mock as an `openai/` model.

For each rate and target it reports achieved throughput (answers completed per second in steady state), p50/p99
end-to-end latency (from the scheduled launch to the last byte), the latency added over `direct` at the same rate
(p50/p99 of each minus those of direct: percentiles do not subtract, so read these as "how much later"), error
counts, the target's peak resident memory (its whole process tree, and the anonymous part, which leaves out
file-backed pages such as the memory-mapped GGUF model and shared libraries), the CPU time its process tree spent
per request (less sensitive than latency to other work on the machine), and how late the load generator launched
its requests (p99; large values mean the machine, not the target, was the bottleneck). With `--stream` the
requests ask for server-sent events, the mock sends `--chunks` content chunks `--chunk-delay-ms` apart, and time
to first token (to the first content chunk) is reported the same way. `--rounds N` repeats each rate N times,
rotating the order of the targets, and reports medians. A target that does not sustain a rate (more than 1%
errors, under 95% of the offered rate achieved, or p99 over 1 s) is not driven at the higher rates (`--no-skip`
drives it anyway). `--variant NAME=PATH[,KEY=VALUE...]` adds Tiergate from another checkout and/or with other
environment settings as one more target, for before/after comparisons in one run. `--frontier-only` runs every
Tiergate target with no local model (`local_models: []`), the way a gateway in front of frontier APIs only is
deployed; `--auth` adds `tiergate:auth`, which checks API keys (one made with `tiergate keys create`), to show
what key checking costs.

The table, the machine's core count, its load average and the command are appended to BENCHMARKS.md
(`--no-append` to skip). Everything runs on 127.0.0.1, every load run is bounded in count and time, and every
process started is stopped at the end. bench/overhead_profile.py profiles Tiergate under the same load.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from overhead_load import request_body
from overhead_targets import (
    BENCH,
    LITELLM_WORKERS,
    REPO,
    PeakMemory,
    ServerProcess,
    Target,
    Variant,
    direct_target,
    floor_target,
    litellm_target,
    prime,
    start_upstream,
    tiergate_target,
    tree_cpu_s,
)

TARGETS = ("direct", "floor", "tiergate", "litellm")
MAX_ERROR_SHARE = 0.01
MIN_ACHIEVED_SHARE = 0.95
MAX_SUSTAINED_P99_MS = 1000.0


@dataclass
class Row:
    rate: float
    target: str
    load_1m: float
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    achieved_rps: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    ttft_p50_ms: float = math.nan
    ttft_p99_ms: float = math.nan
    added_p50_ms: float = math.nan
    added_p99_ms: float = math.nan
    added_ttft_p50_ms: float = math.nan
    added_ttft_p99_ms: float = math.nan
    peak_rss_mb: float = math.nan
    peak_anon_mb: float = math.nan
    cpu_ms_per_request: float = math.nan
    lag_p99_ms: float = math.nan
    skipped: str = ""
    rounds: int = 1

    @property
    def sustained(self) -> bool:
        if self.skipped or not self.sent:
            return False
        return (
            sum(self.errors.values()) <= MAX_ERROR_SHARE * self.sent
            and self.achieved_rps >= MIN_ACHIEVED_SHARE * self.rate
            and self.p99_ms <= MAX_SUSTAINED_P99_MS
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- running ------------------------------------------------------------------------------------------------------


def start_targets(
    args: argparse.Namespace, workdir: Path, upstream: ServerProcess, started: list[ServerProcess]
) -> list[Target]:
    """Start each target asked for (adding its server to `started` at once, so a failure later still stops it)."""
    targets: list[Target] = []
    for name in args.targets:
        if name == "direct":
            targets.append(direct_target(upstream))
        elif name == "floor":
            targets.append(floor_target(workdir, upstream))
        elif name == "tiergate":
            only = args.frontier_only
            targets.append(tiergate_target(workdir, upstream, frontier_only=only))
            if args.auth:
                targets.append(tiergate_target(workdir, upstream, frontier_only=only, auth=True))
            targets += [tiergate_target(workdir, upstream, variant, frontier_only=only) for variant in args.variant]
        elif name == "litellm":
            targets.append(litellm_target(workdir, upstream, args.litellm_workers))
        started.extend(t.server for t in targets if t.server is not None and t.server not in started)
    for target in targets:
        if target.server is not None:
            target.server.wait_ready(timeout_s=300)
        prime(target, request_body(target.model, stream=False))
    return targets


def drive(target: Target, rate: float, args: argparse.Namespace) -> Row:
    """One open-loop run at `rate` against `target`, in a load-generator subprocess."""
    row = Row(rate, target.name, os.getloadavg()[0])
    command = [
        sys.executable,
        str(BENCH / "overhead_load.py"),
        "--url",
        target.url,
        "--rate",
        f"{rate:g}",
        "--duration",
        f"{args.duration:g}",
        "--warmup",
        f"{args.warmup:g}",
        "--model",
        target.model,
        "--timeout",
        f"{args.timeout:g}",
    ]
    if args.stream:
        command.append("--stream")
    env = {**os.environ, "BENCH_API_KEY": target.api_key}  # not on the command line, where ps shows it
    command += ["--api-key-env", "BENCH_API_KEY"]
    bound_s = args.warmup + args.duration + 2 * args.timeout + 60
    server = target.server
    cpu_before = tree_cpu_s(server.pid) if server is not None else 0.0
    if server is not None:
        with PeakMemory(server.pid).watching() as memory:
            done = subprocess.run(command, capture_output=True, timeout=bound_s, check=False, env=env)
        row.peak_rss_mb, row.peak_anon_mb = memory.peak_mb, memory.peak_anon_mb
        requests = int(rate * args.warmup) + int(rate * args.duration)
        row.cpu_ms_per_request = (tree_cpu_s(server.pid) - cpu_before) * 1000 / max(1, requests)
    else:
        done = subprocess.run(command, capture_output=True, timeout=bound_s, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed on {target.name}: {done.stderr.decode(errors='replace')}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    latency: list[float] = result["latency_ms"]
    ttft: list[float] = result["ttft_ms"]
    row.sent, row.ok, row.errors = result["sent"], result["ok"], result["errors"]
    row.achieved_rps = result["achieved_rps"]
    row.p50_ms, row.p99_ms = percentile(latency, 0.5), percentile(latency, 0.99)
    row.ttft_p50_ms, row.ttft_p99_ms = percentile(ttft, 0.5), percentile(ttft, 0.99)
    row.lag_p99_ms = result["lag_p99_ms"] if result["lag_p99_ms"] is not None else math.nan
    return row


def add_baseline(rows: list[Row]) -> None:
    """Added latency: each target's p50/p99 minus direct's at the same rate."""
    direct = {r.rate: r for r in rows if r.target == "direct" and not r.skipped}
    for row in rows:
        base = direct.get(row.rate)
        if base is None or row.target == "direct" or row.skipped:
            continue
        row.added_p50_ms, row.added_p99_ms = row.p50_ms - base.p50_ms, row.p99_ms - base.p99_ms
        row.added_ttft_p50_ms = row.ttft_p50_ms - base.ttft_p50_ms
        row.added_ttft_p99_ms = row.ttft_p99_ms - base.ttft_p99_ms


def combine(runs: list[Row]) -> Row:
    """One row from several rounds at one rate: counts summed, peak memory the highest, and every other figure the
    median of the rounds' (a round that met a burst of other work on the machine moves it least)."""
    first = runs[0]
    if len(runs) == 1:
        return first
    row = Row(first.rate, first.target, statistics.median(r.load_1m for r in runs), rounds=len(runs))
    row.sent, row.ok = sum(r.sent for r in runs), sum(r.ok for r in runs)
    for r in runs:
        for kind, count in r.errors.items():
            row.errors[kind] = row.errors.get(kind, 0) + count
    for name in ("achieved_rps", "p50_ms", "p99_ms", "ttft_p50_ms", "ttft_p99_ms", "cpu_ms_per_request", "lag_p99_ms"):
        values = [getattr(r, name) for r in runs if not math.isnan(getattr(r, name))]
        setattr(row, name, statistics.median(values) if values else math.nan)
    row.peak_rss_mb = max(r.peak_rss_mb for r in runs)
    row.peak_anon_mb = max(r.peak_anon_mb for r in runs)
    return row


def sweep(targets: list[Target], args: argparse.Namespace) -> list[Row]:
    """Every rate in turn; at each, every target in turn, `--rounds` times (the order rotated each round)."""
    rows: list[Row] = []
    saturated: dict[str, float] = {}
    for rate in args.rates:
        live = [t for t in targets if t.name not in saturated or args.no_skip]
        runs: dict[str, list[Row]] = {t.name: [] for t in live}
        for round_ in range(args.rounds):
            shift = round_ % len(live)
            for target in live[shift:] + live[:shift]:
                row = drive(target, rate, args)
                runs[target.name].append(row)
                print(progress_line(row), file=sys.stderr, flush=True)
                time.sleep(args.pause)  # let a saturated target drain before the next one is measured
        for target in targets:
            if target.name not in runs:
                load = os.getloadavg()[0]
                rows.append(Row(rate, target.name, load, skipped=f"saturated at {saturated[target.name]:g}"))
                continue
            row = combine(runs[target.name])
            rows.append(row)
            if not row.sustained:
                saturated.setdefault(target.name, rate)
    add_baseline(rows)
    return rows


def progress_line(row: Row) -> str:
    errors = sum(row.errors.values())
    return (
        f"{row.rate:>6g} rps  {row.target:<15} achieved {row.achieved_rps:7.1f}  p50 {row.p50_ms:8.1f}  "
        f"p99 {row.p99_ms:8.1f}  errors {errors:5d}  rss {row.peak_rss_mb:6.0f} MB  "
        f"cpu {row.cpu_ms_per_request:5.2f} ms/req  lag p99 {row.lag_p99_ms:6.1f}  load {row.load_1m:.1f}"
    )


# --- reporting ----------------------------------------------------------------------------------------------------


def _ms(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _errors(row: Row) -> str:
    if not row.errors:
        return "0"
    return ", ".join(f"{kind} {count}" for kind, count in sorted(row.errors.items()))


def table(rows: list[Row], stream: bool) -> str:
    head = ["offered RPS", "target", "achieved RPS", "ok / sent", "errors", "p50 ms", "p99 ms"]
    head += ["added p50 ms", "added p99 ms"]
    if stream:
        head += ["TTFT p50 ms", "TTFT p99 ms", "added TTFT p50", "added TTFT p99"]
    head += ["peak RSS MB (anon)", "CPU ms/req", "load-gen lag p99 ms", "load 1m"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.skipped:
            cells = [f"{r.rate:g}", r.target, r.skipped] + ["—"] * (len(head) - 3)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        memory = "—" if math.isnan(r.peak_rss_mb) else f"{r.peak_rss_mb:.0f} ({r.peak_anon_mb:.0f})"
        cells = [f"{r.rate:g}", r.target if r.sustained else f"{r.target} (not sustained)"]
        cells += [f"{r.achieved_rps:.1f}", f"{r.ok} / {r.sent}", _errors(r), _ms(r.p50_ms), _ms(r.p99_ms)]
        cells += [_ms(r.added_p50_ms, True), _ms(r.added_p99_ms, True)]
        if stream:
            cells += [_ms(r.ttft_p50_ms), _ms(r.ttft_p99_ms)]
            cells += [_ms(r.added_ttft_p50_ms, True), _ms(r.added_ttft_p99_ms, True)]
        cpu = "—" if math.isnan(r.cpu_ms_per_request) else f"{r.cpu_ms_per_request:.2f}"
        cells += [memory, cpu, _ms(r.lag_p99_ms), f"{r.load_1m:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_rate(rows: list[Row], target: str) -> float:
    return max((r.rate for r in rows if r.target == target and r.sustained), default=0.0)


def _row(rows: list[Row], target: str, rate: float) -> Row | None:
    return next((r for r in rows if r.target == target and r.rate == rate and not r.skipped), None)


def verdicts(rows: list[Row], args: argparse.Namespace) -> list[str]:
    """The issue's targets, read off this run."""
    stream: bool = args.stream
    out: list[str] = []
    p50_key, p99_key = ("added_ttft_p50_ms", "added_ttft_p99_ms") if stream else ("added_p50_ms", "added_p99_ms")
    what = "time to first token" if stream else "latency"
    tiergate_best, litellm_best = best_rate(rows, "tiergate"), best_rate(rows, "litellm")
    if any(r.target == "tiergate" for r in rows) and any(r.target == "litellm" for r in rows):
        for rate in sorted({r.rate for r in rows}):
            ours, theirs = _row(rows, "tiergate", rate), _row(rows, "litellm", rate)
            if ours is None or theirs is None or not (ours.sustained and theirs.sustained):
                continue
            a, b = getattr(ours, p99_key), getattr(theirs, p99_key)
            ratio = f"{b / a:.1f}x" if a > 0 else "n/a (Tiergate's is not above direct's)"
            out.append(f"- {rate:g} RPS: added p99 {what} Tiergate {a:+.1f} ms, LiteLLM {b:+.1f} ms: {ratio} lower.")
        ratio = f"{tiergate_best / litellm_best:.1f}x" if litellm_best else "n/a (LiteLLM sustained no rate)"
        out.append(
            f"- Highest sustained rate: Tiergate {tiergate_best:g} RPS, LiteLLM {litellm_best:g} RPS ({ratio}); "
            "rates above the highest tried were not tried."
        )
    ours, floor = _row(rows, "tiergate", 200), _row(rows, "floor", 200)
    if ours is not None and floor is not None:
        out.append(
            f"- 200 RPS: added p50/p99 {what} Tiergate {getattr(ours, p50_key):+.1f}/{getattr(ours, p99_key):+.1f} "
            f"ms, floor {getattr(floor, p50_key):+.1f}/{getattr(floor, p99_key):+.1f} ms."
        )
    memory = [r for r in rows if r.target == "tiergate" and not math.isnan(r.peak_rss_mb)]
    if memory:
        peak = max(memory, key=lambda r: r.peak_rss_mb)
        rest = "shared libraries" if args.frontier_only else "the memory-mapped GGUF model and shared libraries"
        out.append(
            f"- Tiergate peak resident memory {peak.peak_rss_mb:.0f} MB, of which {peak.peak_anon_mb:.0f} MB "
            f"anonymous (the rest is file-backed: {rest})."
        )
    return out


def machine_line(load_start: tuple[float, float, float], load_end: tuple[float, float, float]) -> str:
    def fmt(load: tuple[float, float, float]) -> str:
        return ", ".join(f"{x:.1f}" for x in load)

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {fmt(load_start)} at the start and {fmt(load_end)} at the end "
        "(1, 5, 15 min; load generator, mock and target all on this machine)"
    )


def report(rows: list[Row], targets: list[Target], args: argparse.Namespace, machine: str) -> str:
    mode = "streaming (time to first token)" if args.stream else "non-streaming"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = ".venv/bin/python bench/overhead.py " + shlex.join(sys.argv[1:])
    parts = [
        f"## Gateway overhead (issue 8): {mode}, {when}",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine}.  ",
        f"Mock upstream: {args.latency_ms:g} ms fixed latency"
        + (f", {args.chunks} stream chunks {args.chunk_delay_ms:g} ms apart" if args.stream else "")
        + f"; open-loop load for {args.duration:g} s per rate and target after a {args.warmup:g} s warm-up"
        + (f", {args.rounds} interleaved rounds (medians shown)" if args.rounds > 1 else "")
        + "; latency from the scheduled launch to the last byte"
        + ("; TTFT to the first content chunk." if args.stream else "."),
        "",
        "Targets: " + "; ".join(f"`{t.name}` {t.note}" for t in targets) + ".",
        "",
        table(rows, args.stream),
        "",
        *verdicts(rows, args),
        "",
    ]
    return "\n".join(parts)


# --- entry point --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rates", default="50,100,200,400,800", help="requests per second, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per rate and target")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the mock upstream's fixed latency")
    parser.add_argument("--stream", action="store_true", help="stream the answers and report time to first token")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks in each streamed answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=5.0, help="the mock's wait between stream chunks")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--litellm-workers", type=int, default=LITELLM_WORKERS, help="LiteLLM proxy workers")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PATH[,KEY=VALUE...]",
        help="also run Tiergate from another checkout and/or with environment settings, side by side "
        "(e.g. quiet=.,TIERGATE_LOG_LEVEL=warning); repeatable",
    )
    parser.add_argument(
        "--frontier-only", action="store_true", help="run Tiergate with no local model configured (local_models: [])"
    )
    parser.add_argument(
        "--auth", action="store_true", help="also run Tiergate with API keys checked, as the target tiergate:auth"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load before each run")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds one request may take")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs per rate and target, interleaved; the table shows medians"
    )
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--no-skip", action="store_true", help="drive saturated targets at higher rates too")
    parser.add_argument("--no-append", action="store_true", help="print the table only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates takes numbers, e.g. 50,100,200")
    if not args.rates or any(not 0 < r <= 20_000 for r in args.rates):
        parser.error("each rate must be in (0, 20000]")
    if not 1 <= args.chunks <= 1000 or not 0 <= args.chunk_delay_ms <= 1000:
        parser.error("--chunks must be in [1, 1000] and --chunk-delay-ms in [0, 1000]")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be in [1, 20]")
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60 or not 0 < args.timeout <= 120:
        parser.error("duration must be in (0, 600], warm-up in [0, 60] and timeout in (0, 120]")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown or not args.targets:
        parser.error(f"unknown targets {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    args.targets = [t for t in TARGETS if t in args.targets]
    try:
        args.variant = [Variant.parse(spec) for spec in args.variant]
    except ValueError as exc:
        parser.error(str(exc))
    if (args.variant or args.auth or args.frontier_only) and "tiergate" not in args.targets:
        parser.error("--variant, --auth and --frontier-only need the tiergate target")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()
    servers: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="tiergate-overhead-") as tmp:
        workdir = Path(tmp)
        upstream = start_upstream(workdir, args.latency_ms, args.chunks, args.chunk_delay_ms)
        servers.append(upstream)
        try:
            upstream.wait_ready(timeout_s=30)
            targets = start_targets(args, workdir, upstream, servers)
            print(f"ready: {', '.join(t.name for t in targets)}; logs in {workdir}", file=sys.stderr, flush=True)
            rows = sweep(targets, args)
        finally:
            for server in reversed(servers):
                server.stop()
    machine = machine_line(load_start, os.getloadavg())
    text = report(rows, targets, args, machine)
    print(text)
    if not args.no_append:
        with (REPO / "BENCHMARKS.md").open("a") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
