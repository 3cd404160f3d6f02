"""Fuzzing, bounded in time: the published OpenAPI schema through the real server (schemathesis), and the JSON body
parser in-process (hypothesis). No input may give a 5xx, a hang or any exception other than our 4xx errors, and
the server must still answer afterwards.

The fuzzed server sends every request to a scripted frontier upstream (an enforced rule), so a generated body that
happens to name the local model never waits on llama.cpp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from fastapi import Request
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from gateway.body import parse_model, read_json_object
from gateway.wire import ChatCompletionRequest, check_message_count
from router.errors import InvalidRequest

ALL_TO_THE_FRONTIER = """\
version: 1
threshold: 0.5
rules:
  - name: everything-to-the-frontier
    when: {prompt_tokens: {">=": 0}}
    action: frontier
    enforce: true
"""
CHAT = ("POST", "/v1/chat/completions")
FUZZ = settings(
    deadline=None,  # each example is an HTTP round trip on a busy machine; the bound is max_examples
    database=None,
    derandomize=True,  # the same examples on every run: a failure reproduces, the cost is known
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("fuzz")
    rules = workdir / "rules.yaml"
    rules.write_text(ALL_TO_THE_FRONTIER)
    with ScriptedUpstream(default=Reply.text("fuzzed"), record=False) as upstream:
        config = {
            "local_models": [LOCAL_TEST_MODEL],
            "frontier_models": [
                {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
            ],
            "routing": {"rules_file": str(rules)},
        }
        with GatewayProcess(config, workdir) as gw:
            yield gw


def _assert_handled(status: int, body: bytes, what: str) -> None:
    assert status < 500, f"{what}: {status} {body[:500]!r}"
    if status >= 400:
        error = orjson.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, f"{what}: {body[:500]!r}"
        assert error["message"] and error["type"]


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, examples: int) -> None:
    what = f"{operation.label} ({mode.value})"

    @settings(FUZZ, max_examples=examples)
    @given(case=operation.as_strategy(generation_mode=mode))
    def survives(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, timeout=15)
        _assert_handled(response.status_code, response.content, what)

    survives()


def test_the_schema_declares_the_chat_body(fuzzed: GatewayProcess) -> None:
    document = httpx.get(fuzzed.url + "/openapi.json", timeout=10).json()
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["required"] is True
    reference = body["content"]["application/json"]["schema"]["$ref"]
    declared = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert {"model", "messages"} <= set(declared["required"])
    assert {"tools", "max_tokens", "stream", "n", "response_format"} <= set(declared["properties"])


def test_every_operation_of_the_published_schema_survives_fuzzing(fuzzed: GatewayProcess) -> None:
    schema = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert CHAT in {(op.method.upper(), op.path) for op in operations}
    for operation in operations:
        examples = 40 if (operation.method.upper(), operation.path) == CHAT else 5
        _fuzz(operation, GenerationMode.POSITIVE, fuzzed.url, examples)
        try:
            _fuzz(operation, GenerationMode.NEGATIVE, fuzzed.url, examples)
        except Unsatisfiable:
            # Every declared input accepts any value (optional plain strings, or no input at all): nothing to break.
            assert (operation.method.upper(), operation.path) != CHAT, "no invalid chat body was generated"
    assert httpx.get(fuzzed.url + "/healthz", timeout=10).status_code == 200
    ok = httpx.post(
        fuzzed.base_url + "/chat/completions",
        json={"model": "frontier", "messages": [{"role": "user", "content": "still there?"}]},
        timeout=15,
    )
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "fuzzed"


# --- the JSON body parser, in-process --------------------------------------------------------------------------

LIMIT = 64 * 1024


def _read(raw: bytes) -> dict[str, Any]:
    """`read_json_object` on a real Starlette request whose body arrives in two pieces."""
    pieces = [raw[: len(raw) // 2], raw[len(raw) // 2 :]]

    async def receive() -> dict[str, Any]:
        piece = pieces.pop(0) if pieces else b""
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
    return asyncio.run(read_json_object(Request(scope, receive), LIMIT))


def _parse(raw: bytes) -> None:
    """The whole handler's parsing: either an internal request comes out, or an `InvalidRequest` (a 4xx)."""
    try:
        body = _read(raw)
        check_message_count(body, 16)
        parse_model(ChatCompletionRequest, body).to_internal("chatcmpl-fuzz", raw=body)
    except InvalidRequest as exc:
        assert 400 <= exc.status < 500
        assert exc.message


int64 = st.integers(-(2**63), 2**63 - 1)  # orjson writes no wider integer (its parser reads wider ones as floats)
json_values = st.recursive(
    st.none() | st.booleans() | int64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard"])
messages = st.lists(
    st.fixed_dictionaries({"role": roles}, optional={"content": json_values, "tool_call_id": json_values}),
    max_size=20,
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": st.text(max_size=8)}, optional={"parameters": json_values}),
        }
    ),
    max_size=3,
)
near_valid_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "local", ""]) | json_values, "messages": messages},
    optional={
        "tools": tools | json_values,
        "tool_choice": st.sampled_from(["none", "auto", "required"]) | json_values,
        "n": int64 | json_values,
        "max_tokens": int64 | json_values,
        "stop": json_values,
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "json_object", "json_schema"])},
            optional={
                "json_schema": st.fixed_dictionaries({"name": st.text(max_size=5)}, optional={"schema": json_values})
            },
        ),
        "stream": json_values,
    },
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_are_refused(raw: bytes) -> None:
    _parse(raw)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(json_values)
def test_arbitrary_json_values_parse_or_are_refused(value: Any) -> None:
    _parse(orjson.dumps(value))


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(near_valid_bodies)
def test_nearly_valid_chat_bodies_parse_or_are_refused(body: dict[str, Any]) -> None:
    _parse(orjson.dumps(body))


def test_a_body_over_the_limit_is_refused_while_it_streams_in() -> None:
    with pytest.raises(InvalidRequest) as info:
        _read(b'{"a": "' + b"x" * LIMIT + b'"}')
    assert info.value.status == 413


def test_the_nearly_valid_strategy_also_reaches_accepted_requests() -> None:
    # Were every generated body refused, the test above would exercise the refusals only.
    def accepted(body: dict[str, Any]) -> bool:
        try:
            parse_model(ChatCompletionRequest, body).to_internal("chatcmpl-fuzz", raw=body)
        except InvalidRequest:
            return False
        return bool(body["messages"])

    found = find(near_valid_bodies, accepted, settings=settings(database=None, derandomize=True, max_examples=2000))
    assert found["messages"]
