"""Thin handlers: `/metrics` for Prometheus, `/dashboard` (the page and its two assets) and `/dashboard/data`."""

from __future__ import annotations

from importlib.resources import files

from fastapi import Request
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException

from gateway.dashboard.data import dashboard_data
from gateway.metrics import GatewayMetrics
from gateway.responses import JSONResponse
from gateway.state import services_of

# The page loads only its own two files and its own JSON: nothing from elsewhere, no inline script.
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}
_ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "auth.js": "text/javascript; charset=utf-8",  # asks for an admin key when the data answers 401 or 403
    "sessions.js": "text/javascript; charset=utf-8",  # the session view
    "dashboard.css": "text/css; charset=utf-8",
}


def metrics_of(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


async def get_metrics(request: Request) -> Response:
    """Prometheus text format, or OpenMetrics when the scraper asks for it."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics_of(request).registry), headers={"content-type": content_type})


async def get_dashboard(_: Request) -> Response:
    return Response(_read("index.html"), headers={**_SECURITY_HEADERS, "content-type": "text/html; charset=utf-8"})


async def get_dashboard_asset(name: str) -> Response:
    content_type = _ASSETS.get(name)
    if content_type is None:
        raise HTTPException(404, f"no dashboard asset {name!r}")
    return Response(_read(name), headers={**_SECURITY_HEADERS, "content-type": content_type})


async def get_dashboard_data(request: Request) -> JSONResponse:
    """`?range=1h|6h|24h|7d|30d&metric=NAME`."""
    services = services_of(request)
    q = request.query_params
    data = await dashboard_data(
        services.ledger, services.rules, services.catalog, range_name=q.get("range"), metric=q.get("metric")
    )
    return JSONResponse(data, headers={"cache-control": "no-store"})


def _read(name: str) -> bytes:
    # A few KB from the installed package; read per request, so there is no cache to keep or reset.
    return files("gateway.dashboard").joinpath(name).read_bytes()
