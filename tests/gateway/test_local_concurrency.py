"""The event loop stays free while the model generates; requests queue, overflow gets 429, abandoned streams stop."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from support.gateway_server import GatewayProcess

pytestmark = pytest.mark.model

LONG = {
    "model": "local",
    "messages": [{"role": "user", "content": "Write a very long story about a dragon, a knight and a city."}],
    "temperature": 1.0,
    "seed": 3,
    "stream": True,
}


def _queue_depth(gateway: GatewayProcess) -> int:
    depth: int = httpx.get(gateway.url + "/readyz", timeout=10).json()["models"]["gemma3-270m"]["queue_depth"]
    return depth


@contextmanager
def _open_stream(gateway: GatewayProcess, max_tokens: int) -> Iterator[Iterator[str]]:
    """A streaming request whose first chunk has arrived; leaving the block closes the connection."""
    with (
        httpx.Client(timeout=120) as http,
        http.stream(
            "POST", gateway.base_url + "/chat/completions", json={**LONG, "max_tokens": max_tokens}
        ) as response,
    ):
        assert response.status_code == 200
        lines = (line for line in response.iter_lines() if line.startswith("data: "))
        first = next(lines)
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
        yield lines


def _wait_idle(gateway: GatewayProcess, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _queue_depth(gateway) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _queue_depth(gateway) == 0


def test_healthz_answers_quickly_while_a_long_stream_runs(gateway: GatewayProcess) -> None:
    _wait_idle(gateway)
    with _open_stream(gateway, max_tokens=400) as lines:
        timings = []
        with httpx.Client(timeout=10) as http:
            for _ in range(7):
                started = time.perf_counter()
                assert http.get(gateway.url + "/healthz").status_code == 200
                timings.append(time.perf_counter() - started)
                next(lines)  # the stream is still producing between probes
        assert _queue_depth(gateway) == 1
    assert statistics.median(timings) < 0.1, timings


def test_second_request_waits_then_succeeds(gateway: GatewayProcess) -> None:
    _wait_idle(gateway)
    finished: dict[str, float] = {}
    result: dict[str, httpx.Response] = {}

    def second() -> None:
        result["r"] = httpx.post(
            gateway.base_url + "/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=120,
        )
        finished["second"] = time.monotonic()

    with _open_stream(gateway, max_tokens=40) as lines:
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while _queue_depth(gateway) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _queue_depth(gateway) == 2  # one generating, one waiting
        for line in lines:
            if line == "data: [DONE]":
                break
        finished["first"] = time.monotonic()
        thread.join(120)
    assert result["r"].status_code == 200
    assert result["r"].json()["choices"][0]["message"]["content"] is not None
    assert finished["second"] >= finished["first"]


def test_beyond_the_queue_bound_is_429_with_retry_after(gateway: GatewayProcess) -> None:
    _wait_idle(gateway)
    waiting: dict[str, httpx.Response] = {}

    def queued() -> None:  # admitted behind the running stream: the test config allows a queue of one
        waiting["r"] = httpx.post(
            gateway.base_url + "/chat/completions", json={**LONG, "max_tokens": 4, "stream": False}, timeout=120
        )

    with _open_stream(gateway, max_tokens=400):
        thread = threading.Thread(target=queued)
        thread.start()
        deadline = time.monotonic() + 10
        while _queue_depth(gateway) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _queue_depth(gateway) == 2
        r = httpx.post(gateway.base_url + "/chat/completions", json={**LONG, "max_tokens": 4, "stream": False})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
    thread.join(120)  # leaving the stream freed the model: the queued request now runs
    assert waiting["r"].status_code == 200


def test_a_disconnected_stream_frees_the_model(gateway: GatewayProcess) -> None:
    _wait_idle(gateway)
    with _open_stream(gateway, max_tokens=3000) as lines:
        next(lines)
    # 3,000 tokens would take about a minute; the abandoned generation must stop at once instead.
    _wait_idle(gateway, timeout_s=5)
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert r.status_code == 200
