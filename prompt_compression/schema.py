"""Tool schema compaction: the same tool, in fewer tokens.

What goes: keys that carry no meaning for the model (`title`, `examples`, `$schema`, `$id`, `$comment`), markdown
in descriptions, a leading `The`/`A`/`This function`, description sentences that repeat the `default`, descriptions
that only repeat the parameter's name, top-level parameter descriptions whose every word is the parameter's, the
function's (its name and kept description) or generic (`Start date for the booking.` on `start_date` of
`book_hotel`), empty `required` lists (JSON Schema reads a missing list as empty), and description text beyond a
budget: whole leading sentences while they fit, else the first sentence cut at a clause or word boundary (a word cut
is marked `…`). A default stated only in prose is kept whatever the budget.

What never changes: function names, property names and their order, types (after the alias mapping below), enum and
const values, `required` lists, defaults, and every other keyword (`format`, bounds, `items`, `additionalProperties`,
unknown keys such as BFCL's `optional`), copied verbatim. `structure.structural_differences` checks exactly this.

Type aliases. Clients (and BFCL) sometimes write Python-style types; they become JSON Schema types:

    dict -> object    float, double -> number    int, long -> integer    str -> string    bool -> boolean
    list, tuple -> array    any -> (no `type` keyword: any value, which is what JSON Schema means by it)

Anything else is kept as written. The mapping is the one BFCL applies when it sends these tools to OpenAI models,
except `any`, which BFCL turns into `string`: dropping the keyword keeps the meaning instead.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from typing import Any

import orjson

from prompt_compression.selection import terms
from router.chat import Tool

TYPE_ALIASES: dict[str, str | None] = {
    "dict": "object",
    "float": "number",
    "double": "number",
    "int": "integer",
    "long": "integer",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
    "any": None,
}
"""Python-style type names and the JSON Schema type each stands for (None: unconstrained)."""

DROPPED_KEYS = frozenset({"title", "examples", "example", "$schema", "$id", "$comment", "markdownDescription"})
"""Schema keywords that carry no meaning for the model."""

_SCHEMA_KEYS = frozenset({"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"})
_SCHEMA_LIST_KEYS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_MAP_KEYS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_FIRST_KEYS = ("type", "description", "enum", "const", "default")
"""Keys written first, in this order, so one tool always renders the same way (prefix caches stay valid)."""

_STOPWORDS = frozenset({"the", "a", "an", "of", "to", "for", "this", "that", "is", "be", "used", "value"})
_ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "vs", "mr", "mrs", "dr", "no", "approx", "incl", "ca", "st"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+")
_DEFAULT_SENTENCE = re.compile(r"^\(?\s*(?:the\s+)?(?:default|defaults|if not (?:specified|provided|given))\b", re.I)
_MARKDOWN = (
    (re.compile(r"```[a-zA-Z0-9_+-]*\n?"), ""),  # code fences (the code inside stays)
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links keep their text
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),  # bold; `__x__` is left alone, it is as likely a Python name
    (re.compile(r"<br\s*/?>", re.I), " "),
)
_MARKDOWN_LINES = (
    (re.compile(r"(?m)^\s{0,3}#{1,6}\s+"), ""),  # headings
    (re.compile(r"(?m)^\s*(?:[-*+]|\d+\.)\s+"), ""),  # list bullets
)
"""Only in text of several lines: a one-line `# of results` is not a heading."""
_MARKDOWN_HINT = re.compile(r"[`*\[<\n]")
"""Text without any of these has no markdown: most descriptions skip the patterns above."""
_SPACE = re.compile(r"\s+")
_LEADING_FILLER = re.compile(r"^(?:the|an?|this (?:function|tool|api|endpoint|method)(?: will)?)\s+(?=[a-z])", re.I)
"""`The name of ...` says no more than `Name of ...`; `This function adds ...` no more than `Adds ...`."""
_CLAUSE_MARKS = (", ", "; ", ": ", " (", " - ")


def normalise_type(value: Any) -> Any:
    """The JSON Schema form of a `type` value; None means no `type` keyword (any value)."""
    if isinstance(value, str):
        return TYPE_ALIASES.get(value, value)
    if isinstance(value, list):
        mapped = [TYPE_ALIASES.get(v, v) if isinstance(v, str) else v for v in value]
        return None if None in mapped else mapped
    return value


def normalise_types(schema: Any) -> Any:
    """A copy of `schema` with Python-style types mapped to JSON Schema and nothing else changed."""
    if not isinstance(schema, dict):
        return _copy(schema)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            mapped = normalise_type(value)
            if mapped is not None:
                out[key] = mapped
        elif key in _SCHEMA_KEYS:
            out[key] = normalise_types(value)
        elif key in _SCHEMA_LIST_KEYS and isinstance(value, list):
            out[key] = [normalise_types(v) for v in value]
        elif key in _SCHEMA_MAP_KEYS and isinstance(value, dict):
            out[key] = {k: normalise_types(v) for k, v in value.items()}
        else:
            out[key] = _copy(value)
    return out


def strip_markdown(text: str) -> str:
    """The text without markdown markup (the words stay), on one line."""
    if _MARKDOWN_HINT.search(text):
        for pattern, replacement in _MARKDOWN + (_MARKDOWN_LINES if "\n" in text.strip() else ()):
            text = pattern.sub(replacement, text)
    return _SPACE.sub(" ", text).strip()


def _copy(value: Any) -> Any:
    """A copy of a JSON value; scalars are immutable and shared (`copy.deepcopy` is several times slower)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _sentences(text: str) -> list[str]:
    """Split after `.`, `!` or `?` plus space, but not after abbreviations (`e.g.`) or initials (`J.`)."""
    parts = _SENTENCE_END.split(text)
    sentences: list[str] = []
    for part in parts:
        if sentences:
            last_word = sentences[-1].rsplit(" ", 1)[-1].rstrip(".").lower()
            if last_word in _ABBREVIATIONS or len(last_word) == 1:
                sentences[-1] += " " + part
                continue
        sentences.append(part)
    return sentences


def _cut(sentence: str, limit: int) -> str:
    """`sentence` within `limit` characters: whole when it fits, else up to a clause break, else a word-boundary cut."""
    if len(sentence) <= limit:
        return sentence
    clause_end = max(sentence.rfind(mark, 0, limit + 1) for mark in _CLAUSE_MARKS)
    if clause_end >= limit // 2:
        return sentence[:clause_end]  # a whole clause reads better than a cut-off word
    cut = sentence[: limit + 1].rsplit(" ", 1)[0][:limit].rstrip(" ,;:-([")
    return cut + "…" if cut else ""


def shorten_description(text: str, limit: int, *, has_default: bool = False) -> str:
    """Markdown-free text within `limit` characters: leading sentences while they fit, else a cut first sentence.

    A sentence stating the default goes when the schema has a `default` (it repeats it) and stays, beyond the limit
    if need be, when it has none: then the prose is the only place the default is written.
    """
    if limit <= 0:
        return ""
    text = _LEADING_FILLER.sub("", strip_markdown(text), count=1)
    text = text[:1].upper() + text[1:]
    sentences = _sentences(text)
    body, stated = sentences, []
    if len(sentences) > 1:
        body = [s for s in sentences if not _DEFAULT_SENTENCE.match(s)] or sentences
        stated = [] if has_default or body is sentences else [s for s in sentences if s not in body]
    tail = " ".join(stated)
    room = limit - len(tail) - (1 if tail else 0)
    kept: list[str] = []
    length = 0
    for sentence in body:
        extra = len(sentence) + (1 if kept else 0)
        if length + extra > room:
            break
        kept.append(sentence)
        length += extra
    head = " ".join(kept) if kept else _cut(body[0], room) if body and room > 0 else ""
    return f"{head} {tail}" if head and tail else head or tail


def _only_repeats_name(description: str, name: str) -> bool:
    """True for descriptions such as `The city.` on a parameter named `city`: they add nothing."""
    words = set(_WORD.findall(description.lower())) - _STOPWORDS
    name_words = set(_WORD.findall(re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower()))
    return words <= name_words


_GENERIC = frozenset(
    terms("data given id identifier input number object option parameter provided specified string type unique value")
)
"""Words a parameter description may hold and still say nothing new (as `selection.terms` stems them)."""


def _adds_nothing(description: str, name: str, context: frozenset[str]) -> bool:
    """True when every word of a parameter's description is its name's, the function's, or generic: `Start date for
    the booking.` on `start_date` of `book_hotel` tells the model nothing the schema does not already show."""
    words = set(terms(description)) - _GENERIC
    return words <= set(terms(name.replace("_", " "))) | context


def compact_schema(
    schema: Any,
    description_chars: int,
    name: str | None = None,
    context: frozenset[str] | None = None,
    parameters: frozenset[str] | None = None,
) -> Any:
    """The compacted form of one JSON Schema node (see the module docstring for what may change).

    `name`: the node's property name. `context`: stemmed words the model reads about this node elsewhere (its
    function's name and kept description); `parameters`: the same for the node's own properties (top level only).
    """
    if not isinstance(schema, dict):
        return _copy(schema)
    out: dict[str, Any] = {}
    keys = [k for k in _FIRST_KEYS if k in schema] + [k for k in schema if k not in _FIRST_KEYS]
    for key in keys:
        value = schema[key]
        if key in DROPPED_KEYS:
            continue
        if key == "type":
            mapped = normalise_type(value)
            if mapped is not None:
                out[key] = mapped
        elif key == "description" and isinstance(value, str):
            text = shorten_description(value, description_chars, has_default="default" in schema)
            redundant = name is not None and (
                _only_repeats_name(text, name) or (context is not None and _adds_nothing(text, name, context))
            )
            if text and not redundant:
                out[key] = text
        elif key == "required" and value == []:
            continue
        elif key in _SCHEMA_KEYS:
            out[key] = compact_schema(value, description_chars)
        elif key in _SCHEMA_LIST_KEYS and isinstance(value, list):
            out[key] = [compact_schema(v, description_chars) for v in value]
        elif key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {k: compact_schema(v, description_chars, k, parameters) for k, v in value.items()}
        elif key in _SCHEMA_MAP_KEYS and isinstance(value, dict):
            out[key] = {k: compact_schema(v, description_chars) for k, v in value.items()}
        else:
            out[key] = _copy(value)
    return out


def compact_tool(tool: Tool, description_chars: int, parameter_description_chars: int) -> Tool:
    description = shorten_description(tool.description, description_chars)
    # What the model will read about the function: its top-level parameters need not repeat it.
    context = frozenset(terms(tool.name.replace(".", " ").replace("_", " ") + " " + description))
    parameters = compact_schema(tool.parameters, parameter_description_chars, parameters=context)
    return Tool(tool.name, description, parameters)


def content_key(tool: Tool) -> bytes:
    """A digest of everything in `tool`; equal tools from different requests share it."""
    try:
        body = orjson.dumps([tool.name, tool.description, tool.parameters])
    except TypeError:  # a non-JSON value in the schema; hash its repr instead
        body = repr((tool.name, tool.description, tool.parameters)).encode()
    return hashlib.blake2b(body, digest_size=16).digest()


class SchemaCompactor:
    """Compacts tools, remembering results by content hash so a repeated tool costs one hash.

    The compacted tools it returns are shared between requests: read them, never modify them.
    """

    def __init__(self, description_chars: int, parameter_description_chars: int, max_entries: int) -> None:
        self._description_chars = description_chars
        self._parameter_description_chars = parameter_description_chars
        self._max_entries = max_entries
        self._cache: OrderedDict[bytes, Tool] = OrderedDict()
        self._lock = threading.Lock()

    def compact(self, tool: Tool, key: bytes | None = None) -> Tool:
        """The compacted tool; `tool` itself when compaction changes nothing. `key`: its `content_key`, if known."""
        if key is None:
            key = content_key(tool)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        compacted = compact_tool(tool, self._description_chars, self._parameter_description_chars)
        if compacted == tool:
            compacted = tool
        if self._max_entries > 0:
            with self._lock:
                self._cache[key] = compacted
                while len(self._cache) > self._max_entries:
                    self._cache.popitem(last=False)
        return compacted

    def __len__(self) -> int:
        return len(self._cache)
