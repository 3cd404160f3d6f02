"""`tiergate export trajectories`: the ledger's stored agent steps as JSON Lines for training.

- `flow-grpo`: one record per step of every session that has an outcome: the messages the model saw, its answer,
  the tier that answered, the session and task ids, and the session's outcome on the metric as the step's reward.
  Flow-GRPO broadcasts a run's final reward to every turn of it, and groups runs of the same task (`X-Tiergate-Task`)
  to compare them. Sessions without an outcome are left out and counted.
- `sft`: every step the frontier tier answered (escalated by the cascade, sent there by a rule, or pinned to it),
  as an OpenAI chat fine-tuning example: the prompt followed by the frontier's answer, a demonstration for the local
  model (distillation).

Only steps whose prompt and answer were stored can be exported (`ledger.store_prompts`,
`ledger.store_prompts_for_sessions` or the key's setting); the rest are counted under "prompt not stored". Rows are
read in batches and written as they come, so a large ledger does not have to fit in memory.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson
from sqlalchemy import Engine, Row, Select, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.ledger.cli import _add_source_arguments, _database_url, _ledger_settings, _safe
from gateway.ledger.database import is_transient, make_engine
from gateway.ledger.models import OutcomeRow, RequestRow, SessionRow
from gateway.ledger.settings import MetricSettings

Format = Literal["flow-grpo", "sft"]
FORMATS: tuple[Format, ...] = ("flow-grpo", "sft")

NOT_STORED = "prompt not stored"
NO_OUTCOME = "session without an outcome"
FAILED = "request failed"
NO_SESSION = "not in a session"

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_BATCH_ROWS = 500


@dataclass(frozen=True, slots=True)
class ExportQuery:
    format: Format
    metric: str
    success: MetricSettings
    since: datetime | None = None
    task_id: str | None = None


@dataclass(slots=True)
class ExportSummary:
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Steps left out, by reason."""
    sessions_without_outcome: int = 0

    def describe(self, query: ExportQuery, out: Path) -> str:
        lines = [f"wrote {self.written} {query.format} records to {out}"]
        for reason, count in sorted(self.skipped.items()):
            extra = ""
            if reason == NO_OUTCOME:
                extra = f" ({self.sessions_without_outcome} sessions with no feedback on metric {query.metric!r})"
            lines.append(f"skipped {count} steps: {reason}{extra}")
        return "\n".join(lines)


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise), or a span back from now: `30m`, `24h`, `7d`, `2w`."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative is not None:
        span = timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        return (now or datetime.now(UTC)) - span
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since must be an ISO 8601 date or time, or a span such as 24h or 7d; not {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def export_trajectories(engine: Engine, query: ExportQuery, out: TextIO) -> ExportSummary:
    """Write the records of `query` to `out`, one JSON object a line; returns what was written and skipped."""
    summary = ExportSummary()
    # An ORM session, so that rows come back as `RequestRow` objects; read `_BATCH_ROWS` at a time.
    with Session(engine) as session:
        if query.format == "flow-grpo":
            rewards = _session_rewards(session.execute(_outcomes_query(query)))
            rows = session.execute(_flow_grpo_query(query).execution_options(yield_per=_BATCH_ROWS))
            records = _flow_grpo_records(rows, rewards, query, summary)
        else:
            rows = session.execute(_sft_query(query).execution_options(yield_per=_BATCH_ROWS))
            records = _sft_records(rows, summary)
        for record in records:
            out.write(orjson.dumps(record).decode())
            out.write("\n")
            summary.written += 1
    return summary


# --- flow-grpo ---------------------------------------------------------------------------------------------------


def _outcomes_query(query: ExportQuery) -> Select[str | None, float]:
    # Oldest first, so that the latest feedback on a session wins as the rows are read (as in the cost report).
    return (
        select(OutcomeRow.session_id, OutcomeRow.value)
        .where(OutcomeRow.session_id.is_not(None), OutcomeRow.metric == query.metric)
        .order_by(OutcomeRow.created_at, OutcomeRow.id)
    )


def _session_rewards(rows: Iterator[Row[str | None, float]]) -> dict[str, float]:
    return {session_id: value for session_id, value in rows if session_id is not None}


def _flow_grpo_query(query: ExportQuery) -> Select[RequestRow, str | None]:
    stmt = (
        select(RequestRow, SessionRow.task_id)
        .join(SessionRow, SessionRow.id == RequestRow.session_id)
        # Steps in the order they were received. The stored step number is a label, not the order: the session
        # store that counts steps forgets a session (restart without Redis, TTL, eviction) and then counts from 1
        # again, and a step it could not count has none. An agent's steps are sequential (each waits on the answer
        # before), so receive times order them; the number breaks ties within a clock tick.
        .order_by(RequestRow.session_id, RequestRow.created_at, RequestRow.step, RequestRow.id)
    )
    if query.since is not None:
        # Whole sessions active since then, not their steps after it: a trajectory cut in half teaches nothing.
        stmt = stmt.where(SessionRow.last_seen >= query.since)
    if query.task_id is not None:
        stmt = stmt.where(SessionRow.task_id == query.task_id)
    return stmt


def _flow_grpo_records(
    rows: Iterator[Row[RequestRow, str | None]], rewards: dict[str, float], query: ExportQuery, summary: ExportSummary
) -> Iterator[dict[str, Any]]:
    unrated: set[str] = set()
    for request, task_id in rows:
        session_id = request.session_id or ""  # never empty: the query joins on the session
        reward = rewards.get(session_id)
        if reward is None:
            summary.skipped[NO_OUTCOME] += 1
            if session_id not in unrated:
                unrated.add(session_id)
                summary.sessions_without_outcome += 1
            continue
        reason = _unusable(request)
        if reason is not None:
            summary.skipped[reason] += 1
            continue
        yield {
            "session_id": request.session_id,
            "task_id": task_id,
            "step": request.step,
            "request_id": request.id,
            "tier": request.tier,
            "model": request.model,
            "rule": request.rule,
            "escalated": request.escalated,
            "messages": request.prompt,
            "response": request.response,
            "reward": reward,
            "success": query.success.succeeded(reward),
            "created_at": request.created_at.isoformat(),
        }


# --- sft ---------------------------------------------------------------------------------------------------------


def _sft_query(query: ExportQuery) -> Select[RequestRow, str | None]:
    stmt = (
        select(RequestRow, SessionRow.task_id)
        .outerjoin(SessionRow, SessionRow.id == RequestRow.session_id)
        .where(RequestRow.tier == "frontier")
        .order_by(RequestRow.created_at, RequestRow.id)
    )
    if query.since is not None:
        stmt = stmt.where(RequestRow.created_at >= query.since)
    if query.task_id is not None:
        stmt = stmt.where(SessionRow.task_id == query.task_id)
    return stmt


def _sft_records(rows: Iterator[Row[RequestRow, str | None]], summary: ExportSummary) -> Iterator[dict[str, Any]]:
    for request, task_id in rows:
        reason = _unusable(request)
        if reason is not None:
            summary.skipped[reason] += 1
            continue
        assert request.prompt is not None and request.response is not None  # checked by _unusable
        yield {
            "messages": [*request.prompt, request.response],
            "metadata": {
                "request_id": request.id,
                "session_id": request.session_id,
                "task_id": task_id,
                "step": request.step,
                "model": request.model,
                "rule": request.rule,
                "escalated": request.escalated,
                "created_at": request.created_at.isoformat(),
            },
        }


def _unusable(request: RequestRow) -> str | None:
    if request.status != 200:
        return FAILED
    if request.prompt is None or request.response is None:
        return NOT_STORED
    return None


# --- command line ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tiergate export", description="Export stored agent steps for training.")
    sub = parser.add_subparsers(dest="what", required=True)
    trajectories = sub.add_parser("trajectories", help="sessions as Flow-GRPO steps, or frontier answers as SFT data")
    trajectories.add_argument("--format", choices=FORMATS, required=True)
    trajectories.add_argument("--out", type=Path, required=True, help="the JSON Lines file to write")
    trajectories.add_argument(
        "--since", default=None, help="ISO 8601 date or time, or a span back from now (30m, 24h, 7d)"
    )
    trajectories.add_argument("--task", default=None, help="only sessions of this task id (X-Tiergate-Task)")
    trajectories.add_argument("--metric", default=None, help="feedback metric that is the reward (default: success)")
    _add_source_arguments(trajectories)
    args = parser.parse_args(argv)
    try:
        settings, cache_dir = _ledger_settings(args, None, None)
        url = _database_url(args, settings, cache_dir)
        metric = args.metric or settings.report_metric()
        if metric not in settings.metrics:
            raise ValueError(f"metric {metric!r} is not declared; declared: {', '.join(sorted(settings.metrics))}")
        query = ExportQuery(args.format, metric, settings.metrics[metric], parse_since(args.since), args.task)
    except ValueError as exc:
        print(f"tiergate export: {exc}", file=sys.stderr)
        return 2
    partial = args.out.with_name(args.out.name + ".partial")
    try:
        out = partial.open("w", encoding="utf-8")
    except OSError as exc:
        print(f"tiergate export: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    engine = make_engine(url)
    try:
        with out:
            summary = export_trajectories(engine, query, out)
        os.replace(partial, args.out)  # a reader never sees half a file
    except (SQLAlchemyError, OSError) as exc:
        partial.unlink(missing_ok=True)
        if not is_transient(exc):
            raise
        print(f"tiergate export: cannot export from {_safe(url)} to {args.out}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(summary.describe(query, args.out), file=sys.stderr)
    return 0
