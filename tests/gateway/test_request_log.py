"""The per-request JSON log line, and the setting that turns it off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier")) as up:
        yield up


def _config(upstream: ScriptedUpstream, **settings: object) -> dict[str, object]:
    return {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
        ],
        **settings,
    }


@pytest.mark.parametrize("request_log", [True, False])
def test_request_log_line_follows_the_setting(upstream: ScriptedUpstream, tmp_path: Path, request_log: bool) -> None:
    with GatewayProcess(_config(upstream, request_log=request_log), tmp_path) as gateway:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=30)
        answer = client.chat.completions.create(model="frontier", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "from the frontier"
        gateway.stop()
        log = gateway.log()
    assert (answer.id in log) is request_log
    assert "tiergate.requests" in log or not request_log
