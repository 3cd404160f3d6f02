"""The cost report against a hand computation over the same rows, read back from the database."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy
import pytest
from conftest import LedgerFactory
from ledger_testkit import frontier_record, local_record
from sqlalchemy import select

from gateway.ledger.cli import report_main
from gateway.ledger.database import make_engine
from gateway.ledger.feedback import submit_feedback
from gateway.ledger.models import OutcomeRow, RequestRow
from gateway.ledger.record import RequestRecord
from gateway.ledger.report import cost_report
from gateway.ledger.settings import LedgerSettings
from gateway.ledger.writer import Ledger
from router.errors import InvalidRequest

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def _traffic(seed: int = 4) -> tuple[list[RequestRecord], list[dict[str, Any]]]:
    """Three days of mixed traffic (sessions and single requests, both tiers, escalations, failures) and feedback."""
    rng = random.Random(seed)
    records: list[RequestRecord] = []
    for i in range(90):
        created = NOW - timedelta(days=rng.choice([0, 1, 2]), minutes=rng.randrange(600))
        session = rng.choice([None, "alpha", "beta", "gamma", "delta", "epsilon"])
        common: dict[str, Any] = {
            "created_at": created,
            "session_id": session,
            "rule": rng.choice([None, "default", "tools-heavy", "long-context"]),
            "latency_ms": round(rng.uniform(20, 4000), 3),
            "tokens_in": rng.randrange(50, 6000),
            "tokens_out": rng.randrange(1, 700),
        }
        kind = rng.random()
        if kind < 0.45:
            records.append(local_record(f"req-{i}", compute_ms=rng.uniform(100, 9000), **common))
        elif kind < 0.9:
            escalated = rng.random() < 0.3
            records.append(
                frontier_record(
                    f"req-{i}",
                    model=rng.choice(["gpt-4.1", "gpt-4.1-mini"]),
                    tokens_cached=rng.choice([0, 0, 32]),
                    wasted_tier="local" if escalated else None,
                    wasted_model="gemma3-270m" if escalated else None,
                    wasted_compute_ms=rng.uniform(100, 3000) if escalated else 0.0,
                    **common,
                )
            )
        else:
            records.append(RequestRecord(f"req-{i}", "auto", status=502, error_class="UpstreamError", **common))
    feedback: list[dict[str, Any]] = [
        {"session_id": "alpha", "metric": "success", "value": True},
        {"session_id": "beta", "metric": "success", "value": False},
        {"session_id": "gamma", "metric": "success", "value": False},
        {"session_id": "gamma", "metric": "success", "value": True},  # the latest wins
    ]
    single = [r.request_id for r in records if r.session_id is None]
    in_sessions = [r.request_id for r in records if r.session_id in ("alpha", "delta")]
    for request_id in single[:12] + in_sessions[:3]:
        feedback.append({"request_id": request_id, "metric": "success", "value": rng.random() < 0.6})
    return records, feedback


def _hand_report(database_url: str, group_by: str, since: datetime | None) -> dict[Any, dict[str, Any]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            requests = list(connection.execute(select(RequestRow.__table__)))
            outcomes = list(connection.execute(select(OutcomeRow.__table__).order_by(OutcomeRow.id)))
    finally:
        engine.dispose()
    own = {o.request_id: o.value for o in outcomes if o.request_id is not None}  # ordered by id: the last wins
    of_session = {o.session_id: o.value for o in outcomes if o.session_id is not None}
    groups: dict[Any, list[Any]] = defaultdict(list)
    for row in requests:
        if since is not None and row.created_at < since:
            continue
        key = row.created_at.date().isoformat() if group_by == "day" else getattr(row, group_by)
        groups[key].append(row)
        groups["__total__"].append(row)
    expected = {}
    for key, rows in groups.items():
        spend = sum((r.cost_usd + r.wasted_cost_usd for r in rows), Decimal(0))
        counterfactual = sum((r.counterfactual_usd for r in rows), Decimal(0))
        won: set[str] = set()
        successful_requests = 0
        for r in rows:
            if r.id in own:
                target, value = "request " + r.id, own[r.id]
            else:
                target, value = "session " + str(r.session_id), of_session.get(r.session_id)
            if value == 1.0:
                won.add(target)
                successful_requests += 1
        routed = [r for r in rows if r.tier is not None]
        p50, p95 = numpy.percentile([r.latency_ms for r in rows], [50, 95])
        expected[key] = {
            "requests": len(rows),
            "errors": sum(1 for r in rows if r.status >= 400),
            "successes": len(won),
            "successful_requests": successful_requests,
            "spend": spend,
            "per_success": spend / len(won) if won else None,
            "savings": counterfactual - spend,
            "escalation_rate": sum(1 for r in routed if r.tier == "frontier") / len(routed) if routed else None,
            "escalated": sum(1 for r in rows if r.escalated),
            "p50": p50,
            "p95": p95,
        }
    return expected


def _assert_matches(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["requests"] == want["requests"]
    assert got["errors"] == want["errors"]
    assert got["successes"] == want["successes"]
    assert got["successful_requests"] == want["successful_requests"]
    assert Decimal(got["spend_usd"]) == want["spend"]
    if want["per_success"] is None:
        assert got["spend_per_success_usd"] is None
    else:
        assert Decimal(got["spend_per_success_usd"]) == want["per_success"].quantize(Decimal("1e-12"))
    assert Decimal(got["savings_usd"]) == want["savings"]
    assert got["escalation_rate"] == pytest.approx(want["escalation_rate"])
    assert got["escalated_after_local"] == want["escalated"]
    assert got["latency_p50_ms"] == pytest.approx(want["p50"])
    assert got["latency_p95_ms"] == pytest.approx(want["p95"])


def _fill(ledger: Ledger) -> None:
    records, feedback = _traffic()

    async def scenario() -> None:
        await ledger.start()
        for record in records:
            ledger.record(record)
        await ledger.flush()
        for payload in feedback:
            await submit_feedback(ledger, payload)
        await ledger.close()

    asyncio.run(scenario())


def test_the_report_equals_a_hand_computation_on_the_same_rows(database_url: str, make_ledger: LedgerFactory) -> None:
    ledger = make_ledger(database_url)
    _fill(ledger)

    async def reports() -> list[tuple[str, datetime | None, dict[str, Any]]]:
        await ledger.start()
        try:
            since = NOW - timedelta(days=1, hours=12)
            return [
                (
                    group_by,
                    cutoff,
                    await cost_report(ledger, group_by=group_by, since=cutoff.isoformat() if cutoff else None),
                )
                for group_by in ("tier", "rule", "model", "day")
                for cutoff in (None, since)
            ]
        finally:
            await ledger.close()

    for group_by, since, report in asyncio.run(reports()):
        expected = _hand_report(database_url, group_by, since)
        assert {group["group"] for group in report["groups"]} == set(expected) - {"__total__"}
        for group in report["groups"]:
            _assert_matches(group, expected[group["group"]])
        _assert_matches(report["total"], expected["__total__"])
        assert report["total"]["successes"] > 0 and Decimal(report["total"]["savings_usd"]) != 0


def test_tiergate_report_prints_the_same_numbers(
    sqlite_url: str, make_ledger: LedgerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = make_ledger(sqlite_url)
    _fill(ledger)
    capsys.readouterr()
    source = ["--database-url", sqlite_url]
    assert report_main(["--group-by", "tier", "--json", *source], settings=ledger.settings, cache_dir=tmp_path) == 0
    report = json.loads(capsys.readouterr().out)
    assert report_main(["--group-by", "tier", *source], settings=ledger.settings, cache_dir=tmp_path) == 0
    table = capsys.readouterr().out.splitlines()

    rows = {line.split()[0]: line.split() for line in table[2:-1]}
    assert set(rows) == {"local", "frontier", "-", "total"}  # "-": requests that failed before routing
    total = rows["total"]
    assert int(total[1]) == report["total"]["requests"] and int(total[2]) == report["total"]["successes"]
    assert Decimal(total[3]) == Decimal(report["total"]["spend_usd"]).quantize(Decimal("0.000001"))


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"group_by": "weekday"}, "group_by"),
        ({"since": "last tuesday"}, "since"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
        ({"metric": "thumbs"}, "metric"),
    ],
)
def test_a_bad_report_query_is_refused(
    query: dict[str, str], param: str, sqlite_url: str, make_ledger: LedgerFactory
) -> None:
    async def scenario() -> None:
        ledger = make_ledger(sqlite_url)
        await ledger.start()
        try:
            with pytest.raises(InvalidRequest) as refused:
                await cost_report(ledger, **query)
            assert refused.value.param == param
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_an_empty_ledger_reports_zeroes_not_errors(sqlite_url: str, make_ledger: LedgerFactory) -> None:
    async def scenario() -> dict[str, Any]:
        ledger = make_ledger(sqlite_url, metrics=LedgerSettings().metrics)
        await ledger.start()
        try:
            return await cost_report(ledger, group_by="day", since="2026-01-01T00:00:00Z")
        finally:
            await ledger.close()

    report = asyncio.run(scenario())
    assert report["groups"] == []
    assert report["total"]["requests"] == 0 and report["total"]["spend_per_success_usd"] is None
    assert report["since"] == "2026-01-01T00:00:00+00:00"
