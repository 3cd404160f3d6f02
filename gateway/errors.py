"""The one place that renders errors: every failure leaves the gateway in OpenAI's error shape.

The error tree itself lives in `router.errors`, so that every layer below the HTTP face can raise it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.responses import JSONResponse
from router.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    InvalidRequest,
    PermissionDenied,
    QueueFull,
    RateLimited,
    TiergateError,
)

log = logging.getLogger("tiergate.errors")

_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_response(error: TiergateError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def refusal_reason(error: TiergateError) -> str | None:
    """Why authentication or the limiter refused a request (the `reason` of `tiergate_refusals_total`); None for
    every other error. Decided by class and code; a busy local model (`queue_full`) is no refusal."""
    if isinstance(error, AuthenticationFailed):
        return "missing_key" if error.code == "missing_api_key" else "invalid_key"
    if isinstance(error, PermissionDenied):
        return error.code or "permission_denied"
    if isinstance(error, BudgetExceeded):
        return "budget_exceeded"
    if isinstance(error, RateLimited) and not isinstance(error, QueueFull):
        reason: str = getattr(error, "refusal", "rate_limit")  # the limiter's subclasses say which limit
        return reason
    return None


def validation_param(loc: tuple[int | str, ...]) -> str | None:
    """`("body", "messages", 0, "role")` -> `messages[0].role`, the way OpenAI names a parameter."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or "-" in str(part):
            continue  # pydantic's union-branch labels such as `function-after[...]` say nothing to a client
        else:
            out += f".{part}" if out else str(part)
    return out or None


def install_error_handlers(app: FastAPI) -> None:
    async def on_tiergate_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TiergateError)
        reason = refusal_reason(exc)
        if reason is not None:
            request.app.state.metrics.refused(reason)
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = validation_param(tuple(first.get("loc", ())))
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return error_response(InvalidRequest(message, param=param))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        body = {
            "error": {
                "message": str(exc.detail),
                "type": _HTTP_TYPES.get(exc.status_code, "invalid_request_error"),
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(TiergateError("The server had an error while processing your request."))

    app.add_exception_handler(TiergateError, on_tiergate_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
