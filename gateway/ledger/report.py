"""The cost report: what each success cost, by tier, rule, model or day.

Definitions (per group, and for the whole scope in `total`):
- spend: every dollar the requests cost, wasted attempts included (`cost_usd + wasted_cost_usd`).
- an outcome: a request's own latest feedback on the metric, else its session's latest (a session's outcome applies
  to every step of it). `successful_requests` counts requests whose outcome passes the metric's success test;
  `successes` counts the distinct outcomes that passed: a session that succeeded is one success, however many
  steps it took, so a session spanning groups counts once in each group and once in the total.
- spend per success = spend / successes (all spend in scope, not only that of the successful ones).
- escalation rate: share of the requests that were routed (have a tier) answered by the frontier tier.
- savings: what the same tokens would have cost on the default frontier model, minus spend.
- p50/p95 latency: linear interpolation between ranks (PostgreSQL's `percentile_cont`).

PostgreSQL aggregates in SQL. SQLite has neither decimal arithmetic nor percentiles, so there the rows in scope
are read and aggregated in Python (exact Decimal sums); at SQLite scale (one host) that is fast enough.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Literal, cast, get_args

from sqlalchemy import ColumnElement, Connection, Date, Engine, Select, case, func, literal, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.sql.selectable import Subquery

from gateway.ledger.database import call_db
from gateway.ledger.models import OutcomeRow, RequestRow
from gateway.ledger.pricing import quantize
from gateway.ledger.settings import MetricSettings
from gateway.ledger.writer import Ledger
from router.errors import InvalidRequest

GroupBy = Literal["tier", "rule", "model", "day"]
GROUP_BY_CHOICES: tuple[str, ...] = get_args(GroupBy)


@dataclass(frozen=True, slots=True)
class ReportQuery:
    group_by: GroupBy
    metric: str
    success: MetricSettings
    since: datetime | None = None
    until: datetime | None = None


def parse_report_query(
    metrics: Mapping[str, MetricSettings],
    *,
    group_by: str | None = None,
    since: str | None = None,
    until: str | None = None,
    metric: str | None = None,
    default_metric: str = "success",
) -> ReportQuery:
    """Check the query's values (strings, as they come from a URL or a command line); raises `InvalidRequest`."""
    group = group_by or "tier"
    if group not in GROUP_BY_CHOICES:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUP_BY_CHOICES)}, not {group!r}", param="group_by")
    name = metric or default_metric
    if name not in metrics:
        raise InvalidRequest(f"metric {name!r} is not declared; declared: {', '.join(sorted(metrics))}", param="metric")
    start, end = _parse_time(since, "since"), _parse_time(until, "until")
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("until must be later than since", param="until")
    return ReportQuery(group_by=cast(GroupBy, group), metric=name, success=metrics[name], since=start, until=end)


def _parse_time(value: str | None, param: str) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value.strip()), time())
        except ValueError:
            raise InvalidRequest(f"{param} must be an ISO 8601 date or time, not {value!r}", param=param) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


async def cost_report(
    ledger: Ledger,
    *,
    group_by: str | None = None,
    since: str | None = None,
    until: str | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """`GET /v1/reports/cost`: the report as a JSON-ready dict (money as decimal strings). Raises `InvalidRequest`
    for a bad query and `Unavailable` while the database is unreachable."""
    query = parse_report_query(
        ledger.settings.metrics,
        group_by=group_by,
        since=since,
        until=until,
        metric=metric,
        default_metric=ledger.settings.report_metric(),
    )
    return await call_db(build_cost_report, ledger.engine, query)


def build_cost_report(engine: Engine, query: ReportQuery) -> dict[str, Any]:
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            groups, total = _aggregate_in_sql(connection, query)
        else:
            groups, total = _aggregate_in_python(connection, query)
    ordered = sorted(groups.items(), key=lambda item: (item[0] is None, item[0] or ""))
    return {
        "group_by": query.group_by,
        "metric": query.metric,
        "since": query.since.isoformat() if query.since else None,
        "until": query.until.isoformat() if query.until else None,
        "groups": [{"group": key, **totals.as_dict()} for key, totals in ordered],
        "total": total.as_dict(),
    }


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    routed: int = 0
    frontier: int = 0
    escalated: int = 0
    successes: int = 0
    successful_requests: int = 0
    spend: Decimal = Decimal(0)
    counterfactual: Decimal = Decimal(0)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        per_success = quantize(self.spend / self.successes) if self.successes else None
        return {
            "requests": self.requests,
            "errors": self.errors,
            "successes": self.successes,
            "successful_requests": self.successful_requests,
            "spend_usd": money(self.spend),
            "spend_per_success_usd": money(per_success) if per_success is not None else None,
            "counterfactual_usd": money(self.counterfactual),
            "savings_usd": money(self.counterfactual - self.spend),
            "escalation_rate": self.frontier / self.routed if self.routed else None,
            "escalated_after_local": self.escalated,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
        }


def money(amount: Decimal) -> str:
    """A decimal string with the ledger's 12 places at most."""
    return format(quantize(amount).normalize(), "f")


# --- shared pieces ------------------------------------------------------------------------------------------------


def _latest_outcomes(metric: str) -> tuple[Subquery, Subquery]:
    """The latest value on `metric` per request and per session."""

    def latest(target: Any, name: str) -> Subquery:
        newest = select(func.max(OutcomeRow.id)).where(OutcomeRow.metric == metric, target.is_not(None))
        return (
            select(target.label("target"), OutcomeRow.value)
            .where(OutcomeRow.id.in_(newest.group_by(target)))
            .subquery(name)
        )

    return latest(OutcomeRow.request_id, "by_request"), latest(OutcomeRow.session_id, "by_session")


def _scoped(query: Select[Any], report: ReportQuery, by_request: Subquery, by_session: Subquery) -> Select[Any]:
    query = query.select_from(RequestRow).outerjoin(by_request, by_request.c.target == RequestRow.id)
    query = query.outerjoin(by_session, by_session.c.target == RequestRow.session_id)
    if report.since is not None:
        query = query.where(RequestRow.created_at >= report.since)
    if report.until is not None:
        query = query.where(RequestRow.created_at < report.until)
    return query


# --- PostgreSQL ---------------------------------------------------------------------------------------------------


def outcome_columns(
    metric: str, spec: MetricSettings
) -> tuple[Subquery, Subquery, ColumnElement[bool], ColumnElement[str]]:
    """In SQL: the latest outcome per request and per session, whether a row's outcome passed (its own, else its
    session's), and what one success is (`r:<request>` or `s:<session>`: a successful session counts once)."""
    by_request, by_session = _latest_outcomes(metric)
    value = func.coalesce(by_request.c.value, by_session.c.value)
    passed: ColumnElement[bool]
    if spec.type == "boolean":
        passed = value >= 0.5
    elif spec.higher_is_better:
        passed = value >= spec.threshold
    else:
        passed = value <= spec.threshold
    target = case(
        (by_request.c.value.is_not(None), literal("r:") + RequestRow.id),
        else_=literal("s:") + RequestRow.session_id,
    )
    return by_request, by_session, passed, target


def _aggregate_in_sql(connection: Connection, report: ReportQuery) -> tuple[dict[Any, Totals], Totals]:
    by_request, by_session, passed, target = outcome_columns(report.metric, report.success)
    measures = (
        func.count(),
        func.count().filter(RequestRow.status >= 400),
        func.count(RequestRow.tier),
        func.count().filter(RequestRow.tier == "frontier"),
        func.count().filter(RequestRow.escalated),
        func.count(func.distinct(case((passed, target)))),
        func.count().filter(passed),
        func.coalesce(func.sum(RequestRow.cost_usd + RequestRow.wasted_cost_usd), 0),
        func.coalesce(func.sum(RequestRow.counterfactual_usd), 0),
        func.percentile_cont(0.5).within_group(RequestRow.latency_ms),
        func.percentile_cont(0.95).within_group(RequestRow.latency_ms),
    )
    keys: dict[str, Any] = {
        "tier": RequestRow.tier,
        "rule": RequestRow.rule,
        "model": RequestRow.model,
        "day": sql_cast(RequestRow.created_at, Date),
    }
    key = keys[report.group_by]
    grouped = _scoped(select(key, *measures), report, by_request, by_session).group_by(key)
    groups = {_key_text(row[0]): _totals(row[1:]) for row in connection.execute(grouped)}
    total_row = connection.execute(_scoped(select(*measures), report, by_request, by_session)).one()
    return groups, _totals(total_row)


def _key_text(key: Any) -> Any:
    return key.isoformat() if isinstance(key, date) else key


def _totals(row: Any) -> Totals:
    p50, p95 = row[9], row[10]
    return Totals(
        requests=row[0],
        errors=row[1],
        routed=row[2],
        frontier=row[3],
        escalated=row[4],
        successes=row[5],
        successful_requests=row[6],
        spend=Decimal(row[7]),
        counterfactual=Decimal(row[8]),
        latency_p50_ms=float(p50) if p50 is not None else None,
        latency_p95_ms=float(p95) if p95 is not None else None,
    )


# --- SQLite ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Accumulator:
    totals: Totals = field(default_factory=Totals)
    latencies: list[float] = field(default_factory=list)
    succeeded: set[tuple[str, str]] = field(default_factory=set)

    def finish(self) -> Totals:
        self.latencies.sort()
        self.totals.latency_p50_ms = percentile(self.latencies, 0.5)
        self.totals.latency_p95_ms = percentile(self.latencies, 0.95)
        self.totals.successes = len(self.succeeded)
        return self.totals


def _aggregate_in_python(connection: Connection, report: ReportQuery) -> tuple[dict[Any, Totals], Totals]:
    by_request, by_session = _latest_outcomes(report.metric)
    columns = (
        RequestRow.id,
        RequestRow.session_id,
        RequestRow.tier,
        RequestRow.rule,
        RequestRow.model,
        RequestRow.created_at,
        RequestRow.status,
        RequestRow.escalated,
        RequestRow.cost_usd,
        RequestRow.wasted_cost_usd,
        RequestRow.counterfactual_usd,
        RequestRow.latency_ms,
        by_request.c.value,
        by_session.c.value,
    )
    query = _scoped(select(*columns), report, by_request, by_session)
    groups: dict[Any, _Accumulator] = {}
    total = _Accumulator()
    spec = report.success
    for row in connection.execute(query):
        request_id, session_id, tier, rule, model, created_at = row[:6]
        status, escalated, cost, wasted, counterfactual, latency, own_value, session_value = row[6:]
        key = (
            created_at.date().isoformat()
            if report.group_by == "day"
            else {"tier": tier, "rule": rule, "model": model}[report.group_by]
        )
        if own_value is not None:
            target, value = ("r", request_id), own_value
        else:
            target, value = ("s", session_id), session_value
        passed = value is not None and spec.succeeded(value)
        for accumulator in (groups.setdefault(key, _Accumulator()), total):
            totals = accumulator.totals
            totals.requests += 1
            totals.errors += status >= 400
            totals.routed += tier is not None
            totals.frontier += tier == "frontier"
            totals.escalated += bool(escalated)
            totals.spend += cost + wasted
            totals.counterfactual += counterfactual
            accumulator.latencies.append(latency)
            if passed:
                totals.successful_requests += 1
                accumulator.succeeded.add(target)
    return {key: accumulator.finish() for key, accumulator in groups.items()}, total.finish()


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's `percentile_cont` (and numpy's default) do."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- the table ------------------------------------------------------------------------------------------------------


_COLUMNS = (
    ("requests", "requests"),
    ("successes", "successes"),
    ("spend_usd", "spend $"),
    ("spend_per_success_usd", "$/success"),
    ("escalation_rate", "escalated"),
    ("savings_usd", "saved $"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p95_ms", "p95 ms"),
)


def format_report_table(report: Mapping[str, Any]) -> str:
    """The report as a fixed-width text table, one line per group and a total."""
    header = [str(report["group_by"]), *(title for _, title in _COLUMNS)]
    lines = [
        [_cell(group["group"], "group"), *(_cell(group[name], name) for name, _ in _COLUMNS)]
        for group in report["groups"]
    ]
    lines.append(["total", *(_cell(report["total"][name], name) for name, _ in _COLUMNS)])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    rendered = [header, ["-" * width for width in widths], *lines]
    aligned = [
        "  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))])
        for row in rendered
    ]
    text = "\n".join(aligned)
    scope = f"metric {report['metric']}; since {report['since'] or 'the start'}; until {report['until'] or 'now'}"
    return f"{text}\n({scope})"


def _cell(value: Any, name: str) -> str:
    if value is None:
        return "-"
    if name.endswith("_usd"):
        return f"{Decimal(value):.6f}"
    if name == "escalation_rate":
        return f"{value:.1%}"
    if name.endswith("_ms"):
        return f"{value:.1f}"
    return str(value)
