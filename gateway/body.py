"""Reading a JSON request body within limits: size first (before reading it all), then JSON, then our types."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from gateway.errors import validation_param
from router.errors import InvalidRequest, PayloadTooLarge

Model = TypeVar("Model", bound=BaseModel)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    try:
        # orjson rejects invalid UTF-8 and nesting deeper than 1024 levels, both of which we want refused.
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc.msg}).", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def parse_model(model: type[Model], body: dict[str, Any]) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = validation_param(tuple(first["loc"]))
        message = f"Invalid value for {param}: {first['msg']}." if param else f"Invalid request: {first['msg']}."
        raise InvalidRequest(message, param=param) from None
