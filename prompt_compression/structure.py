"""The structural check: does a compacted tool still mean what the original meant?

Written apart from `schema.py` on purpose, as a plain node-by-node comparison, so that it checks compaction rather
than repeating it. Allowed differences, and only these: descriptions and the keys in `schema.DROPPED_KEYS`; a type
written as a Python-style alias on the original side compared through `schema.TYPE_ALIASES` (`any` may be absent);
an empty `required` list may be absent. Values are compared as JSON text, so `1`, `1.0` and `true` differ.
"""

from __future__ import annotations

from typing import Any

import orjson

from prompt_compression.schema import DROPPED_KEYS, normalise_type
from router.chat import Tool

_SCHEMA_KEYS = frozenset({"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"})
_SCHEMA_LIST_KEYS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_MAP_KEYS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_FREE_KEYS = DROPPED_KEYS | {"description"}


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return repr(value).encode()


def _compare(original: Any, compacted: Any, path: str, problems: list[str]) -> None:
    if not isinstance(original, dict) or not isinstance(compacted, dict):
        if _json(original) != _json(compacted):
            problems.append(f"{path}: {original!r} became {compacted!r}")
        return
    for key in compacted.keys() - original.keys() - {"description"}:
        problems.append(f"{path}: gained {key!r}")
    for key, value in original.items():
        where = f"{path}.{key}"
        if key in _FREE_KEYS:
            continue
        if key == "type":
            expected = normalise_type(value)
            if expected is None:
                if "type" in compacted:
                    problems.append(f"{where}: {value!r} (any) became {compacted['type']!r}")
            elif _json(compacted.get("type")) != _json(expected):
                problems.append(f"{where}: {value!r} became {compacted.get('type')!r}")
            continue
        if key == "required" and value == [] and key not in compacted:
            continue
        if key not in compacted:
            problems.append(f"{where}: missing")
            continue
        other = compacted[key]
        if key in _SCHEMA_KEYS:
            _compare(value, other, where, problems)
        elif key in _SCHEMA_LIST_KEYS and isinstance(value, list) and isinstance(other, list):
            if len(value) != len(other):
                problems.append(f"{where}: {len(value)} schemas became {len(other)}")
            for i, (a, b) in enumerate(zip(value, other, strict=False)):
                _compare(a, b, f"{where}[{i}]", problems)
        elif key in _SCHEMA_MAP_KEYS and isinstance(value, dict) and isinstance(other, dict):
            if list(value) != list(other):
                problems.append(f"{where}: names {list(value)} became {list(other)}")
            for name in value.keys() & other.keys():
                _compare(value[name], other[name], f"{where}.{name}", problems)
        elif _json(value) != _json(other):
            problems.append(f"{where}: {value!r} became {other!r}")


def structural_differences(original: Tool, compacted: Tool) -> list[str]:
    """Every change in `compacted` that alters what `original` means; empty when the structure is intact."""
    problems: list[str] = []
    if original.name != compacted.name:
        problems.append(f"name: {original.name!r} became {compacted.name!r}")
    _compare(original.parameters, compacted.parameters, original.name, problems)
    return problems
