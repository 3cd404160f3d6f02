"""Per-key limits end to end: the real gateway with API keys made by `tiergate keys create`, the official openai
client, a scripted frontier upstream on loopback, and (for the shared counters) the Redis server on this machine.

The frontier model is priced at $0.10 a token, so each scripted answer (10 prompt + 5 completion tokens) costs
exactly $1.50 of a key's budget. The rules give every request the score 0.5 against a threshold of 0.5: an `auto`
request escalates at full budget, and any escalation bias keeps it local."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess, free_port
from support.scripted_upstream import Reply, ScriptedUpstream

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
WINDOW_S = 5
RULES = "version: 1\nthreshold: 0.5\nscore: {bias: 0.0}\nrules: []\n"
HI: list[Any] = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier", usage=(10, 5, 0))) as up:
        yield up


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(RULES)
    return path


def _config(upstream: ScriptedUpstream, rules_file: Path, **limits: Any) -> dict[str, Any]:
    return {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {
                "name": "gpt-test",
                "model": "gpt-4.1-mini",
                "api_base": upstream.base_url,
                "api_key_env": None,
                "timeout_s": 5.0,
                "max_retries": 0,
            }
        ],
        "routing": {"rules_file": str(rules_file)},
        "auth": {
            "enabled": True,
            "refresh_interval_s": 0.2,
            "limits": {"window_s": WINDOW_S, "bias_start_fraction": 0.9, "bias_max": 0.4, **limits},
        },
        "ledger": {"prices": {"gpt-test": {"input": 100_000, "output": 100_000}}},
    }


def create_key(gateway: GatewayProcess, name: str, *options: str) -> str:
    """`tiergate keys create` against the gateway's own config (its ledger database); returns the secret."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "keys",
            "create",
            "--config",
            str(gateway.config_path),
            "--name",
            name,
            *options,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip().splitlines()[-1]


def client(gateway: GatewayProcess, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0, timeout=60)


def ask(gateway: GatewayProcess, secret: str, model: str = "frontier", **kwargs: Any) -> httpx.Headers:
    raw = client(gateway, secret).chat.completions.with_raw_response.create(model=model, messages=HI, **kwargs)
    raw.parse()
    return raw.headers


def refused(gateway: GatewayProcess, secret: str, model: str = "frontier") -> tuple[dict[str, Any], int]:
    """The OpenAI-shaped error body and Retry-After of a request that must get 429."""
    with pytest.raises(openai.RateLimitError) as raised:
        ask(gateway, secret, model)
    response = raised.value.response
    assert response.status_code == 429
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error, int(response.headers["retry-after"])


def at_window_start(window_s: int) -> None:
    """Wait for a fresh rate-limit window when less than 80 % of the current one is left (windows are fixed)."""
    left = window_s - time.time() % window_s
    if left < 0.8 * window_s:
        time.sleep(left + 0.05)


@pytest.fixture(scope="module")
def gateway(
    upstream: ScriptedUpstream, rules_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(_config(upstream, rules_file), tmp_path_factory.mktemp("limits"))
    create_key(gw, "warm-up")  # makes the ledger database before the gateway starts
    with gw:
        yield gw


def test_requests_per_minute(gateway: GatewayProcess) -> None:
    secret = create_key(gateway, "rpm", "--rpm", "3")
    time.sleep(0.5)  # the gateway reloads keys every 0.2 s
    at_window_start(WINDOW_S)
    for _ in range(3):
        assert ask(gateway, secret)["x-tiergate-tier"] == "frontier"
    error, retry_after = refused(gateway, secret)
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "3 requests per 5 s window" in error["message"] and "'rpm'" in error["message"]
    assert 1 <= retry_after <= WINDOW_S
    time.sleep(retry_after)
    assert ask(gateway, secret)["x-tiergate-tier"] == "frontier"  # the next window admits it again


def test_tokens_per_minute(gateway: GatewayProcess) -> None:
    secret = create_key(gateway, "tpm", "--tpm", "20")
    time.sleep(0.5)
    at_window_start(WINDOW_S)
    ask(gateway, secret)  # 0 tokens counted before it, 15 after
    ask(gateway, secret)  # 15 < 20 before it, 30 after
    error, retry_after = refused(gateway, secret)
    assert error["code"] == "rate_limit_exceeded"
    assert "20 tokens per 5 s window used (30)" in error["message"]
    assert 1 <= retry_after <= WINDOW_S


def test_spent_budget_with_policy_refuse(gateway: GatewayProcess, upstream: ScriptedUpstream) -> None:
    secret = create_key(gateway, "refuser", "--budget-day", "2", "--over-budget", "refuse")
    time.sleep(0.5)
    ask(gateway, secret)  # $1.50 of $2
    ask(gateway, secret)  # admitted with $0.50 left; $3.00 spent after it
    before = len(upstream.requests)
    for model in ("frontier", "local", "auto"):
        error, retry_after = refused(gateway, secret, model)
        assert error["type"] == "rate_limit_error" and error["code"] == "budget_exceeded"
        assert "daily budget $2" in error["message"] and "spent $3" in error["message"]
        assert "refused until" in error["message"]
        assert 0 < retry_after <= 86_400  # the next UTC midnight
    assert len(upstream.requests) == before


@pytest.mark.model
def test_spent_budget_with_policy_local(gateway: GatewayProcess, upstream: ScriptedUpstream) -> None:
    secret = create_key(gateway, "frugal", "--budget-day", "1", "--over-budget", "local")
    time.sleep(0.5)
    assert ask(gateway, secret)["x-tiergate-tier"] == "frontier"  # $1.50: the $1 budget is spent
    before = len(upstream.requests)
    error, retry_after = refused(gateway, secret, "frontier")
    assert error["code"] == "budget_exceeded" and "Use model `auto` or `local`" in error["message"]
    assert 0 < retry_after <= 86_400
    headers = ask(gateway, secret, "auto", max_tokens=4, temperature=0)  # the score alone would escalate it
    assert headers["x-tiergate-tier"] == "local" and headers["x-tiergate-escalated"] == "no"
    assert len(upstream.requests) == before


@pytest.mark.model
def test_escalation_bias_keeps_requests_local_as_the_budget_runs_down(
    gateway: GatewayProcess, upstream: ScriptedUpstream
) -> None:
    secret = create_key(gateway, "draining", "--budget-day", "4")
    time.sleep(0.5)
    before = len(upstream.requests)
    full = ask(gateway, secret, "auto", max_tokens=4)
    assert full["x-tiergate-tier"] == "frontier" and full["x-tiergate-rule"] == "default"
    # $1.50 of $4 spent: 62.5 % left, below the 90 % where the threshold starts rising (by 0.12 here).
    draining = ask(gateway, secret, "auto", max_tokens=4, temperature=0)
    assert draining["x-tiergate-tier"] == "local" and draining["x-tiergate-rule"] == "default"
    assert draining["x-tiergate-score"] == full["x-tiergate-score"] == "0.500"
    assert len(upstream.requests) == before + 1


def test_spend_survives_a_restart(
    upstream: ScriptedUpstream, rules_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw = GatewayProcess(_config(upstream, rules_file), tmp_path_factory.mktemp("restart"))
    secret = create_key(gw, "restarted", "--budget-day", "2", "--over-budget", "refuse")
    with gw:
        ask(gw, secret)
        ask(gw, secret)  # $3.00 of $2 spent, in memory and (once written) in the ledger
    gw.start()  # a new process: its counters start empty and are loaded from the ledger
    try:
        error, _ = refused(gw, secret)
        assert error["code"] == "budget_exceeded" and "spent $3" in error["message"]
    finally:
        gw.stop()


def _redis_up() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_url() -> str:
    if not _redis_up():
        pytest.skip(f"no Redis server answers PING at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.mark.redis
def test_replicas_sharing_redis_share_the_rate_limit(
    upstream: ScriptedUpstream, rules_file: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shared = tmp_path_factory.mktemp("replicas")
    config = _config(upstream, rules_file, redis_url=redis_url, window_s=10)
    config["ledger"]["database_url"] = f"sqlite:///{shared / 'ledger.sqlite3'}"  # one key table for both
    (shared / "a").mkdir()
    (shared / "b").mkdir()
    first, second = GatewayProcess(config, shared / "a"), GatewayProcess(config, shared / "b")
    secret = create_key(first, "shared", "--rpm", "4")
    with first, second:
        at_window_start(10)
        for gateway in (first, second, first, second):
            ask(gateway, secret)
        for gateway in (first, second):
            error, retry_after = refused(gateway, secret)
            assert error["code"] == "rate_limit_exceeded" and "4 requests per 10 s window" in error["message"]
            assert 1 <= retry_after <= 10


def test_an_unreachable_redis_fails_open_on_rate_limits(
    upstream: ScriptedUpstream, rules_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a port nothing listens on
    gw = GatewayProcess(_config(upstream, rules_file, redis_url=nobody), tmp_path_factory.mktemp("no-redis"))
    secret = create_key(gw, "open", "--rpm", "1")
    with gw:
        for _ in range(3):
            assert ask(gw, secret)["x-tiergate-tier"] == "frontier"
        metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    errors = [line for line in metrics.splitlines() if line.startswith("tiergate_limit_store_errors_total")]
    assert errors and float(errors[0].split()[-1]) >= 3
    assert "the counter store failed" in gw.log()
