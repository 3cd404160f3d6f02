"""Refusing JSON Schemas that cannot be schemas (tool parameters, `response_format`) before any tier sees them.

A tool whose `parameters` say `{"type": "nonsense"}` would otherwise fail deep inside the local grammar builder or at
the frontier provider; OpenAI answers it with a 400 naming the parameter, and so do we. Agents send the same tools
on every step, so each distinct schema is checked once and the verdict is cached by a digest of its content (the
digest, not the content: a schema may be megabytes, and a cache of 1024 of them would hold gigabytes).
"""

from __future__ import annotations

import hashlib
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
        problem = _cached_problem(key, schema, object_only)
    if problem is not None:
        raise InvalidRequest(f"Invalid schema for {what}: {problem}", param=param, code="invalid_schema")


_CACHE_ENTRIES = 1024
_verdicts: dict[bytes, str | None] = {}
"""Digest of (canonical schema, object_only) -> the problem found, or None. Bounded: the oldest entry leaves first
(a dict keeps insertion order; a few lines here rather than functools.lru_cache, which would key on the content)."""


def _cached_problem(key: bytes, schema: dict[str, Any], object_only: bool) -> str | None:
    digest = hashlib.blake2b(key, digest_size=16, person=b"object" if object_only else b"any").digest()
    try:
        return _verdicts[digest]
    except KeyError:
        pass
    problem = _schema_problem_of(schema, object_only)
    if len(_verdicts) >= _CACHE_ENTRIES:
        del _verdicts[next(iter(_verdicts))]
    _verdicts[digest] = problem
    return problem


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
