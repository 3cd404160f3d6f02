"""API keys through the real server: who gets in, with which scope, how soon key changes apply, and that a secret
never shows up in the log or the ledger. The frontier tier is a scripted upstream; only the local-only pin runs the
model (4 tokens)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from support.gateway_server import LOCAL_TEST_MODEL, REPO, GatewayProcess, free_port
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.ledger.models import RequestRow
from gateway.settings import load_settings

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("frontier answer")) as up:
        yield up


Started = tuple[GatewayProcess, dict[str, tuple[str, str]]]


@pytest.fixture(scope="module")
def started(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """The gateway, with a client and an admin key made before it starts (so they are loaded at start-up)."""
    config = {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
        ],
        "auth": {"enabled": True, "refresh_interval_s": 0.5},
    }
    gw = GatewayProcess(config, tmp_path_factory.mktemp("auth"))
    made = {"client": create_key(gw, "--name", "agent"), "admin": create_key(gw, "--name", "ops", "--admin")}
    with gw:
        yield gw, made


@pytest.fixture(scope="module")
def gateway(started: Started) -> GatewayProcess:
    return started[0]


def keys_cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args, "--config", str(gateway.config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def create_key(gateway: GatewayProcess, *options: str) -> tuple[str, str]:
    """(id, secret) of a new key, made with the CLI against the running gateway's own config."""
    out = keys_cli(gateway, "create", *options).stdout.strip().splitlines()
    key_id = next(word for word in out[0].split() if word.startswith("key_"))
    return key_id, next(line for line in out if line.startswith("tg-"))


@pytest.fixture(scope="module")
def client_key(started: Started) -> tuple[str, str]:
    return started[1]["client"]


@pytest.fixture(scope="module")
def admin_key(started: Started) -> tuple[str, str]:
    return started[1]["admin"]


def until(check: Callable[[], bool], timeout_s: float = 10.0) -> float:
    """Seconds until `check()` held; fails the test after `timeout_s`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"not within {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - start


def chat_status(gateway: GatewayProcess, secret: str) -> int:
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "frontier", "messages": HI, "max_tokens": 4},
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )
    return r.status_code


def ledger_rows(gateway: GatewayProcess) -> list[RequestRow]:
    engine = create_engine(gateway.config["ledger"]["database_url"])
    try:
        with Session(engine) as session:
            return list(session.scalars(select(RequestRow)))
    finally:
        engine.dispose()


def test_no_key_is_401_with_a_clear_message(gateway: GatewayProcess) -> None:
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/feedback")):
        r = httpx.request(method, gateway.url + path, json={"model": "frontier", "messages": HI}, timeout=10)
        assert r.status_code == 401, path
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert "Authorization" in error["message"] and "Bearer" in error["message"]
        assert error["type"] == "invalid_request_error" and error["code"] == "missing_api_key"


def test_a_wrong_key_is_401_and_never_echoed(gateway: GatewayProcess, client_key: tuple[str, str]) -> None:
    wrong = "tg-" + "W" * 43
    client = openai.OpenAI(base_url=gateway.base_url, api_key=wrong, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="frontier", messages=HI, max_tokens=4)  # type: ignore[arg-type]
    assert raised.value.status_code == 401
    body = raised.value.response.json()["error"]
    assert body["code"] == "invalid_api_key" and body["type"] == "invalid_request_error" and body["param"] is None
    assert body["message"].startswith("Incorrect API key provided")
    assert wrong not in raised.value.response.text and "WWWW" not in raised.value.response.text
    # Not a Bearer token at all: the key of another scheme is refused as missing, and not echoed either.
    r = httpx.get(gateway.base_url + "/models", headers={"authorization": "Basic c2VjcmV0"}, timeout=10)
    assert r.status_code == 401 and "c2VjcmV0" not in r.text


def test_a_valid_key_is_served(
    gateway: GatewayProcess, upstream: ScriptedUpstream, client_key: tuple[str, str]
) -> None:
    key_id, secret = client_key
    client = openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="frontier", messages=HI, max_tokens=4)  # type: ignore[arg-type]
    assert raw.parse().choices[0].message.content == "frontier answer"
    assert raw.headers["x-tiergate-tier"] == "frontier"
    assert {m.id for m in client.models.list()} >= {"auto", "local", "frontier", "gpt-test"}
    # The client's key goes no further than the gateway: the provider sees none of it.
    assert secret not in repr(upstream.requests[-1])
    rows = []

    def recorded() -> bool:
        nonlocal rows
        rows = [r for r in ledger_rows(gateway) if r.id == raw.parse().id]
        return bool(rows)

    until(recorded)
    assert rows[0].api_key_id == key_id
    assert rows[0].prompt is None  # prompt storage is off unless the key or the ledger turns it on


def test_a_key_that_stores_prompts_gets_them_in_the_ledger(gateway: GatewayProcess) -> None:
    key_id, secret = create_key(gateway, "--name", "recorder", "--store-prompts")
    until(lambda: chat_status(gateway, secret) == 200)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0)
    answer = client.chat.completions.create(model="frontier", messages=HI, max_tokens=4)  # type: ignore[arg-type]
    rows: list[RequestRow] = []

    def recorded() -> bool:
        nonlocal rows
        rows = [r for r in ledger_rows(gateway) if r.id == answer.id]
        return bool(rows)

    until(recorded)
    assert rows[0].api_key_id == key_id and rows[0].prompt == HI


def test_admin_routes_need_the_admin_scope(
    gateway: GatewayProcess, client_key: tuple[str, str], admin_key: tuple[str, str]
) -> None:
    until(lambda: chat_status(gateway, admin_key[1]) == 200)
    for path in ("/admin/rules", "/v1/reports/cost", "/dashboard/data", "/dashboard/sessions"):
        as_client = httpx.get(gateway.url + path, headers={"authorization": f"Bearer {client_key[1]}"}, timeout=30)
        assert as_client.status_code == 403, path
        error = as_client.json()["error"]
        assert error["type"] == "permission_error" and "admin" in error["message"] and client_key[1] not in str(error)
        assert httpx.get(gateway.url + path, timeout=30).status_code == 401, path
        as_admin = httpx.get(gateway.url + path, headers={"authorization": f"Bearer {admin_key[1]}"}, timeout=30)
        assert as_admin.status_code == 200, (path, as_admin.text)
    assert (
        "rules"
        in httpx.get(gateway.url + "/admin/rules", headers={"authorization": f"Bearer {admin_key[1]}"}, timeout=30).text
    )


def test_probes_metrics_and_the_dashboard_page_stay_open(gateway: GatewayProcess) -> None:
    ready = httpx.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["auth"] == "on"
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
    assert "tiergate_requests_total" in httpx.get(gateway.url + "/metrics", timeout=10).text
    page = httpx.get(gateway.url + "/dashboard", timeout=10)
    assert page.status_code == 200 and "dashboard/assets/auth.js" in page.text
    script = httpx.get(gateway.url + "/dashboard/assets/auth.js", timeout=10)
    assert script.status_code == 200 and "sessionStorage" in script.text and "Bearer" in script.text


# The gateway reloads keys every 0.5 s: a change must show within a few reloads, well inside the wait loop's 10 s.
REFRESH_BOUND_S = 3.0


def test_a_key_created_while_running_works_within_seconds(gateway: GatewayProcess) -> None:
    _, secret = create_key(gateway, "--name", "late")
    waited = until(lambda: chat_status(gateway, secret) == 200, timeout_s=10)
    assert waited < REFRESH_BOUND_S


def test_a_revoked_key_is_refused_within_seconds_without_a_restart(gateway: GatewayProcess) -> None:
    key_id, secret = create_key(gateway, "--name", "leaked")
    until(lambda: chat_status(gateway, secret) == 200)
    pid = gateway.proc.pid if gateway.proc else None
    keys_cli(gateway, "revoke", key_id)
    waited = until(lambda: chat_status(gateway, secret) == 401, timeout_s=10)
    assert waited < REFRESH_BOUND_S
    assert gateway.proc is not None and gateway.proc.pid == pid and gateway.proc.poll() is None


@pytest.mark.model
def test_a_local_only_key_is_answered_by_the_local_tier(gateway: GatewayProcess, upstream: ScriptedUpstream) -> None:
    _, secret = create_key(gateway, "--name", "private", "--policy-tag", "local-only")
    until(lambda: httpx.get(gateway.base_url + "/models", headers={"authorization": f"Bearer {secret}"}).is_success)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0, timeout=120)
    upstream_calls = len(upstream.requests)
    # Even a request that names the frontier tier stays here: the pin is an enforced rule.
    raw = client.chat.completions.with_raw_response.create(model="frontier", messages=HI, max_tokens=4)  # type: ignore[arg-type]
    assert raw.headers["x-tiergate-tier"] == "local"
    assert raw.headers["x-tiergate-rule"] == "local-only-key"
    assert len(upstream.requests) == upstream_calls


def test_no_secret_in_the_log_or_the_ledger(
    gateway: GatewayProcess, client_key: tuple[str, str], admin_key: tuple[str, str]
) -> None:
    secrets = [client_key[1], admin_key[1], "tg-" + "W" * 43]
    # One more refused and one more served request, so that both paths have logged something by now.
    chat_status(gateway, secrets[2])
    chat_status(gateway, client_key[1])
    log = gateway.log_path.read_text(errors="replace")
    assert "tiergate" in log  # the log is there to be searched
    rows = ledger_rows(gateway)
    assert rows
    dumped = "\n".join(repr({c.key: getattr(r, c.key) for c in RequestRow.__table__.columns}) for r in rows)
    for secret in secrets:
        assert secret not in log and secret not in dumped
        assert secret[3:20] not in log and secret[3:20] not in dumped


def test_settings_turn_auth_on_with_a_config_file_or_off_loopback(tmp_path: Path) -> None:
    assert load_settings(None).auth.enabled is False
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert load_settings(None, host=loopback).auth.enabled is False, loopback
    # The Docker image: TIERGATE_HOST=0.0.0.0 and no config file. Any address others may reach means keys.
    for reachable in ("0.0.0.0", "::", "", "10.1.2.3", "gateway.internal"):
        assert load_settings(None, host=reachable).auth.enabled is True, reachable
    config = tmp_path / "tiergate.yaml"
    config.write_text("port: 9000\n")
    assert load_settings(config).auth.enabled is True
    config.write_text("auth: {enabled: false}\n")
    assert load_settings(config).auth.enabled is False
    assert load_settings(config, host="0.0.0.0").auth.enabled is False  # said on purpose: allowed (and logged)


def test_the_embedded_quick_start_runs_open_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gateway.log"
    env = {
        **os.environ,
        "TIERGATE_LEDGER__DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "TIERGATE_LEDGER__SPOOL_DIR": str(tmp_path / "spool"),
        "TIERGATE_LOCAL_MODELS": '[{"threads": 1, "context_tokens": 2048}]',
    }
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        until(ready, timeout_s=180)
        assert httpx.get(url + "/readyz", timeout=5).json()["auth"] == "off"
        assert httpx.get(url + "/v1/models", timeout=5).status_code == 200
        assert httpx.get(url + "/admin/rules", timeout=5).status_code == 200
        text = log_path.read_text()
        assert "WARNING" in text and "running OPEN: no API keys are checked" in text
    finally:
        proc.terminate()
        proc.wait(30)


def test_keys_naming_the_same_session_get_separate_sessions_and_outcomes(
    gateway: GatewayProcess, client_key: tuple[str, str], admin_key: tuple[str, str]
) -> None:
    key_a, secret_a = client_key
    key_b, secret_b = create_key(gateway, "--name", "other-agent")
    until(lambda: chat_status(gateway, secret_b) == 200)
    session = f"s1-{uuid.uuid4().hex[:8]}"
    client_a = openai.OpenAI(base_url=gateway.base_url, api_key=secret_a, max_retries=0)
    client_b = openai.OpenAI(base_url=gateway.base_url, api_key=secret_b, max_retries=0)
    for _ in range(2):
        raw = client_a.chat.completions.with_raw_response.create(
            model="frontier",
            messages=HI,  # type: ignore[arg-type]
            max_tokens=4,
            extra_headers={"X-Tiergate-Session": session},
        )
        assert raw.headers["x-tiergate-session"] == f"{key_a}/{session}"
    # B names the same session through `user`, the other way to name one.
    raw = client_b.chat.completions.with_raw_response.create(
        model="frontier",
        messages=HI,  # type: ignore[arg-type]
        max_tokens=4,
        user=session,
    )
    assert raw.headers["x-tiergate-session"] == f"{key_b}/{session}"
    admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {admin_key[1]}"}, timeout=30)

    def steps_of(stored_id: str) -> list[dict[str, Any]]:
        r = admin.get("/dashboard/sessions/" + stored_id)
        steps: list[dict[str, Any]] = r.json()["steps"] if r.status_code == 200 else []
        return steps

    until(lambda: len(steps_of(f"{key_a}/{session}")) == 2 and len(steps_of(f"{key_b}/{session}")) == 1)
    # B's step is its session's first: it did not count on top of A's two (separate session state).
    assert [s["step"] for s in steps_of(f"{key_a}/{session}")] == [1, 2]
    assert [s["step"] for s in steps_of(f"{key_b}/{session}")] == [1]
    # The dashboard page asks with the id URL-encoded (`/` as %2F): the same session.
    encoded = admin.get("/dashboard/sessions/" + quote(f"{key_a}/{session}", safe=""))
    assert encoded.status_code == 200 and len(encoded.json()["steps"]) == 2
    assert admin.get("/dashboard/sessions/" + session).status_code == 404  # no unscoped session was made
    listed = {s["id"] for s in admin.get("/dashboard/sessions").json()["sessions"]}
    assert {f"{key_a}/{session}", f"{key_b}/{session}"} <= listed

    def outcome_of(stored_id: str) -> Any:
        return admin.get("/dashboard/sessions/" + stored_id).json()["outcome"]

    def feedback(secret: str, session_id: str, value: bool) -> httpx.Response:
        body = {"session_id": session_id, "metric": "success", "value": value}
        return httpx.post(
            gateway.base_url + "/feedback", json=body, headers={"authorization": f"Bearer {secret}"}, timeout=30
        )

    # B's feedback on "s1" lands on B's own session, never on A's.
    b_said = feedback(secret_b, session, False)
    assert b_said.status_code == 200 and b_said.json()["session_id"] == f"{key_b}/{session}"
    assert outcome_of(f"{key_a}/{session}") is None
    assert outcome_of(f"{key_b}/{session}") == {"value": 0.0, "success": False}
    # Naming A's stored id does not reach it either: B's ids all live under B's key.
    reach = feedback(secret_b, f"{key_a}/{session}", True)
    assert reach.status_code == 400 and reach.json()["error"]["code"] == "not_found"
    assert outcome_of(f"{key_a}/{session}") is None
    # A's own feedback does, by the id it sent or by the stored id the answers carried.
    assert feedback(secret_a, session, False).status_code == 200
    assert outcome_of(f"{key_a}/{session}") == {"value": 0.0, "success": False}
    assert feedback(secret_a, f"{key_a}/{session}", True).status_code == 200
    assert outcome_of(f"{key_a}/{session}") == {"value": 1.0, "success": True}
    # An admin key names sessions by their stored id.
    assert feedback(admin_key[1], session, True).status_code == 400
    assert feedback(admin_key[1], f"{key_b}/{session}", True).status_code == 200
    assert outcome_of(f"{key_b}/{session}") == {"value": 1.0, "success": True}


def test_docs_pages_are_off_and_the_schema_stays(gateway: GatewayProcess) -> None:
    # Swagger UI and ReDoc would load CDN scripts on the origin where the dashboard keeps the admin key.
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(gateway.url + path, timeout=10).status_code == 404, path
    schema = httpx.get(gateway.url + "/openapi.json", timeout=10)
    assert schema.status_code == 200 and "/v1/chat/completions" in schema.json()["paths"]


def test_until_keys_have_loaded_keyed_routes_are_503_not_401(tmp_path: Path) -> None:
    config = {
        "local_models": [],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": "http://127.0.0.1:1/v1", "api_key_env": None}
        ],  # usable: only the keys keep the gateway from being ready
        "auth": {"enabled": True, "refresh_interval_s": 0.5},
        "ledger": {"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/test", "db_timeout_s": 1},
    }
    gw = GatewayProcess(config, tmp_path).start(wait_ready=False)  # /readyz is 503 here: wait for /healthz
    try:
        ready = httpx.get(gw.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False and ready.json()["reason"].startswith("keys_not_loaded")
        for secret in ("tg-" + "A" * 43, None):
            headers = {"authorization": f"Bearer {secret}"} if secret else {}
            for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/admin/rules")):
                r = httpx.request(method, gw.url + path, json={"model": "auto", "messages": HI}, headers=headers)
                assert r.status_code == 503, (path, r.text)
                error = r.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert error["type"] == "service_unavailable" and error["code"] == "keys_not_loaded"
                assert int(r.headers["retry-after"]) >= 1
        # The openai client sees a server error it may retry, not an authentication error.
        client = openai.OpenAI(base_url=gw.base_url, api_key="tg-" + "A" * 43, max_retries=0)
        with pytest.raises(openai.InternalServerError) as raised:
            client.models.list()
        assert raised.value.status_code == 503
        assert httpx.get(gw.url + "/healthz", timeout=10).status_code == 200  # alive: only not ready
    finally:
        gw.stop()
