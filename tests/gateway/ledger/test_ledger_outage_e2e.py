"""Through the real server, on PostgreSQL: while the database is away, requests still succeed; their rows appear
once it is back."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from ledger_testkit import count_rows, postgres_url, wait_until
from support.gateway_server import GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


def test_requests_succeed_while_the_database_is_away_and_their_rows_arrive_later(
    postgres_user: str, postgres_schema: str, postgres_proxy: TcpProxy, tmp_path: Path
) -> None:
    through_proxy = postgres_url(postgres_user, postgres_schema, port=postgres_proxy.port)
    direct = postgres_url(postgres_user, postgres_schema)
    config = {
        "local_models": [{"name": "gemma3-270m", "threads": 1, "context_tokens": 2048}],
        "ledger": {"database_url": through_proxy, "retry_interval_ms": 200},
    }
    with ScriptedUpstream(default=Reply.text("ok")) as up:
        config["frontier_models"] = [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": up.base_url, "api_key_env": None}
        ]
        with GatewayProcess(config, tmp_path) as gw:

            def ask() -> str:
                r = httpx.post(
                    gw.base_url + "/chat/completions",
                    timeout=30,
                    json={"model": "frontier", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert r.status_code == 200
                return r.headers["x-request-id"]

            ask()
            assert wait_until(lambda: count_rows(direct) == 1)
            postgres_proxy.stop()  # the database goes away
            during = [ask() for _ in range(5)]
            assert len(during) == 5 and count_rows(direct) == 1
            postgres_proxy.start()  # and comes back
            assert wait_until(lambda: count_rows(direct) == 6, timeout_s=20)
