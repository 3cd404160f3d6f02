"""Faults through the real server: a local model that fails to load, a frontier upstream that resets the connection
or cuts a stream mid-answer, and SIGTERM while a stream is in flight.

Each ends in a complete answer or a clean error the client can see, never a truncated answer reported as a success.
The local model here is a corrupt GGUF, so no test in this module waits for llama.cpp to generate.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import select
from support.gateway_server import GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow

EASY = [{"role": "user", "content": "Hi there!"}]
LOCAL_NAME = "broken-local"


def _corrupt_gguf(folder: Path) -> Path:
    # The right magic number followed by garbage: llama.cpp opens the file and then refuses it.
    path = folder / "corrupt.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def _config(upstream: ScriptedUpstream, model_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "local_models": [{"name": LOCAL_NAME, "path": str(model_path), "threads": 1, "context_tokens": 512}],
        "frontier_models": [
            {
                "name": "gpt-test",
                "model": "gpt-4.1-mini",
                "api_base": upstream.base_url,
                "api_key_env": None,
                "timeout_s": 1.0,
                "max_retries": 1,
                "backoff_s": 0.05,
            }
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier")) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("faults")
    gw = GatewayProcess(_config(upstream, _corrupt_gguf(workdir)), workdir)
    gw.start(wait_ready=False)  # it never becomes ready: that is the point
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=30)


def _rows(database_url: str) -> dict[str, RequestRow]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as c:
            return {r.id: r for r in c.execute(select(RequestRow)).all()}  # type: ignore[misc]
    finally:
        engine.dispose()


# --- the local model fails to load ---------------------------------------------------------------------------


def test_readiness_is_false_and_names_the_reason(gateway: GatewayProcess) -> None:
    r = httpx.get(gateway.url + "/readyz", timeout=10)
    assert r.status_code == 503
    state = r.json()
    assert state["ready"] is False
    local = state["models"][LOCAL_NAME]
    assert local["ready"] is False and local["reason"]
    assert state["models"]["gpt-test"]["ready"] is True
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200  # alive, only not ready


def test_auto_requests_spill_to_the_frontier(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    before = len(upstream.requests)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=EASY, max_tokens=8)
    answer = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "frontier"
    assert raw.headers["x-tiergate-model"] == "gpt-test"
    assert answer.choices[0].message.content == "from the frontier"
    assert len(upstream.requests) == before + 1


def test_auto_streams_spill_to_the_frontier_too(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="auto", messages=EASY, max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from the frontier"
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["local", LOCAL_NAME])
def test_a_request_pinned_to_the_broken_model_is_a_clean_503(
    client: openai.OpenAI, upstream: ScriptedUpstream, model: str
) -> None:
    before = len(upstream.requests)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=model, messages=EASY, max_tokens=8)
    assert info.value.status_code == 503
    assert info.value.type == "service_unavailable"
    assert len(upstream.requests) == before  # a pin is a pin: nothing went to the frontier


# --- the frontier upstream fails -----------------------------------------------------------------------------


def test_connection_resets_end_in_a_clean_502(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.reset(), Reply.reset())  # the first try and its one retry
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="frontier", messages=EASY)
    assert info.value.status_code == 502
    assert info.value.type == "upstream_error"


def test_a_reset_then_an_answer_is_retried_to_success(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.reset(), Reply.text("second try"))
    answer = client.chat.completions.create(model="frontier", messages=EASY)
    assert answer.choices[0].message.content == "second try"


@pytest.mark.parametrize("clean_end", [False, True], ids=["connection-dropped", "body-ended-early"])
def test_a_stream_cut_mid_answer_is_an_error_not_a_success(
    client: openai.OpenAI, upstream: ScriptedUpstream, clean_end: bool
) -> None:
    upstream.push(Reply.cut("a long answer that never gets to its end", after_chunks=2, clean_end=clean_end))
    received: list[Any] = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="frontier", messages=EASY, stream=True):
            received.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text and "a long answer".startswith(text[:13])  # the part that came through, and no more
    assert not any(c.choices and c.choices[0].finish_reason for c in received)


# --- SIGTERM during a stream ---------------------------------------------------------------------------------


def _stream_until_first_chunk(gw: GatewayProcess, http: httpx.Client) -> tuple[httpx.Response, Iterator[str]]:
    body = {"model": "frontier", "messages": EASY, "stream": True}
    response = http.send(http.build_request("POST", gw.base_url + "/chat/completions", json=body), stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    next(line for line in lines if line.startswith("data: "))
    return response, lines


def _read_rest(lines: Iterator[str]) -> tuple[list[str], str | None]:
    """The remaining `data:` payloads, and the transport error that ended them early, if one did."""
    payloads: list[str] = []
    try:
        payloads += [line[6:] for line in lines if line.startswith("data: ")]
    except httpx.TransportError as exc:
        return payloads, type(exc).__name__
    return payloads, None


def test_sigterm_lets_a_stream_within_the_grace_period_finish(tmp_path: Path) -> None:
    answer = "a" * 40
    # Ten chunks 0.15 s apart: about 1.5 s, well inside the 10 s grace period.
    with ScriptedUpstream(default=Reply.text(answer, chunk_chars=4, chunk_delay_s=0.15)) as slow:
        gw = GatewayProcess(_config(slow, _corrupt_gguf(tmp_path), shutdown_grace_s=10), tmp_path)
        gw.start(wait_ready=False)
        with httpx.Client(timeout=30) as http:
            response, lines = _stream_until_first_chunk(gw, http)
            request_id = response.headers["x-request-id"]
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            payloads, broke = _read_rest(lines)
        assert broke is None
        assert payloads[-1] == "[DONE]"
        chunks = [orjson.loads(p) for p in payloads[:-1]]
        assert not any("error" in c for c in chunks)
        assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
        assert gw.proc.wait(15) in (0, -signal.SIGTERM)
    rows = _rows(gw.config["ledger"]["database_url"])
    assert request_id in rows and rows[request_id].status == 200


def test_sigterm_ends_a_stream_longer_than_the_grace_period_visibly(tmp_path: Path) -> None:
    # 200 chunks 0.1 s apart would take 20 s; the grace period is 1 s.
    with ScriptedUpstream(default=Reply.text("b" * 800, chunk_chars=4, chunk_delay_s=0.1)) as slow:
        gw = GatewayProcess(_config(slow, _corrupt_gguf(tmp_path), shutdown_grace_s=1), tmp_path)
        gw.start(wait_ready=False)
        with httpx.Client(timeout=30) as http:
            response, lines = _stream_until_first_chunk(gw, http)
            request_id = response.headers["x-request-id"]
            assert gw.proc is not None
            signalled = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            payloads, broke = _read_rest(lines)
            ended_after_s = time.monotonic() - signalled
        try:
            exit_code = gw.proc.wait(15)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            raise
    assert exit_code in (0, -signal.SIGTERM)
    assert ended_after_s < 10, "the stream outlived the grace period by far"
    chunks = [orjson.loads(p) for p in payloads if p != "[DONE]"]
    finished = any("choices" in c and c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    errored = broke is not None or any("error" in c for c in chunks)
    # The client can tell: the stream ends in an error (an error event or a broken body), never in a normal finish.
    assert errored and not finished
    rows = _rows(gw.config["ledger"]["database_url"])
    assert request_id in rows
    assert rows[request_id].status != 200 or rows[request_id].error_class
