"""Feedback: declared metrics only, for a request or a whole session, the latest winning."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import LedgerFactory
from ledger_testkit import frontier_record, local_record

from gateway.ledger.feedback import submit_feedback
from gateway.ledger.report import cost_report
from gateway.ledger.settings import MetricSettings
from gateway.ledger.writer import Ledger
from router.errors import InvalidRequest

METRICS = {
    "success": MetricSettings(type="boolean"),
    "steps_over_budget": MetricSettings(type="float", higher_is_better=False, threshold=0.0),
}


def _with_ledger(ledger: Ledger, scenario: Callable[[Ledger], Awaitable[None]]) -> None:
    async def run() -> None:
        await ledger.start()
        try:
            await scenario(ledger)
        finally:
            await ledger.close()

    asyncio.run(run())


def test_a_sessions_outcome_marks_every_step_of_it(database_url: str, make_ledger: LedgerFactory) -> None:
    async def scenario(ledger: Ledger) -> None:
        for i in range(3):
            ledger.record(local_record(f"step{i}", session_id="run-7"))
        ledger.record(frontier_record("elsewhere", session_id="run-8"))
        await ledger.flush()
        stored = await submit_feedback(ledger, {"session_id": "run-7", "metric": "success", "value": True})
        assert (stored["session_id"], stored["metric"], stored["value"]) == ("run-7", "success", True)

        report = await cost_report(ledger)
        assert (report["total"]["successful_requests"], report["total"]["successes"]) == (3, 1)

        ledger.record(frontier_record("step3", session_id="run-7"))  # a step after the outcome arrived
        await ledger.flush()
        report = await cost_report(ledger, group_by="tier")
        by_tier = {group["group"]: group for group in report["groups"]}
        assert report["total"]["successful_requests"] == 4
        assert report["total"]["successes"] == 1, "one session is one outcome, however many steps it took"
        assert (by_tier["local"]["successful_requests"], by_tier["frontier"]["successful_requests"]) == (3, 1)

    _with_ledger(make_ledger(database_url), scenario)


def test_a_requests_own_outcome_wins_over_its_sessions_and_the_latest_wins(
    sqlite_url: str, make_ledger: LedgerFactory
) -> None:
    async def scenario(ledger: Ledger) -> None:
        for i in range(3):
            ledger.record(local_record(f"step{i}", session_id="run"))
        await ledger.flush()
        await submit_feedback(ledger, {"session_id": "run", "metric": "success", "value": True})
        await submit_feedback(ledger, {"request_id": "step1", "metric": "success", "value": True})
        await submit_feedback(ledger, {"request_id": "step1", "metric": "success", "value": False})
        total = (await cost_report(ledger))["total"]
        assert total["successful_requests"] == 2  # step1's own latest outcome is a failure
        assert total["successes"] == 1

    _with_ledger(make_ledger(sqlite_url), scenario)


def test_feedback_on_a_request_whose_row_is_still_queued_is_accepted(
    sqlite_url: str, make_ledger: LedgerFactory
) -> None:
    async def scenario(ledger: Ledger) -> None:
        ledger.record(frontier_record("just-answered"))
        stored = await submit_feedback(ledger, {"request_id": "just-answered", "metric": "success", "value": True})
        assert stored["request_id"] == "just-answered"
        assert (await cost_report(ledger))["total"]["successes"] == 1

    _with_ledger(make_ledger(sqlite_url, batch_interval_ms=60_000), scenario)


def test_a_float_metric_succeeds_on_the_better_side_of_its_threshold(
    database_url: str, make_ledger: LedgerFactory
) -> None:
    async def scenario(ledger: Ledger) -> None:
        for name in ("a", "b", "c"):
            ledger.record(frontier_record(name))
        await ledger.flush()
        for name, value in (("a", 0), ("b", 2.5), ("c", -1)):
            await submit_feedback(ledger, {"request_id": name, "metric": "steps_over_budget", "value": value})
        report = await cost_report(ledger, metric="steps_over_budget")
        assert report["total"]["successes"] == 2  # lower is better, threshold 0: a and c

    _with_ledger(make_ledger(database_url, metrics=METRICS), scenario)


@pytest.mark.parametrize(
    ("payload", "param", "code"),
    [
        ({"request_id": "known", "metric": "thumbs", "value": True}, "metric", None),
        ({"request_id": "known", "metric": "success", "value": 0.7}, "value", None),
        ({"request_id": "known", "metric": "steps_over_budget", "value": True}, "value", None),
        ({"request_id": "known", "metric": "success", "value": "yes"}, "value", None),
        ({"metric": "success", "value": True}, "request_id", None),
        ({"request_id": "known", "session_id": "s", "metric": "success", "value": True}, "request_id", None),
        ({"request_id": "known", "metric": "success", "value": True, "comment": "x"}, "comment", None),
        ({"request_id": "never-seen", "metric": "success", "value": True}, "request_id", "not_found"),
        ({"session_id": "never-seen", "metric": "success", "value": True}, "session_id", "not_found"),
    ],
)
def test_bad_feedback_is_refused_with_the_field_that_is_wrong(
    payload: dict[str, Any], param: str, code: str | None, sqlite_url: str, make_ledger: LedgerFactory
) -> None:
    async def scenario(ledger: Ledger) -> None:
        ledger.record(frontier_record("known"))
        await ledger.flush()
        with pytest.raises(InvalidRequest) as refused:
            await submit_feedback(ledger, payload)
        assert (refused.value.param, refused.value.code, refused.value.status) == (param, code, 400)

    _with_ledger(make_ledger(sqlite_url, metrics=METRICS), scenario)
