"""Refusing JSON Schemas that cannot be schemas (tool parameters, `response_format`) before any tier sees them.

A tool whose `parameters` say `{"type": "nonsense"}` would otherwise fail deep inside the local grammar builder or at
the frontier provider; OpenAI answers it with a 400 naming the parameter, and so do we. Agents send the same tools
on every step, so each distinct schema is checked once and the verdict is cached by content.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import SchemaError

from router.errors import InvalidRequest


def check_json_schema(schema: dict[str, Any], *, param: str, what: str, object_only: bool = False) -> None:
    """Raise `InvalidRequest` naming `param` when `schema` is not a valid JSON Schema (or, with `object_only`,
    when it describes something other than an object, as function parameters must)."""
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits: rare enough to check without the cache
        problem = _schema_problem_of(schema, object_only)
    else:
        problem = _schema_problem(key, object_only)
    if problem is not None:
        raise InvalidRequest(f"Invalid schema for {what}: {problem}", param=param, code="invalid_schema")


@lru_cache(maxsize=1024)
def _schema_problem(key: bytes, object_only: bool) -> str | None:
    return _schema_problem_of(orjson.loads(key), object_only)


def _schema_problem_of(schema: dict[str, Any], object_only: bool) -> str | None:
    dialect = schema.get("$schema", "")
    if not isinstance(dialect, str):
        return "'$schema' must be a string."
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"{exc.message}" + (f" (at {where})" if where else "")
    except RecursionError:  # the body parser allows 1024 levels; the meta-schema walk needs several frames each
        return "the schema is nested too deeply."
    if object_only and schema.get("type", "object") != "object":
        return f"function parameters must be a schema of type 'object', got type {schema['type']!r}."
    return None
