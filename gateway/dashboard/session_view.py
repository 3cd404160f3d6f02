"""The dashboard's session view: `GET /dashboard/sessions` (recent agent sessions) and
`GET /dashboard/sessions/{session_id}` (one session's steps in order, with tier, rule, cost and its outcome)."""

from __future__ import annotations

from fastapi import Request
from starlette.exceptions import HTTPException

from gateway.ledger.session_report import recent_sessions, session_detail
from gateway.responses import JSONResponse
from gateway.state import services_of


async def get_sessions(request: Request) -> JSONResponse:
    """`?limit=N` (1-200, default 50), newest first."""
    data = await recent_sessions(services_of(request).ledger, request.query_params.get("limit"))
    return JSONResponse(data, headers={"cache-control": "no-store"})


async def get_session(request: Request, session_id: str) -> JSONResponse:
    data = await session_detail(services_of(request).ledger, session_id)
    if data is None:
        raise HTTPException(404, f"no session {session_id!r} in the ledger")
    return JSONResponse(data, headers={"cache-control": "no-store"})
