"""The dashboard's queries: the cost report's measures per time bucket and tier, and where each rule's requests went.

`build_timeseries` splits `[since, until)` into buckets of `step_s` seconds and computes, per bucket, for each
tier and for all requests together, what `gateway.ledger.report` computes for a scope: requests, errors, spend,
successes, spend per success, savings, escalation rate, latency p50/p95, plus time to first token p50/p95. The
definitions are the report's (its outcome subqueries and its percentile), so one bucket of the series equals the
cost report over that bucket's time range; the tests hold them to it.

Values come back as columns aligned with `buckets` (one list per measure), which is what a chart draws. PostgreSQL
aggregates in SQL; SQLite, which has neither decimal sums nor percentiles, reads the rows in range and aggregates in
Python, as the report does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, case, func, literal_column, select
from sqlalchemy.sql.selectable import Subquery

from gateway.ledger.models import RequestRow
from gateway.ledger.report import Totals, _latest_outcomes, outcome_columns, percentile
from gateway.ledger.settings import MetricSettings

TOTAL = "total"
UNROUTED = "unrouted"
"""The series key of requests that ended before a tier was chosen."""
TIERS = ("local", "frontier")
MAX_BUCKETS = 1000


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    since: datetime
    """Aware UTC; the first bucket starts here."""
    until: datetime
    step_s: int
    metric: str
    success: MetricSettings

    def __post_init__(self) -> None:
        if self.step_s <= 0 or self.until <= self.since:
            raise ValueError("a series needs a positive step and until later than since")
        if self.bucket_count > MAX_BUCKETS:
            raise ValueError(f"a series has at most {MAX_BUCKETS} buckets")

    @property
    def bucket_count(self) -> int:
        return math.ceil((self.until - self.since).total_seconds() / self.step_s)

    def bucket_starts(self) -> list[datetime]:
        return [self.since + timedelta(seconds=i * self.step_s) for i in range(self.bucket_count)]

    def bucket_of(self, created_at: datetime) -> int:
        return int((created_at - self.since).total_seconds() // self.step_s)


@dataclass(slots=True)
class _Bucket(Totals):
    """The cost report's totals for one time bucket and tier, plus time to first token."""

    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    # Only while aggregating in Python:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    succeeded: set[tuple[str, str]] = field(default_factory=set)

    def finish(self) -> _Bucket:
        if self.latencies:
            self.latencies.sort()
            self.latency_p50_ms = percentile(self.latencies, 0.5)
            self.latency_p95_ms = percentile(self.latencies, 0.95)
        if self.ttfts:
            self.ttfts.sort()
            self.ttft_p50_ms = percentile(self.ttfts, 0.5)
            self.ttft_p95_ms = percentile(self.ttfts, 0.95)
        if self.succeeded:
            self.successes = len(self.succeeded)
        return self


_MEASURES = (
    "requests",
    "errors",
    "successes",
    "spend_usd",
    "counterfactual_usd",
    "savings_usd",
    "spend_per_success_usd",
    "escalation_rate",
    "escalated_after_local",
    "latency_p50_ms",
    "latency_p95_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
)


def _values(bucket: _Bucket) -> dict[str, Any]:
    values = bucket.as_dict()
    del values["successful_requests"]  # the series plots outcomes, not steps
    values["ttft_p50_ms"] = bucket.ttft_p50_ms
    values["ttft_p95_ms"] = bucket.ttft_p95_ms
    return values


def build_timeseries(engine: Engine, query: SeriesQuery) -> dict[str, Any]:
    """The series as a JSON-ready dict: `buckets` (ISO start times) and `series[key][measure]` lists aligned with
    them, for key `total`, each tier (`local` and `frontier` always) and `unrouted` where such requests exist."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            cells = _aggregate_in_sql(connection, query)
        else:
            cells = _aggregate_in_python(connection, query)
    keys = [TOTAL, *TIERS, *sorted({key for _, key in cells} - {TOTAL, *TIERS})]
    empty = _values(_Bucket())
    series: dict[str, dict[str, list[Any]]] = {}
    for key in keys:
        columns: dict[str, list[Any]] = {measure: [] for measure in _MEASURES}
        for index in range(query.bucket_count):
            cell = cells.get((index, key))
            values = _values(cell) if cell is not None else empty
            for measure in _MEASURES:
                columns[measure].append(values[measure])
        series[key] = columns
    return {
        "since": query.since.isoformat(),
        "until": query.until.isoformat(),
        "step_s": query.step_s,
        "metric": query.metric,
        "buckets": [start.isoformat() for start in query.bucket_starts()],
        "series": series,
    }


def _scoped(statement: Select[Any], query: SeriesQuery, by_request: Subquery, by_session: Subquery) -> Select[Any]:
    """Rows in the query's range, each with its own latest outcome and its session's (the report's definition)."""
    statement = statement.select_from(RequestRow).outerjoin(by_request, by_request.c.target == RequestRow.id)
    statement = statement.outerjoin(by_session, by_session.c.target == RequestRow.session_id)
    return statement.where(RequestRow.created_at >= query.since, RequestRow.created_at < query.until)


# --- PostgreSQL ---------------------------------------------------------------------------------------------------


def _aggregate_in_sql(connection: Connection, query: SeriesQuery) -> dict[tuple[int, str], _Bucket]:
    by_request, by_session, passed, target = outcome_columns(query.metric, query.success)
    # created_at is a naive UTC timestamp: its epoch is the UTC one. The numbers are written into the SQL, not bound:
    # with bound parameters the SELECT and GROUP BY expressions would differ and PostgreSQL would refuse the query.
    since: ColumnElement[float] = literal_column(repr(float(query.since.timestamp())))
    step: ColumnElement[int] = literal_column(str(int(query.step_s)))
    bucket = func.floor((func.extract("epoch", RequestRow.created_at) - since) / step)
    measures = (
        func.count(),
        func.count().filter(RequestRow.status >= 400),
        func.count(RequestRow.tier),
        func.count().filter(RequestRow.tier == "frontier"),
        func.count().filter(RequestRow.escalated),
        func.count(func.distinct(case((passed, target)))),
        func.coalesce(func.sum(RequestRow.cost_usd + RequestRow.wasted_cost_usd), 0),
        func.coalesce(func.sum(RequestRow.counterfactual_usd), 0),
        func.percentile_cont(0.5).within_group(RequestRow.latency_ms),
        func.percentile_cont(0.95).within_group(RequestRow.latency_ms),
        func.percentile_cont(0.5).within_group(RequestRow.ttft_ms),
        func.percentile_cont(0.95).within_group(RequestRow.ttft_ms),
    )
    cells: dict[tuple[int, str], _Bucket] = {}
    for by_tier in (True, False):
        keys = (bucket, RequestRow.tier) if by_tier else (bucket,)
        statement = _scoped(select(*keys, *measures), query, by_request, by_session).group_by(*keys)
        for row in connection.execute(statement):
            index = int(row[0])
            key = (row[1] or UNROUTED) if by_tier else TOTAL
            numbers = row[2:] if by_tier else row[1:]
            cells[(index, key)] = _from_sql(numbers)
    return cells


def _from_sql(row: Any) -> _Bucket:
    def number(value: Any) -> float | None:
        return float(value) if value is not None else None

    return _Bucket(
        requests=row[0],
        errors=row[1],
        routed=row[2],
        frontier=row[3],
        escalated=row[4],
        successes=row[5],
        spend=Decimal(row[6]),
        counterfactual=Decimal(row[7]),
        latency_p50_ms=number(row[8]),
        latency_p95_ms=number(row[9]),
        ttft_p50_ms=number(row[10]),
        ttft_p95_ms=number(row[11]),
    )


# --- SQLite ---------------------------------------------------------------------------------------------------------


def _aggregate_in_python(connection: Connection, query: SeriesQuery) -> dict[tuple[int, str], _Bucket]:
    columns = select(
        RequestRow.id,
        RequestRow.session_id,
        RequestRow.tier,
        RequestRow.created_at,
        RequestRow.status,
        RequestRow.escalated,
        RequestRow.cost_usd,
        RequestRow.wasted_cost_usd,
        RequestRow.counterfactual_usd,
        RequestRow.latency_ms,
        RequestRow.ttft_ms,
    )
    by_request, by_session = _latest_outcomes(query.metric)
    statement = _scoped(columns.add_columns(by_request.c.value, by_session.c.value), query, by_request, by_session)
    spec = query.success
    cells: dict[tuple[int, str], _Bucket] = {}
    for row in connection.execute(statement):
        request_id, session_id, tier, created_at, status, escalated = row[:6]
        cost, wasted, counterfactual, latency, ttft, own_value, session_value = row[6:]
        index = query.bucket_of(created_at)
        if own_value is not None:
            target, value = ("r", request_id), own_value
        else:
            target, value = ("s", session_id), session_value
        passed = value is not None and spec.succeeded(value)
        for key in (tier or UNROUTED, TOTAL):
            cell = cells.setdefault((index, key), _Bucket())
            cell.requests += 1
            cell.errors += status >= 400
            cell.routed += tier is not None
            cell.frontier += tier == "frontier"
            cell.escalated += bool(escalated)
            cell.spend += cost + wasted
            cell.counterfactual += counterfactual
            cell.latencies.append(latency)
            if ttft is not None:
                cell.ttfts.append(ttft)
            if passed:
                cell.succeeded.add(target)
    return {key: cell.finish() for key, cell in cells.items()}


# --- where each rule's requests went --------------------------------------------------------------------------------


def build_rule_breakdown(engine: Engine, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
    """Per rule that decided: requests answered locally, sent to the frontier tier by the decision, escalated to it
    after a wasted local attempt (the cascade), and failed before any tier answered; busiest rule first."""
    escalated = func.coalesce(RequestRow.escalated, False)
    statement = select(RequestRow.rule, RequestRow.tier, escalated, func.count()).group_by(
        RequestRow.rule, RequestRow.tier, escalated
    )
    if since is not None:
        statement = statement.where(RequestRow.created_at >= since)
    if until is not None:
        statement = statement.where(RequestRow.created_at < until)
    rules: dict[str, dict[str, Any]] = {}
    with engine.connect() as connection:
        for rule, tier, was_escalated, count in connection.execute(statement):
            entry = rules.setdefault(
                rule or "(none)",
                {"rule": rule or "(none)", "requests": 0, "local": 0, "frontier": 0, "escalated_after_local": 0},
            )
            entry["requests"] += count
            if tier == "local":
                entry["local"] += count
            elif tier == "frontier" and was_escalated:
                entry["escalated_after_local"] += count
            elif tier == "frontier":
                entry["frontier"] += count
    out = sorted(rules.values(), key=lambda entry: (-entry["requests"], entry["rule"]))
    for entry in out:
        routed = entry["local"] + entry["frontier"] + entry["escalated_after_local"]
        entry["unrouted"] = entry["requests"] - routed
        entry["escalation_rate"] = (entry["frontier"] + entry["escalated_after_local"]) / routed if routed else None
    return out
