"""The floor of the overhead benchmark: the thinnest pass-through that can be built on Tiergate's own server stack.

    .venv/bin/python bench/overhead_floor.py --upstream http://127.0.0.1:9100/v1 --port 9200

FastAPI on uvicorn (httptools + uvloop, no access log), one route, one pooled aiohttp session for its lifetime: the
body goes upstream as it came, the answer comes back as it went (streamed through chunk by chunk when the upstream
streams). Nothing is parsed, so what it adds over calling the upstream directly is the cost of the stack itself;
whatever Tiergate adds beyond this is Tiergate's own work.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse


def create_floor_app(upstream: str) -> FastAPI:
    url = upstream.rstrip("/") + "/chat/completions"
    pool: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            pool["session"] = session
            yield

    # FastAPI's native OpenTelemetry support asks the global providers on every request whether it is configured.
    app = FastAPI(lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        upstream_response = await pool["session"].post(url, data=body, headers={"Content-Type": "application/json"})
        content_type = upstream_response.headers.get("Content-Type", "application/json")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(
                _relay(upstream_response), status_code=upstream_response.status, media_type=content_type
            )
        async with upstream_response:
            payload = await upstream_response.read()
        return Response(payload, status_code=upstream_response.status, media_type=content_type)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok")

    return app


async def _relay(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async with response:
        async for chunk in response.content.iter_any():
            yield chunk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A bare FastAPI + aiohttp pass-through (the benchmark's floor).")
    parser.add_argument("--upstream", required=True, help="upstream base URL, up to and including /v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        create_floor_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
