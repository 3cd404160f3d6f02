"""Feedback on outcomes and the cost report: thin handlers over `gateway.ledger`."""

from __future__ import annotations

from fastapi import Request

from gateway.body import read_json_object
from gateway.ledger.feedback import submit_feedback
from gateway.ledger.report import cost_report
from gateway.responses import JSONResponse
from gateway.state import services_of


async def post_feedback(request: Request) -> JSONResponse:
    """`{"request_id" | "session_id", "metric", "value"}`; a session's outcome applies to all of its steps.

    A client key names its own sessions as it sent them (they are stored under its key id); an admin key names any
    session by its stored id. A request id (random) is its own capability."""
    services = services_of(request)
    body = await read_json_object(request, services.settings.max_body_bytes)
    key = request.state.api_key
    scope = key.id if key is not None and not key.admin else None
    return JSONResponse(await submit_feedback(services.ledger, body, session_scope=scope))


async def get_cost_report(request: Request) -> JSONResponse:
    """`?group_by=tier|rule|model|day&since=ISO8601&until=ISO8601&metric=NAME`."""
    q = request.query_params
    report = await cost_report(
        services_of(request).ledger,
        group_by=q.get("group_by"),
        since=q.get("since"),
        until=q.get("until"),
        metric=q.get("metric"),
    )
    return JSONResponse(report)
