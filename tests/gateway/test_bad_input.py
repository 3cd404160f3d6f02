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


_HI = [{"role": "user", "content": "hi"}]


def _tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "lookup", "parameters": parameters}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "local", "messages": "hi"}, "messages"),
        ({"model": 5, "messages": _HI}, "model"),
        ({"model": "local", "messages": _HI, "max_tokens": "many"}, "max_tokens"),
        ({"model": "local", "messages": _HI, "tools": {}}, "tools"),
        ({"model": "local", "messages": _HI, "stream": "maybe"}, "stream"),
        ({"model": "local", "messages": [{"role": "user", "content": 5}]}, "messages[0]"),
        ({"model": "local", "messages": _HI, "n": 10**20}, "n"),
        # The local tier checks its limit on the resolved budget and names it max_tokens either way.
        ({"model": "local", "messages": _HI, "max_completion_tokens": 10**12}, "max_"),
        ({"model": "local", "messages": _HI, "max_tokens": 10**30}, "max_tokens"),
    ],
    ids=[
        "messages-string",
        "model-number",
        "max_tokens-string",
        "tools-object",
        "stream-word",
        "content-number",
        "huge-n",
        "huge-max_completion_tokens",
        "max_tokens-beyond-64-bit",
    ],
)
def test_wrong_types_and_huge_values_are_400(gateway: GatewayProcess, body: dict[str, Any], param: str) -> None:
    r = httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=30)
    error = _assert_openai_error(r, 400)
    assert error["type"] == "invalid_request_error"
    assert (error["param"] or "").startswith(param)


def test_too_many_messages_is_400_before_any_is_read(gateway: GatewayProcess) -> None:
    # 2048 is the default limit; the messages here are not even valid, so the count is checked first.
    body = {"model": "local", "messages": [{"role": "wizard"}] * 2049}
    r = httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=30)
    error = _assert_openai_error(r, 400, "messages")
    assert error["code"] == "array_above_max_length"
    assert "2049" in error["message"] and "2048" in error["message"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "nonsense"},
        {"type": "string"},
        {"type": "object", "properties": {"city": {"type": "string", "pattern": "("}}},
        {"type": "object", "properties": {"city": 5}},
        {"type": "object", "required": "city"},
        "not a schema",
    ],
    ids=["unknown-type", "not-an-object", "bad-regex", "property-not-a-schema", "required-not-a-list", "string"],
)
def test_tools_with_invalid_parameter_schemas_are_400(gateway: GatewayProcess, parameters: Any) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="local", messages=_HI, tools=[_tool(parameters)], max_tokens=1)
    assert info.value.param == "tools[0].function.parameters"
    assert info.value.type == "invalid_request_error"


def test_an_invalid_response_format_schema_is_400(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="local",
            messages=_HI,
            max_tokens=1,
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": 7}}},
        )
    assert info.value.param == "response_format.json_schema.schema"


def test_a_valid_tool_schema_is_accepted(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=120)
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string", "pattern": "^[A-Z]"}},
        "required": ["city"],
    }
    answer = client.chat.completions.create(
        model="local", messages=_HI, tools=[_tool(parameters)], tool_choice="none", max_tokens=1
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
