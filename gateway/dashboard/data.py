"""What `/dashboard/data` answers: the ledger's series, cost report and rule breakdown for one time range, the rules
in force and the models' state, in one JSON document the page draws from.

Ranges are presets, each with a bucket size that gives the charts 48-72 points. Buckets are aligned to multiples
of their size (UTC), so that a refresh moves the window without reshuffling which request falls in which bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from gateway.ledger.database import call_db
from gateway.ledger.report import ReportQuery, build_cost_report
from gateway.ledger.timeseries import SeriesQuery, build_rule_breakdown, build_timeseries
from gateway.ledger.writer import Ledger
from router.catalog import ModelCatalog
from router.errors import InvalidRequest
from router.rule_store import RuleStore


@dataclass(frozen=True, slots=True)
class TimeRange:
    name: str
    seconds: int
    step_s: int


RANGES: tuple[TimeRange, ...] = (
    TimeRange("1h", 3600, 60),
    TimeRange("6h", 6 * 3600, 300),
    TimeRange("24h", 24 * 3600, 1800),
    TimeRange("7d", 7 * 86400, 3 * 3600),
    TimeRange("30d", 30 * 86400, 12 * 3600),
)
DEFAULT_RANGE = "24h"


def find_range(name: str | None) -> TimeRange:
    wanted = name or DEFAULT_RANGE
    for time_range in RANGES:
        if time_range.name == wanted:
            return time_range
    choices = ", ".join(r.name for r in RANGES)
    raise InvalidRequest(f"range must be one of {choices}, not {wanted!r}", param="range")


def window(time_range: TimeRange, now: datetime) -> tuple[datetime, datetime]:
    """[since, until): `until` is the end of the bucket holding `now`."""
    step = time_range.step_s
    end = (int(now.timestamp()) // step + 1) * step
    until = datetime.fromtimestamp(end, UTC)
    return until - timedelta(seconds=time_range.seconds), until


async def dashboard_data(
    ledger: Ledger,
    rules: RuleStore,
    catalog: ModelCatalog,
    *,
    range_name: str | None = None,
    metric: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Raises `InvalidRequest` for an unknown range or metric and `Unavailable` while the database is unreachable."""
    time_range = find_range(range_name)
    metrics = ledger.settings.metrics
    name = metric or ledger.settings.report_metric()
    if name not in metrics:
        raise InvalidRequest(f"metric {name!r} is not declared; declared: {', '.join(sorted(metrics))}", param="metric")
    since, until = window(time_range, now or datetime.now(UTC))
    series = SeriesQuery(since=since, until=until, step_s=time_range.step_s, metric=name, success=metrics[name])
    report = ReportQuery(group_by="tier", metric=name, success=metrics[name], since=since, until=until)
    stored = await call_db(_query_ledger, ledger.engine, series, report)
    return {
        "range": time_range.name,
        "ranges": [r.name for r in RANGES],
        "generated_at": datetime.now(UTC).isoformat(),
        **stored,
        "rules": rules_in_force(rules),
        "models": [
            {"name": b.name, "tier": b.tier, "ready": b.ready, "queue_depth": b.queue_depth} for b in catalog.backends
        ],
    }


def _query_ledger(engine: Engine, series: SeriesQuery, report: ReportQuery) -> dict[str, Any]:
    """In one worker thread: the queries over the same range."""
    return {
        "timeseries": build_timeseries(engine, series),
        "by_tier": build_cost_report(engine, report),
        "by_model": build_cost_report(engine, replace(report, group_by="model")),
        "by_rule": build_rule_breakdown(engine, series.since, series.until),
    }


def rules_in_force(rules: RuleStore) -> dict[str, Any]:
    rule_set = rules.rules
    return {
        **rules.status().as_dict(),
        "threshold": rule_set.threshold,
        "list": [
            {
                "name": rule.name,
                "action": rule.action,
                "model": rule.model,
                "fallback": rule.allow_fallback,
                "enforce": rule.enforce,
                "description": rule.description,
            }
            for rule in rule_set.rules
        ],
    }
