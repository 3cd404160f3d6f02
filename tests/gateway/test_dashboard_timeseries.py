"""The dashboard's ledger queries: each bucket of the series equals the cost report over that bucket's time range (on
SQLite and on PostgreSQL), time to first token against a hand computation, the rule breakdown against a hand count,
and the dashboard's time windows."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from gateway.dashboard.data import RANGES, find_range, window
from gateway.ledger.database import make_engine
from gateway.ledger.feedback import submit_feedback
from gateway.ledger.pricing import Pricing
from gateway.ledger.record import RequestRecord
from gateway.ledger.report import ReportQuery, build_cost_report, percentile
from gateway.ledger.settings import LedgerSettings, MetricSettings
from gateway.ledger.timeseries import SeriesQuery, build_rule_breakdown, build_timeseries
from gateway.ledger.writer import Ledger
from router.errors import InvalidRequest

PRICES = {
    "gpt-4.1": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06},
    "gpt-4.1-mini": {"input_cost_per_token": 4e-07, "output_cost_per_token": 1.6e-06},
}
STEP = 1800
SINCE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
UNTIL = SINCE + timedelta(hours=6)
PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test"}


def _postgres_url() -> Iterator[str]:
    import psycopg

    for user in ("postgres", "root"):
        try:
            with psycopg.connect(user=user, connect_timeout=3, **PG):  # type: ignore[arg-type]
                break
        except psycopg.Error:
            continue
    else:
        pytest.skip(f"no PostgreSQL server lets postgres or root in at {PG['host']}:{PG['port']}/{PG['dbname']}")
    schema = f"dashboard_test_{uuid.uuid4().hex[:10]}"

    def url(search_path: str) -> str:
        options = {"options": f"-csearch_path={search_path}"}
        return URL.create(
            "postgresql+psycopg", username=user, host=PG["host"], port=PG["port"], database="test", query=options
        ).render_as_string(hide_password=False)

    admin = create_engine(url("public"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(URL.create("sqlite", database=str(tmp_path / "ledger.sqlite3")))
    else:
        yield from _postgres_url()


def _traffic(seed: int = 7) -> tuple[list[RequestRecord], list[dict[str, Any]]]:
    """Six hours of both tiers, escalations, failures, sessions and streamed answers, plus rows just outside."""
    rng = random.Random(seed)
    records: list[RequestRecord] = []
    for i in range(120):
        offset = rng.uniform(-600, 6 * 3600 + 600)  # a few fall before `since` or after `until`
        common: dict[str, Any] = {
            "requested_model": "auto",
            "created_at": SINCE + timedelta(seconds=offset),
            "session_id": rng.choice([None, None, "s-alpha", "s-beta", "s-gamma"]),
            "rule": rng.choice(["default", "needs-tools", "too-long-for-local", None]),
            "latency_ms": round(rng.uniform(20, 4000), 3),
            "ttft_ms": round(rng.uniform(5, 900), 3) if rng.random() < 0.5 else None,
            "tokens_in": rng.randrange(20, 3000),
            "tokens_out": rng.randrange(1, 400),
        }
        kind = rng.random()
        if kind < 0.45:
            record = RequestRecord(
                f"r{i}", tier="local", model="gemma3-270m", compute_ms=rng.uniform(50, 5000), **common
            )
        elif kind < 0.9:
            escalated = rng.random() < 0.3
            record = RequestRecord(
                f"r{i}",
                tier="frontier",
                model=rng.choice(["gpt-4.1", "gpt-4.1-mini"]),
                wasted_tier="local" if escalated else None,
                wasted_model="gemma3-270m" if escalated else None,
                wasted_compute_ms=rng.uniform(100, 2000) if escalated else 0.0,
                **common,
            )
        else:
            record = RequestRecord(f"r{i}", status=502, error_class="UpstreamError", **common)
        records.append(record)
    records.append(RequestRecord("edge-since", "auto", created_at=SINCE, tier="local", model="gemma3-270m"))
    records.append(RequestRecord("edge-until", "auto", created_at=UNTIL, tier="local", model="gemma3-270m"))
    feedback: list[dict[str, Any]] = [
        {"session_id": "s-alpha", "metric": "success", "value": True},
        {"session_id": "s-beta", "metric": "success", "value": False},
    ]
    single = [r.request_id for r in records if r.session_id is None and r.tier is not None]
    feedback += [{"request_id": rid, "metric": "success", "value": rng.random() < 0.7} for rid in single[:30]]
    return records, feedback


async def _fill(ledger: Ledger, records: list[RequestRecord], feedback: list[dict[str, Any]]) -> None:
    await ledger.start()
    try:
        for record in records:
            ledger.record(record)
        await ledger.flush()
        for item in feedback:
            await submit_feedback(ledger, item)
    finally:
        await ledger.close()


@pytest.fixture
def filled(database_url: str, tmp_path: Path) -> tuple[str, list[RequestRecord]]:
    settings = LedgerSettings(database_url=database_url, batch_interval_ms=20)
    ledger = Ledger(settings, tmp_path / "cache", pricing=Pricing(PRICES, default_frontier_model="gpt-4.1"))
    records, feedback = _traffic()
    asyncio.run(_fill(ledger, records, feedback))
    return database_url, records


def test_each_bucket_equals_the_cost_report_over_its_range(filled: tuple[str, list[RequestRecord]]) -> None:
    database_url, _ = filled
    engine = make_engine(database_url)
    success = MetricSettings()
    try:
        series = build_timeseries(engine, SeriesQuery(SINCE, UNTIL, STEP, "success", success))
        assert len(series["buckets"]) == 12
        assert series["buckets"][0] == SINCE.isoformat()
        assert set(series["series"]) >= {"total", "local", "frontier", "unrouted"}
        checked = 0
        for index, start in enumerate(series["buckets"]):
            begin = datetime.fromisoformat(start)
            query = ReportQuery("tier", "success", success, since=begin, until=begin + timedelta(seconds=STEP))
            report = build_cost_report(engine, query)
            expected = {group["group"] or "unrouted": group for group in report["groups"]}
            expected["total"] = report["total"]
            for key, columns in series["series"].items():
                want = expected.get(key)
                got = {measure: values[index] for measure, values in columns.items()}
                if want is None:
                    assert got["requests"] == 0, (key, start)
                    continue
                for measure in ("requests", "errors", "successes", "escalated_after_local", "escalation_rate"):
                    assert got[measure] == want[measure], (key, start, measure)
                for measure in ("spend_usd", "counterfactual_usd", "savings_usd", "spend_per_success_usd"):
                    assert got[measure] == want[measure], (key, start, measure)
                for measure in ("latency_p50_ms", "latency_p95_ms"):
                    assert got[measure] == pytest.approx(want[measure]), (key, start, measure)
                checked += got["requests"]
        in_range = [r for r in filled[1] if SINCE <= r.created_at < UNTIL]
        assert checked == 2 * len(in_range)  # each request once in its tier and once in the total
        assert sum(series["series"]["total"]["successes"]) > 0
    finally:
        engine.dispose()


def test_time_to_first_token_percentiles(filled: tuple[str, list[RequestRecord]]) -> None:
    database_url, records = filled
    engine = make_engine(database_url)
    try:
        series = build_timeseries(engine, SeriesQuery(SINCE, UNTIL, STEP, "success", MetricSettings()))
    finally:
        engine.dispose()
    for tier in ("local", "frontier"):
        for index in range(12):
            begin = SINCE + timedelta(seconds=index * STEP)
            ttfts = sorted(
                r.ttft_ms
                for r in records
                if r.tier == tier and r.ttft_ms is not None and begin <= r.created_at < begin + timedelta(seconds=STEP)
            )
            got = series["series"][tier]
            for fraction, measure in ((0.5, "ttft_p50_ms"), (0.95, "ttft_p95_ms")):
                want = percentile(ttfts, fraction)
                assert got[measure][index] == (pytest.approx(want) if want is not None else None), (tier, index)


def test_rule_breakdown(filled: tuple[str, list[RequestRecord]]) -> None:
    database_url, records = filled
    engine = make_engine(database_url)
    try:
        rules = build_rule_breakdown(engine, SINCE, UNTIL)
    finally:
        engine.dispose()
    in_range = [r for r in records if SINCE <= r.created_at < UNTIL]
    for entry in rules:
        mine = [r for r in in_range if (r.rule or "(none)") == entry["rule"]]
        assert entry["requests"] == len(mine)
        assert entry["local"] == sum(r.tier == "local" for r in mine)
        assert entry["frontier"] == sum(r.tier == "frontier" and not r.escalated for r in mine)
        assert entry["escalated_after_local"] == sum(r.tier == "frontier" and r.escalated for r in mine)
        assert entry["unrouted"] == sum(r.tier is None for r in mine)
        routed = entry["local"] + entry["frontier"] + entry["escalated_after_local"]
        assert entry["escalation_rate"] == pytest.approx((routed - entry["local"]) / routed)
    assert sum(e["requests"] for e in rules) == len(in_range)
    assert [e["requests"] for e in rules] == sorted((e["requests"] for e in rules), reverse=True)


def test_windows_end_with_the_bucket_that_holds_now() -> None:
    now = datetime(2026, 11, 22, 13, 47, 12, tzinfo=UTC)
    since, until = window(find_range("1h"), now)
    assert until == datetime(2026, 11, 22, 13, 48, tzinfo=UTC) and until - since == timedelta(hours=1)
    since, until = window(find_range("24h"), now)
    assert until == datetime(2026, 11, 22, 14, 0, tzinfo=UTC) and since == datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    for time_range in RANGES:
        since, until = window(time_range, now)
        buckets = SeriesQuery(since, until, time_range.step_s, "success", MetricSettings()).bucket_count
        assert 48 <= buckets <= 72, time_range
    with pytest.raises(InvalidRequest) as info:
        find_range("2h")
    assert info.value.param == "range"


def test_a_series_refuses_a_bad_shape() -> None:
    with pytest.raises(ValueError):
        SeriesQuery(UNTIL, SINCE, STEP, "success", MetricSettings())
    with pytest.raises(ValueError):
        SeriesQuery(SINCE, UNTIL, 1, "success", MetricSettings())  # 21,600 buckets
