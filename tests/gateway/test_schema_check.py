"""The JSON Schema check's verdict cache: right verdicts, bounded, and it does not keep the schemas themselves."""

from __future__ import annotations

import sys

import pytest

from gateway import schema_check
from gateway.schema_check import check_json_schema
from router.errors import InvalidRequest


def test_a_cached_verdict_is_the_same_verdict() -> None:
    bad = {"type": "object", "properties": {"x": {"type": "nonsense"}}}
    for _ in range(2):
        with pytest.raises(InvalidRequest) as caught:
            check_json_schema(bad, param="tools[0].function.parameters", what="tool f")
        assert caught.value.param == "tools[0].function.parameters"
    check_json_schema({"type": "string"}, param="p", what="a response format")  # fine as a schema
    with pytest.raises(InvalidRequest, match="must be a schema of type 'object'"):
        check_json_schema({"type": "string"}, param="p", what="tool f", object_only=True)  # not as parameters


def test_the_cache_is_bounded_and_holds_digests_not_schemas() -> None:
    big_description = "x" * 200_000
    for i in range(schema_check._CACHE_ENTRIES + 50):
        schema = {"type": "object", "description": big_description, "properties": {f"p{i}": {"type": "string"}}}
        check_json_schema(schema, param="p", what="tool f", object_only=True)
    assert len(schema_check._verdicts) <= schema_check._CACHE_ENTRIES
    held = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in schema_check._verdicts.items())
    assert held < 1_000_000  # about 1,000 schemas of 200 kB each went through: 200 MB if they were kept
