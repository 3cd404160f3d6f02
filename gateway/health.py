"""Liveness, readiness and the model list."""

from __future__ import annotations

import time

from fastapi import Request

from gateway.auth.authenticator import KEYS_NOT_LOADED
from gateway.responses import JSONResponse
from gateway.state import services_of

_STARTED = int(time.time())


async def healthz() -> JSONResponse:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the local tier's default model is loaded (with no local model configured: when the frontier
    tier's default is usable) and, with auth on, the API keys have been loaded once; each model's state is listed."""
    catalog = services_of(request).catalog
    models = {
        b.name: {"tier": b.tier, "ready": b.ready, "reason": b.not_ready_reason, "queue_depth": b.queue_depth}
        for b in catalog.backends
    }
    serving = catalog.default("local") or catalog.default("frontier")
    ready = serving is not None and serving.ready
    keys = services_of(request).auth.keys
    auth = "on" if keys is not None else "off"  # "off": anyone who reaches the port may use it
    body: dict[str, object] = {"ready": ready, "auth": auth, "models": models}
    if keys is not None and not keys.loaded:  # every keyed request would get 503 keys_not_loaded
        body.update(ready=False, reason="keys_not_loaded: " + KEYS_NOT_LOADED)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


async def list_models(request: Request) -> JSONResponse:
    catalog = services_of(request).catalog
    names = [b.name for b in catalog.backends] + catalog.virtual_names()
    data = [{"id": n, "object": "model", "created": _STARTED, "owned_by": "tiergate"} for n in names]
    return JSONResponse({"object": "list", "data": data})


async def rules_status(request: Request) -> JSONResponse:
    """The rules in force, their last reload, and the error of a refused file (the previous rules stay)."""
    return JSONResponse(services_of(request).rules.status().as_dict())
