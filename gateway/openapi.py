"""The published OpenAPI document, with the chat completions body declared.

The chat handler reads its body itself (size limit first, then orjson), so FastAPI cannot see a body model in its
signature. The document states it anyway, from the same pydantic model the handler validates with, so clients and
schema-driven fuzzers (tests/gateway/test_fuzz.py) know what the endpoint takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from gateway.wire import ChatCompletionRequest

CHAT_PATH = "/v1/chat/completions"
_REF = "#/components/schemas/{model}"


def install_openapi(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _declare_chat_body(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_chat_body(document: dict[str, Any]) -> None:
    operation = document.get("paths", {}).get(CHAT_PATH, {}).get("post")
    if operation is None:
        return
    body = ChatCompletionRequest.model_json_schema(ref_template=_REF)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in body.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[ChatCompletionRequest.__name__] = body
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=ChatCompletionRequest.__name__)}}},
    }
