"""Ledger benchmark: rows per second the writer sustains into SQLite and PostgreSQL, and what `record()` adds to a
request at 200 requests per second.

    .venv/bin/python bench/ledger.py [--rows 50000] [--seconds 10] [--no-postgres] [--no-append]

Throughput: N records are queued as fast as possible and `close()` returns once every row is in the database; rows
per second = N / (time from the first record() to close() returning). Rows are priced in the writer thread, as in
the server. Latency: an open-loop schedule calls `record()` every 5 ms on the event loop while the writer writes to
SQLite; it reports the time inside `record()` alone, and inside building the `RequestRecord` plus `record()`, and,
for context, how late the event loop woke for each tick while rows were being written against rounds in between
with no rows (the writer thread competes with the event loop for the GIL). Figures are appended to BENCHMARKS.md
with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from gateway.ledger.pricing import Pricing, load_price_map
from gateway.ledger.record import RequestRecord
from gateway.ledger.settings import LedgerSettings
from gateway.ledger.writer import Ledger

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql+psycopg://{user}@127.0.0.1:5432/test"


def make_record(i: int, request_id: str | None = None) -> RequestRecord:
    frontier = i % 3 == 0
    return RequestRecord(
        request_id=request_id or f"bench-{uuid.uuid4().hex}",
        requested_model="auto",
        session_id=f"session-{i % 50}",
        api_key_id="key-1",
        tier="frontier" if frontier else "local",
        model="gpt-4.1" if frontier else "gemma3-270m",
        rule="default",
        score=0.42,
        signals={"tokens": 1834, "tools": 3, "user_turns": 2, "code": False, "stall": 0},
        tokens_in=1834,
        tokens_out=212,
        tokens_cached=1024 if frontier else 0,
        compute_ms=0.0 if frontier else 3712.5,
        latency_ms=812.4,
        ttft_ms=120.3,
        compression_tokens_before=2410,
        compression_tokens_after=1834,
    )


async def throughput(settings: LedgerSettings, cache_dir: Path, pricing: Pricing, rows: int) -> float:
    ledger = Ledger(settings, cache_dir, pricing=pricing)
    await ledger.start()
    records = [make_record(i) for i in range(rows)]
    started = time.perf_counter()
    for record in records:
        ledger.record(record)
        if ledger.stats().queued > settings.queue_max_rows * 0.9:
            await asyncio.sleep(0.001)  # stay under the bound: measure the writer, not drops
    await ledger.close()
    elapsed = time.perf_counter() - started
    stats = ledger.stats()
    if stats.written != rows:
        raise RuntimeError(f"wrote {stats.written} of {rows} rows: {stats}")
    return rows / elapsed


async def loop_lateness(seconds: float, rate: int, ledger: Ledger | None) -> dict[str, list[float]]:
    """Call record() on an open-loop schedule; returns microseconds per call and the loop's lateness per tick."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    inside, with_build, late = [], [], []
    start = loop.time() + 0.05
    ids = [f"chatcmpl-{uuid.uuid4().hex}" for _ in range(int(seconds * rate))]  # the gateway has its id already
    for tick in range(int(seconds * rate)):
        due = start + tick * period
        await asyncio.sleep(max(0.0, due - loop.time()))
        late.append((loop.time() - due) * 1e6)
        if ledger is None:
            continue
        t0 = time.perf_counter_ns()
        record = make_record(tick, ids[tick])
        t1 = time.perf_counter_ns()
        ledger.record(record)
        t2 = time.perf_counter_ns()
        inside.append((t2 - t1) / 1000)
        with_build.append((t2 - t0) / 1000)
    return {"record": inside, "build+record": with_build, "loop lateness": late}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def postgres_user() -> str | None:
    for user in ("postgres", "root"):
        engine = create_engine(PG_ADMIN_URL.format(user=user), connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                return user
        except Exception:  # no server, or this role is not let in: try the next
            continue
        finally:
            engine.dispose()
    return None


async def main(args: argparse.Namespace) -> list[str]:
    price_map: Mapping[str, Mapping[str, Any]] = load_price_map()
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        targets: list[tuple[str, str]] = [("SQLite (WAL, file)", f"sqlite:///{work / 'bench.sqlite3'}")]
        schema = f"ledger_bench_{uuid.uuid4().hex[:8]}"
        user = postgres_user() if not args.no_postgres else None
        admin = create_engine(PG_ADMIN_URL.format(user=user)) if user else None
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            targets.append(
                ("PostgreSQL 127.0.0.1", PG_ADMIN_URL.format(user=user) + f"?options=-csearch_path%3D{schema}")
            )
        elif not args.no_postgres:
            print("PostgreSQL: no server answers at 127.0.0.1:5432; skipped", file=sys.stderr)
        try:
            lines.append("| target | batch rows | rows | rows/s |")
            lines.append("|---|---:|---:|---:|")
            for name, url in targets:
                for batch in (100, 500, 2000):
                    settings = LedgerSettings(database_url=url, batch_max_rows=batch, queue_max_rows=100_000)
                    pricing = Pricing.from_settings(settings, price_map)
                    rate = await throughput(settings, work / f"cache-{batch}", pricing, args.rows)
                    lines.append(f"| {name} | {batch} | {args.rows} | {rate:,.0f} |")
                    print(lines[-1], flush=True)
        finally:
            if admin is not None:
                with admin.begin() as connection:
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()

        settings = LedgerSettings(database_url=targets[0][1])
        ledger = Ledger(settings, work / "cache-latency", pricing=Pricing.from_settings(settings, price_map))
        await ledger.start()
        # Rounds alternate (ledger recording, then not) so that both see the same machine: it is shared and noisy.
        measured: dict[str, list[float]] = {"record": [], "build+record": [], "loop lateness": []}
        baseline: list[float] = []
        rounds = 5
        for _ in range(rounds):
            for key, values in (await loop_lateness(args.seconds / rounds, 200, ledger)).items():
                measured[key] += values
            baseline += (await loop_lateness(args.seconds / rounds, 200, None))["loop lateness"]
        await ledger.close()
    lines.append("")
    lines.append(f"At 200 calls/s for {args.seconds:g} s ({len(measured['record'])} calls), writer on SQLite:")
    lines.append("")
    lines.append("| measured | p50 µs | p99 µs | max µs |")
    lines.append("|---|---:|---:|---:|")
    for label, values in (
        ("record() alone", measured["record"]),
        ("RequestRecord(...) + record()", measured["build+record"]),
        ("event-loop lateness, ledger writing", measured["loop lateness"]),
        ("event-loop lateness, ledger idle (rounds in between)", baseline),
    ):
        lines.append(f"| {label} | {pct(values, 0.5):.1f} | {pct(values, 0.99):.1f} | {max(values):.1f} |")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-append", action="store_true", help="print only; leave BENCHMARKS.md alone")
    arguments = parser.parse_args()
    table = asyncio.run(main(arguments))
    print("\n".join(table))
    if not arguments.no_append:
        command = "python " + " ".join(["bench/ledger.py", *sys.argv[1:]])
        load = os.getloadavg()[0]
        header = (
            f"\n## Ledger (issue 4): writer throughput and record() latency, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
            f"Command: `.venv/bin/{command}`  \n"
            f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load:.1f} at the end "
            "(other work shared the machine).\n\n"
        )
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as out:
            out.write(header + "\n".join(table) + "\n")
