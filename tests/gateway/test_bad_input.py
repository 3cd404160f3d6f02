"""Bad requests get a 4xx in OpenAI's error shape, never a 500, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from support.gateway_server import GatewayProcess


def _post(gateway: GatewayProcess, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions",
        content=content,
        headers={"content-type": "application/json", **(headers or {})},
        timeout=30,
    )


def _assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "local", "messages": [', None),
        (b"\xff\xfe{}", None),
        (b"[1, 2, 3]", None),
        (b'{"model": "local"}', "messages"),
        (b'{"model": "local", "messages": []}', "messages"),
        (b'{"model": "local", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0]"),
        (b'{"model": "local", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}', "temperature"),
        (b'{"model": "local", "messages": [{"role": "user", "content": "hi"}], "n": 3}', "n"),
        (b'{"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000000}', "max_tokens"),
        (
            b'{"model": "local", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}',
            "tool_choice",
        ),
    ],
)
def test_invalid_bodies_are_400(gateway: GatewayProcess, body: bytes, param: str | None) -> None:
    error = _assert_openai_error(_post(gateway, body), 400, param)
    assert error["type"] == "invalid_request_error"


def test_deep_nesting_is_refused(gateway: GatewayProcess) -> None:
    body = b'{"model": "local", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    _assert_openai_error(_post(gateway, body), 400)


def test_oversized_body_is_413(gateway: GatewayProcess) -> None:
    big = b'{"model": "local", "messages": [{"role": "user", "content": "' + b"a" * (5 * 1024 * 1024) + b'"}]}'
    error = _assert_openai_error(_post(gateway, big), 413)
    assert error["code"] == "payload_too_large"


def test_unknown_model_is_404_through_the_openai_client(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


def test_unknown_path_has_the_error_shape(gateway: GatewayProcess) -> None:
    r = httpx.get(gateway.base_url + "/nothing-here", timeout=10)
    _assert_openai_error(r, 404)


def test_server_still_answers_after_bad_input(gateway: GatewayProcess) -> None:
    _post(gateway, b"{not json")
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(gateway.url + "/readyz", timeout=10).json()["ready"] is True
