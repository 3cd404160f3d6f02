"""FastAPI dependencies that guard routes: `require_key` on `/v1/*`, `require_admin` on admin routes.

A dependency rather than middleware: it runs only on the routes that declare it, and Starlette's
`BaseHTTPMiddleware` would add latency to every request (the gateway's overhead is benchmarked). Either way the
authenticated key is left on `request.state.api_key` (None when auth is off) for the handlers and the rate limiter.
"""

from __future__ import annotations

from fastapi import Request

from gateway.auth.authenticator import Authenticator
from gateway.state import services_of


def authenticator_of(request: Request) -> Authenticator:
    return services_of(request).auth


async def require_key(request: Request) -> None:
    request.state.api_key = authenticator_of(request).authenticate(
        request.headers.get("authorization"), admin=False, path=request.url.path
    )


async def require_admin(request: Request) -> None:
    request.state.api_key = authenticator_of(request).authenticate(
        request.headers.get("authorization"), admin=True, path=request.url.path
    )
