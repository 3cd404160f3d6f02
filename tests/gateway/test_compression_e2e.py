"""Compression on a real request: the local tier gets a smaller prompt, and says so in a header and the ledger."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from sqlalchemy import select
from support.gateway_server import GatewayProcess

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow

pytestmark = pytest.mark.model


def _tool(name: str, topic: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Look up {topic}. " + "This endpoint is documented at length for humans. " * 8,
            "parameters": {
                "type": "object",
                "title": f"{name} arguments",
                "properties": {
                    "query": {"type": "string", "description": f"What to look up about {topic}, in plain words."},
                    "limit": {"type": "integer", "default": 5, "description": "How many results to return at most."},
                },
                "required": ["query"],
            },
        },
    }


TOOLS = [
    _tool(name, topic)
    for name, topic in [
        ("get_weather", "the weather forecast of a city"),
        ("get_stock_price", "a stock price"),
        ("search_flights", "flights between two airports"),
        ("book_hotel", "hotel rooms"),
        ("translate_text", "a translation"),
        ("get_news", "news headlines"),
        ("convert_currency", "currency exchange rates"),
        ("find_restaurant", "restaurants nearby"),
        ("get_movie_times", "cinema showtimes"),
        ("track_package", "a parcel delivery"),
    ]
]


def test_local_requests_are_compressed_and_recorded(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="local",
        messages=[{"role": "user", "content": "What is the weather forecast in Oslo tomorrow?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    before, after = (int(n) for n in raw.headers["x-tiergate-compression"].split("->"))
    assert after < before / 2, (before, after)
    request_id = raw.headers["x-request-id"]
    engine = make_engine(gateway.config["ledger"]["database_url"])
    deadline = time.monotonic() + 10
    row = None
    while row is None and time.monotonic() < deadline:
        with engine.connect() as c:
            row = c.execute(select(RequestRow).where(RequestRow.id == request_id)).first()
        time.sleep(0.05)
    engine.dispose()
    assert row is not None
    assert (row.compression_tokens_before, row.compression_tokens_after) == (before, after)
    # The model read the compressed prompt: its usage is the compressed size.
    assert raw.parse().usage.prompt_tokens == after
