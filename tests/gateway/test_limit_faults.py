"""Per-key limits when things go wrong: streams cut short, requests racing for one budget, a ledger database or a
Redis that is away or hangs, and the refusals on /metrics. The real gateway, the official openai client and a
scripted frontier upstream priced at $0.10 a token (10 prompt + 5 completion tokens: $1.50 an answer)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.gateway_server import GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream
from support.tcp_proxy import TcpProxy
from test_limits import HI, _config, _redis_up, ask, client, create_key, refused

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text("version: 1\nthreshold: 0.5\nscore: {bias: 0.0}\nrules: []\n")
    return path


def wait_until(condition: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def metric(gateway: GatewayProcess, line_start: str) -> float:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)]
    return values[0] if values else 0.0


def test_a_stream_the_client_drops_is_charged(rules_file: Path, tmp_path: Path) -> None:
    text = "frontier words " * 40
    slow = Reply.text(text, chunk_delay_s=0.05, usage=(10, 5, 0))
    with ScriptedUpstream(default=slow) as upstream:
        gw = GatewayProcess(_config(upstream, rules_file), tmp_path)
        secret = create_key(gw, "dropper", "--budget-day", "0.5", "--over-budget", "refuse")
        with gw:
            stream = client(gw, secret).chat.completions.create(model="frontier", messages=HI, stream=True)
            received = ""
            for chunk in stream:
                received += chunk.choices[0].delta.content or "" if chunk.choices else ""
                if len(received) >= 12:
                    break
            stream.close()  # the client hangs up long before the last chunk
            assert received and len(received) < len(text)
            database = tmp_path / "ledger.sqlite3"

            def row() -> tuple[Any, ...] | None:
                with sqlite3.connect(database) as connection:
                    found = connection.execute(
                        "SELECT tier, model, cost_usd, tokens_out FROM requests WHERE api_key_id IS NOT NULL"
                    ).fetchone()
                return tuple(found) if found else None

            assert wait_until(lambda: row() is not None)
            tier, model, cost, tokens_out = row() or ()
            assert tier == "frontier" and model == "gpt-test"
            assert float(cost) > 0 and tokens_out > 0
            # What the dropped stream cost counts against the key's $0.50 budget: the next request is refused.
            error, _ = refused(gw, secret)
            assert error["code"] == "budget_exceeded"


def test_parallel_requests_do_not_spend_past_the_budget(rules_file: Path, tmp_path: Path) -> None:
    with ScriptedUpstream(default=Reply.text("slow answer", delay_s=1.5, usage=(10, 5, 0))) as upstream:
        gw = GatewayProcess(_config(upstream, rules_file), tmp_path)
        # Each request reserves its prompt (a few tokens) and max_tokens 10 at $0.10 a token: over $1 apiece, so
        # the $2 budget covers two of them in flight, as it covers two answered one after the other.
        secret = create_key(gw, "racer", "--budget-day", "2", "--over-budget", "refuse")
        with gw:

            def one(_: int) -> int:
                try:
                    ask(gw, secret, "frontier", max_tokens=10)
                except openai.RateLimitError as exc:
                    assert exc.response.json()["error"]["code"] == "budget_exceeded"
                    return 429
                return 200

            with ThreadPoolExecutor(6) as pool:
                statuses = list(pool.map(one, range(6)))
    assert 1 <= statuses.count(200) <= 2 and statuses.count(429) == 6 - statuses.count(200)
    assert len(upstream.requests) == statuses.count(200)


def test_refusals_show_on_metrics(rules_file: Path, tmp_path: Path) -> None:
    with ScriptedUpstream(default=Reply.text("hi", usage=(10, 5, 0))) as upstream:
        gw = GatewayProcess(_config(upstream, rules_file), tmp_path)
        secret = create_key(gw, "counted", "--rpm", "1")
        with gw:
            ask(gw, secret)
            refused(gw, secret)
            with pytest.raises(openai.AuthenticationError):
                ask(gw, "tg-not-a-key")
            assert metric(gw, 'tiergate_refusals_total{reason="rate_limit_requests"}') == 1
            assert metric(gw, 'tiergate_refusals_total{reason="invalid_key"}') == 1


@pytest.mark.postgres
def test_budgets_hold_until_the_ledger_can_be_read(rules_file: Path, tmp_path: Path) -> None:
    """The spend query cannot finish while another session holds a lock on the ledger's table (the database is
    there for the keys, but not for the spend): the budgeted key is refused until the lock goes."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"limits_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    try:
        with ScriptedUpstream(default=Reply.text("hi", usage=(10, 5, 0))) as upstream:
            config = _config(upstream, rules_file, spend_retry_s=0.5)
            config["ledger"]["database_url"] = url
            gw = GatewayProcess(config, tmp_path)
            secret = create_key(gw, "careful", "--budget-day", "100", "--over-budget", "refuse")
            free = create_key(gw, "free")
            locker = psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres")
            locker.execute(f"LOCK TABLE {schema}.requests IN ACCESS EXCLUSIVE MODE")
            try:
                gw.start()
                assert ask(gw, free)["x-tiergate-tier"] == "frontier"  # no budget: nothing to know
                error, _ = refused(gw, secret)
                assert error["code"] == "budget_exceeded" and "cannot be read from the ledger" in error["message"]
            finally:
                locker.rollback()
                locker.close()
            try:
                assert wait_until(lambda: _answers(gw, secret))
                assert "budgets apply again" in gw.log()
            finally:
                gw.stop()
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def _answers(gw: GatewayProcess, secret: str) -> bool:
    try:
        return ask(gw, secret)["x-tiergate-tier"] == "frontier"
    except openai.RateLimitError:
        return False


class SilentServer:
    """Accepts connections and reads what arrives, never answering: a Redis that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.received = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                self.received += len(data)
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for conn in self._open:
            conn.close()


def test_a_hung_redis_is_left_alone_for_a_while(rules_file: Path, tmp_path: Path) -> None:
    silent = SilentServer()
    try:
        with ScriptedUpstream(default=Reply.text("hi", usage=(10, 5, 0))) as upstream:
            config = _config(
                upstream, rules_file, redis_url=f"redis://127.0.0.1:{silent.port}/0", redis_retry_after_s=120
            )
            gw = GatewayProcess(config, tmp_path)
            secret = create_key(gw, "patient", "--rpm", "100")
            with gw:
                assert ask(gw, secret)["x-tiergate-tier"] == "frontier"  # waited out the timeout, then failed open
                connections, received = silent.connections, silent.received
                assert connections >= 1 and received > 0
                for _ in range(4):
                    assert ask(gw, secret)["x-tiergate-tier"] == "frontier"
                assert (silent.connections, silent.received) == (connections, received)  # not asked again
                assert metric(gw, "tiergate_limit_store_errors_total") >= 5
    finally:
        silent.close()


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    if not _redis_up():
        pytest.skip(f"no Redis server answers PING at {REDIS_HOST}:{REDIS_PORT}")
    proxy = TcpProxy((REDIS_HOST, REDIS_PORT))
    yield proxy
    proxy.stop()


def _redis(*command: str) -> bytes:
    """One command to the real Redis, RESP by hand (the test needs no client library)."""
    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=5) as conn:
        parts = [f"*{len(command)}\r\n".encode()] + [f"${len(c)}\r\n{c}\r\n".encode() for c in command]
        conn.sendall(b"".join(parts))
        return conn.recv(65536)


@pytest.mark.redis
def test_spend_counted_while_redis_was_away_is_kept(rules_file: Path, tmp_path: Path, redis_proxy: TcpProxy) -> None:
    with ScriptedUpstream(default=Reply.text("hi", usage=(10, 5, 0))) as upstream:
        config = _config(
            upstream, rules_file, redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0", redis_retry_after_s=0.2
        )
        gw = GatewayProcess(config, tmp_path)
        secret = create_key(gw, f"away-{uuid.uuid4().hex[:6]}", "--budget-day", "4", "--over-budget", "refuse")
        with gw:  # Redis unreachable from the start
            ask(gw, secret)  # $1.50, counted by this replica only
            redis_proxy.start()
            time.sleep(0.5)  # past the back-off: the next call reaches Redis
            ask(gw, secret)  # admitted ($1.50 < $4); $3.00 after it, and Redis has both
            ask(gw, secret)  # admitted ($3.00 < $4); $4.50 after it
            error, _ = refused(gw, secret)
            assert "spent $4.5" in error["message"]
            # Redis forgets the key's spend (a restart, an eviction): the replica puts back what it knew.
            with sqlite3.connect(tmp_path / "ledger.sqlite3") as connection:
                (key_id,) = connection.execute("SELECT id FROM api_keys WHERE name LIKE 'away-%'").fetchone()
            today = time.gmtime()
            counters = [
                f"tiergate:spend:day:{key_id}:{time.strftime('%Y-%m-%d', today)}",
                f"tiergate:spend:month:{key_id}:{time.strftime('%Y-%m', today)}",
            ]
            assert all(_redis("GET", c) == b"$13\r\n4500000000000\r\n" for c in counters)
            _redis("DEL", *counters)
            error, _ = refused(gw, secret)
            assert "spent $4.5" in error["message"]
            assert wait_until(lambda: all(_redis("GET", c) == b"$13\r\n4500000000000\r\n" for c in counters), 10)
