"""Chat completions from the embedded model, through the real server, with the official openai client."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest
from llama_cpp import Llama
from support.gateway_server import GatewayProcess

from local_models.embedded import ensure_embedded_model

pytestmark = pytest.mark.model

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="anything-for-now", max_retries=0, timeout=120)


def test_plain_completion(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.model == "gemma3-270m"
    assert r.id.startswith("chatcmpl-")
    assert r.usage is not None and r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_concatenates_to_the_same_text(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(model="local", messages=messages, max_tokens=40, temperature=0, seed=7)
    chunks = list(
        client.chat.completions.create(
            model="local",
            messages=messages,
            max_tokens=40,
            temperature=0,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and not usage_chunks[0].choices
    streamed = usage_chunks[0].usage
    assert streamed is not None and whole.usage is not None
    # cached_tokens may differ: the second request reuses the prompt the first one left in the model's context.
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )


def test_usage_equals_the_models_own_token_counts(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ours = client.chat.completions.create(model="local", messages=messages, max_tokens=24, temperature=0)
    direct = Llama(
        model_path=str(ensure_embedded_model(Path("~/.cache/tiergate").expanduser())),
        n_ctx=4096,
        chat_format="gemma",
        verbose=False,
    )
    try:
        theirs = direct.create_chat_completion(messages=messages, max_tokens=24, temperature=0)  # type: ignore[arg-type]
    finally:
        direct.close()
    assert ours.usage is not None
    assert ours.usage.prompt_tokens == theirs["usage"]["prompt_tokens"]  # type: ignore[index]
    assert ours.usage.completion_tokens == theirs["usage"]["completion_tokens"]  # type: ignore[index]
    assert ours.choices[0].message.content == theirs["choices"][0]["message"]["content"]  # type: ignore[index]


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_call_matches_the_schema(client: openai.OpenAI, tool_choice: object) -> None:
    r = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=tool_choice,  # type: ignore[arg-type]
        max_tokens=60,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]


def test_streamed_tool_call_matches_the_schema(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            assert call.index == 0
            name += call.function.name or "" if call.function else ""
            arguments += call.function.arguments or "" if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]


def test_json_schema_response_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Invent a person with a name and an age, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=60,
        temperature=0,
    )
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)


def test_json_object_response_parses(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Give me a JSON object describing a cat."}],
        response_format={"type": "json_object"},
        max_tokens=20,
        temperature=0,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    else:  # cut at max_tokens: still the start of an object
        assert (r.choices[0].message.content or "").lstrip().startswith("{")


def test_models_lists_the_local_model(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gemma3-270m", "local"} <= ids
