"""Schema compaction keeps every name, type, enum value, required list and default; it only drops what is noise."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompt_compression.schema import SchemaCompactor, compact_tool, shorten_description
from prompt_compression.structure import structural_differences
from router.chat import Tool

BFCL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bfcl"


def _all_bfcl_functions() -> list[Tool]:
    """Every distinct function definition in the shared BFCL files, exactly as BFCL writes it."""
    seen: dict[str, Tool] = {}
    for path in sorted(BFCL.glob("BFCL_v4_*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for function in json.loads(line)["function"] if line.strip() else ():
                key = json.dumps(function, sort_keys=True)
                seen.setdefault(key, Tool(function["name"], function["description"], function["parameters"]))
    return list(seen.values())


@pytest.fixture(scope="module")
def bfcl_functions() -> list[Tool]:
    functions = _all_bfcl_functions()
    assert len(functions) > 1000, f"expected the shared BFCL set under {BFCL}"
    return functions


@pytest.mark.parametrize("limits", [(100, 50), (0, 0)])
def test_compaction_preserves_structure_of_every_bfcl_function(
    bfcl_functions: list[Tool], limits: tuple[int, int]
) -> None:
    broken = {}
    for function in bfcl_functions:
        before = copy.deepcopy(function.parameters)
        problems = structural_differences(function, compact_tool(function, *limits))
        if problems:
            broken[function.name] = problems
        assert function.parameters == before, f"compaction modified its input {function.name}"
    assert broken == {}


def test_compaction_makes_bfcl_schemas_smaller(bfcl_functions: list[Tool]) -> None:
    def size(tools: list[Tool]) -> int:
        return sum(len(orjson.dumps([t.description, t.parameters])) for t in tools)

    sample = bfcl_functions[::4]
    generous = size([compact_tool(f, 120, 60) for f in sample])
    tight = size([compact_tool(f, 60, 30) for f in sample])
    assert tight < generous < 0.9 * size(sample)


def test_structural_check_catches_each_kind_of_change() -> None:
    original = Tool(
        "book",
        "Book a room.",
        {
            "type": "dict",
            "properties": {
                "size": {"type": "string", "enum": ["s", "m"], "default": "s"},
                "nights": {"type": "integer"},
                "guests": {"type": "array", "items": {"type": "float"}},
            },
            "required": ["nights"],
        },
    )
    intact = compact_tool(original, 120, 60)
    assert structural_differences(original, intact) == []

    def changed(edit: Any) -> Tool:
        parameters = copy.deepcopy(intact.parameters)
        edit(parameters)
        return Tool(intact.name, intact.description, parameters)

    assert structural_differences(original, Tool("book2", intact.description, intact.parameters))
    assert structural_differences(original, changed(lambda p: p["properties"]["size"]["enum"].pop()))
    assert structural_differences(original, changed(lambda p: p["properties"]["size"].update(default="m")))
    assert structural_differences(original, changed(lambda p: p["properties"]["nights"].update(type="number")))
    assert structural_differences(original, changed(lambda p: p["properties"]["guests"]["items"].update(type="x")))
    assert structural_differences(original, changed(lambda p: p.update(required=[])))
    assert structural_differences(original, changed(lambda p: p["properties"].pop("guests")))
    assert structural_differences(original, changed(lambda p: p["properties"]["nights"].update(default=1)))


def test_noise_goes_and_python_types_become_json_schema() -> None:
    tool = Tool(
        "search",
        "**Search** the [catalogue](https://example.com). Returns matches. Results are paged.",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "SearchArgs",
            "type": "dict",
            "properties": {
                "title": {"type": "string", "title": "Title", "description": "Book title, e.g. `Dune`."},
                "limit": {
                    "type": "integer",
                    "examples": [5],
                    "description": "Max results. Default is 10.",
                    "default": 10,
                },
                "payload": {"type": "any", "description": "Anything at all."},
                "ratio": {"type": "float", "description": "The ratio."},
            },
            "required": ["title"],
        },
    )
    compacted = compact_tool(tool, 40, 60)
    assert compacted.description == "Search the catalogue. Returns matches."
    params = compacted.parameters
    assert params["type"] == "object"
    assert "title" not in params and "$schema" not in params
    assert list(params["properties"]) == ["title", "limit", "payload", "ratio"]  # a property named `title` stays
    assert params["properties"]["title"] == {"type": "string", "description": "Book title, e.g. Dune."}
    assert params["properties"]["limit"] == {"type": "integer", "description": "Max results.", "default": 10}
    assert params["properties"]["payload"] == {"description": "Anything at all."}
    assert params["properties"]["ratio"] == {"type": "number"}  # "The ratio." only repeats the name
    assert params["required"] == ["title"]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Get the weather. Uses a paid API.", 100, "Get the weather. Uses a paid API."),
        ("Get the weather. Uses a paid API.", 20, "Get the weather."),
        ("City name, e.g. San Francisco. Required.", 32, "City name, e.g. San Francisco."),
        ("Returns the current weather for a location anywhere", 24, "Returns the current…"),
        ("Anything", 0, ""),
    ],
)
def test_descriptions_shorten_by_sentence_then_word(text: str, limit: int, expected: str) -> None:
    shortened = shorten_description(text, limit)
    assert shortened == expected
    assert len(shortened) <= limit + 1  # the cut mark may follow a full-length cut


def test_compactor_caches_by_content_and_keeps_untouched_tools() -> None:
    compactor = SchemaCompactor(120, 60, max_entries=10)
    tool = Tool("f", "Do it. " * 40, {"type": "object", "properties": {"x": {"type": "string", "title": "X"}}})
    first = compactor.compact(tool)
    again = compactor.compact(Tool(tool.name, tool.description, copy.deepcopy(tool.parameters)))
    assert again is first
    plain = Tool("g", "Short.", {"type": "object", "properties": {"y": {"type": "integer"}}, "required": ["y"]})
    assert compactor.compact(plain) is plain


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8) | st.sampled_from(
    ["title", "description", "default", "type", "examples", "properties", "required", "$schema"]
)
_values = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
_leaf = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "integer", "float", "boolean", "any", "tuple", "number"])},
    optional={
        "description": st.text(max_size=200),
        "enum": st.lists(_values, max_size=4),
        "default": _values | st.dictionaries(_names, _values, max_size=3),
        "title": st.text(max_size=10),
        "format": st.sampled_from(["date", "uri"]),
        "minimum": st.integers(),
    },
)
_schema = st.recursive(
    _leaf,
    lambda inner: (
        st.builds(
            lambda props, req, desc: {"type": "dict", "properties": props, "required": req, "description": desc},
            st.dictionaries(_names, inner, max_size=4),
            st.lists(_names, max_size=3),
            st.text(max_size=80),
        )
        | st.builds(lambda items: {"type": "array", "items": items}, inner)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(_schema, st.integers(min_value=0, max_value=100))
def test_compaction_preserves_structure_of_generated_schemas(schema: dict[str, Any], limit: int) -> None:
    tool = Tool("f", "A tool.", schema)
    assert structural_differences(tool, compact_tool(tool, limit, limit)) == []


def test_a_default_written_only_in_prose_survives_shortening() -> None:
    text = "The unit of measurement for the radius of the circle. Default is 'cm'."
    assert shorten_description(text, 40).endswith("Default is 'cm'.")
    assert "Default" not in shorten_description(text, 40, has_default=True)  # the schema's `default` says it


def test_parameter_description_saying_nothing_beyond_names_goes_and_one_with_news_stays() -> None:
    properties = {
        "start_date": {"type": "string", "description": "The start date for the booking."},
        "location": {"type": "string", "description": "City and state, e.g. Denver, CO"},
        "weight": {"type": "number", "description": "Weight of the hotel room's luggage in kg."},
    }
    tool = Tool("book_hotel", "Book a hotel room.", {"type": "object", "properties": properties})
    compacted = compact_tool(tool, 100, 60).parameters["properties"]
    assert "description" not in compacted["start_date"]
    assert compacted["location"]["description"] == "City and state, e.g. Denver, CO"
    assert compacted["weight"]["description"] == "Weight of the hotel room's luggage in kg."
    # Without a function description the model cannot read `booking` anywhere else: the words must stay.
    bare = compact_tool(Tool("reserve", "", tool.parameters), 100, 60).parameters["properties"]
    assert bare["start_date"]["description"] == "Start date for the booking."
