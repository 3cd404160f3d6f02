"""Tool selection: which of the offered tools a request keeps when they are too many or too large.

Tools are ranked against the latest user turn with BM25 over each tool's name (weighted up), description and
parameter names and descriptions. No BM25 library is installed, and a vectoriser such as scikit-learn's costs
milliseconds per call; the index over one request's tools is tiny, so it is built here and cached per tool set.

Within a session the chosen set is remembered and reused while it still holds every tool that must be kept and the
best match for the new turn, so the rendered prompt (and llama.cpp's prefix cache) stays the same turn after turn.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from router.chat import ChatRequest, NamedToolChoice, Tool

_K1 = 1.2
_B = 0.75
_NAME_WEIGHT = 3.0
_PARAMETER_NAME_WEIGHT = 1.0
_TEXT_WEIGHT = 1.0
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+|[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
"""ASCII words (camelCase and snake_case split apart), numbers, and CJK characters one by one."""
_STOPWORD_TEXT = (
    "a about also an and any are as at be but by can could d do does for from get has have how i if in into is "
    "it its just know ll m me much my need not of on or our please re s set should so some t tell than that the "
    "their them then there these this those to us use used ve want was we were what when where which who will "
    "with would you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
"""Words that say nothing about which tool fits, conversational fillers (`could`, `want`, `I'd`) included."""


@functools.lru_cache(maxsize=65_536)
def _stem(word: str) -> str:
    """A small suffix stripper that sends inflections to one stem: `movies`, `movie` -> `movi`; `planning`,
    `planned`, `plan` -> `plan`; `reservations`, `reserve` -> `reserv`; `cities`, `city` -> `citi`."""
    if len(word) <= 3 or not word.isascii() or not word.isalpha():
        return word
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ation", "ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouylsz":
                word = word[:-1]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("y"):
        word = word[:-1] + "i"
    return word


def terms(text: str) -> list[str]:
    """The search terms of a text: lower-case stems without stop words."""
    words = (w.lower() for w in _WORD.findall(text))
    return [_stem(w) for w in words if w not in _STOPWORDS]


def _schema_text(schema: Any, weights: dict[str, float]) -> None:
    """Add parameter names and descriptions, nested ones included, to a term-weight map."""
    if not isinstance(schema, dict):
        return
    description = schema.get("description")
    if isinstance(description, str):
        _add(weights, terms(description), _TEXT_WEIGHT)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, child in properties.items():
            _add(weights, terms(name), _PARAMETER_NAME_WEIGHT)
            _schema_text(child, weights)
    _schema_text(schema.get("items"), weights)


def _add(weights: dict[str, float], words: list[str], weight: float) -> None:
    for word in words:
        weights[word] = weights.get(word, 0.0) + weight


def name_terms(tool: Tool) -> list[str]:
    return terms(tool.name.replace(".", " ").replace("_", " "))


def _document(tool: Tool) -> dict[str, float]:
    weights: dict[str, float] = {}
    _add(weights, name_terms(tool), _NAME_WEIGHT)
    _add(weights, terms(tool.description), _TEXT_WEIGHT)
    properties = tool.parameters.get("properties")
    if isinstance(properties, dict):
        for name, child in properties.items():
            _add(weights, terms(name), _PARAMETER_NAME_WEIGHT)
            _schema_text(child, weights)
    return weights


class ToolIndex:
    """BM25 postings over one set of tools: term -> [(tool position, term score)]."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        documents = [_document(t) for t in tools]
        lengths = [sum(d.values()) for d in documents]
        average = (sum(lengths) / len(lengths)) if lengths else 1.0
        frequency: dict[str, int] = {}
        for document in documents:
            for term in document:
                frequency[term] = frequency.get(term, 0) + 1
        count = len(documents)
        self.size = count
        self.names = [frozenset(name_terms(t)) for t in tools]
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for position, (document, length) in enumerate(zip(documents, lengths, strict=True)):
            norm = _K1 * (1 - _B + _B * length / (average or 1.0))
            for term, tf in document.items():
                df = frequency[term]
                idf = math.log(1 + (count - df + 0.5) / (df + 0.5))
                self.postings.setdefault(term, []).append((position, idf * tf * (_K1 + 1) / (tf + norm)))

    def scores(self, query: Sequence[str]) -> list[float]:
        """Each tool's BM25 score for the query terms."""
        totals = [0.0] * self.size
        for term in set(query):
            for position, score in self.postings.get(term, ()):
                totals[position] += score
        return totals


@functools.lru_cache(maxsize=1024)
def _turn_terms(text: str) -> tuple[str, ...]:
    """Cached: an agent re-sends the same user turn at every step of its loop."""
    return tuple(terms(text))


def query_terms(request: ChatRequest) -> list[str]:
    """What the ranking follows: the latest user turn's terms, or all user turns' when that one has none."""
    users = [m.content for m in request.messages if m.role == "user" and m.content]
    latest = _turn_terms(users[-1]) if users else ()
    return list(latest) or [t for text in users[:-1] for t in _turn_terms(text)]


def must_keep(request: ChatRequest) -> set[str]:
    """Names of tools that are never dropped: the one tool_choice names and those already called."""
    names = {call.name for m in request.messages for call in m.tool_calls}
    if isinstance(request.tool_choice, NamedToolChoice):
        names.add(request.tool_choice.name)
    return names


@dataclass(frozen=True, slots=True)
class Ranking:
    """The offered tools by relevance: positions best first (ties keep the request's order), and which must stay."""

    order: tuple[int, ...]
    scores: tuple[float, ...]
    kept_always: frozenset[int]
    named_terms: tuple[frozenset[str], ...]
    """Per tool, the query terms its name contains."""

    def trim(self, keep: Sequence[int], count: int) -> list[int]:
        """`keep` cut to its `count` best tools (tools that must stay survive any cut), in the request's order."""
        wanted = set(keep)
        chosen = set(self.kept_always & wanted)
        for position in self.order:
            if len(chosen) >= count:
                break
            if position in wanted:
                chosen.add(position)
        return sorted(chosen)


@dataclass(frozen=True, slots=True)
class Selection:
    """Positions of the tools kept, in the request's order, and of those among them that keep full descriptions."""

    kept: list[int]
    full: frozenset[int]


@dataclass(frozen=True, slots=True)
class _SessionChoice:
    tool_set: bytes
    kept: tuple[int, ...]
    full: frozenset[int]


class ToolSelector:
    """Ranks and selects tools; remembers tool-set indexes and each session's last choice (both bounded)."""

    def __init__(self, max_indexes: int, max_sessions: int) -> None:
        self._max_indexes = max_indexes
        self._max_sessions = max_sessions
        self._indexes: OrderedDict[bytes, ToolIndex] = OrderedDict()
        self._sessions: OrderedDict[str, _SessionChoice] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def tool_set_key(content_keys: Sequence[bytes]) -> bytes:
        return hashlib.blake2b(b"".join(content_keys), digest_size=16).digest()

    def _index(self, tools: Sequence[Tool], tool_set: bytes) -> ToolIndex:
        with self._lock:
            index = self._indexes.get(tool_set)
            if index is not None:
                self._indexes.move_to_end(tool_set)
                return index
        index = ToolIndex(tools)
        if self._max_indexes > 0:
            with self._lock:
                self._indexes[tool_set] = index
                while len(self._indexes) > self._max_indexes:
                    self._indexes.popitem(last=False)
        return index

    def rank(self, request: ChatRequest, tool_set: bytes) -> Ranking:
        index = self._index(request.tools, tool_set)
        query = query_terms(request)
        scores = index.scores(query)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        names = must_keep(request)
        always = frozenset(i for i, t in enumerate(request.tools) if t.name in names)
        asked = frozenset(query)
        return Ranking(tuple(order), tuple(scores), always, tuple(n & asked for n in index.names))

    def select(
        self,
        request: ChatRequest,
        ranking: Ranking,
        tool_set: bytes,
        *,
        max_tools: int,
        min_tools: int,
        relative_cutoff: float,
        session_key: str | None,
        full_tools: int,
    ) -> Selection:
        """The tools to keep (the must-keep tools plus the best others) and, of those, the `full_tools` best-ranked
        plus the one tool_choice names: they keep full descriptions."""
        best = ranking.order[0] if ranking.order else None
        if session_key is not None:
            with self._lock:
                previous = self._sessions.get(session_key)
            if previous is not None and previous.tool_set == tool_set:
                needed = set(ranking.kept_always)
                if best is not None and ranking.scores[best] > 0:
                    needed.add(best)
                if needed <= set(previous.kept):
                    return Selection(list(previous.kept), previous.full)
        named = isinstance(request.tool_choice, NamedToolChoice)
        slots = max(max_tools - len(ranking.kept_always), 0 if named else 1)
        others = [i for i in ranking.order if i not in ranking.kept_always]
        if relative_cutoff > 0 and best is not None and ranking.scores[best] > 0:
            others = self._relevant(ranking, others, relative_cutoff * ranking.scores[best], min_tools)
        kept = sorted(ranking.kept_always | set(others[:slots]))
        return Selection(kept, self.leading(request, ranking, kept, full_tools))

    @staticmethod
    def leading(request: ChatRequest, ranking: Ranking, kept: Sequence[int], count: int) -> frozenset[int]:
        """The `count` best-ranked of `kept`, plus the tool tool_choice names (the model must call that one)."""
        wanted = set(kept)
        best = [i for i in ranking.order if i in wanted][:count]
        choice = request.tool_choice
        if isinstance(choice, NamedToolChoice):
            best += [i for i in kept if request.tools[i].name == choice.name]
        return frozenset(best)

    @staticmethod
    def _relevant(ranking: Ranking, others: list[int], floor: float, min_tools: int) -> list[int]:
        """Tools scoring at least `floor`, plus any whose name holds a query term no such tool's name holds
        (a request asking for two things names both; the second often scores far below the first)."""
        relevant = [i for i in others if ranking.scores[i] >= floor]
        covered = set().union(*(ranking.named_terms[i] for i in [*ranking.kept_always, *relevant]))
        rest: list[int] = []
        for i in others:
            if ranking.scores[i] >= floor:
                continue
            if ranking.named_terms[i] - covered:
                covered |= ranking.named_terms[i]
                relevant.append(i)
            else:
                rest.append(i)
        fill = max(min_tools - len(ranking.kept_always) - len(relevant), 0)
        return relevant + rest[:fill]

    def remember(self, session_key: str | None, tool_set: bytes, kept: Sequence[int], full: frozenset[int]) -> None:
        """Record the set a session finally used (and which of it kept full descriptions), so its next turn can
        render the very same tools."""
        if session_key is None or self._max_sessions <= 0:
            return
        with self._lock:
            self._sessions[session_key] = _SessionChoice(tool_set, tuple(kept), full)
            self._sessions.move_to_end(session_key)
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
