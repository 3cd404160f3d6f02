"""The compressor the gateway calls on the request path, once the tier is chosen.

Steps, each only as far as needed:
1. compact every tool schema (always, when enabled; cached by content hash);
2. keep the `max_tools` tools most relevant to the latest user turn (and those that must stay); the best-ranked
   keep the full description budgets, the others (less likely to be called) get the smaller `other_*` budgets;
then, only while the request is over its token budget:
3. cut old tool results;
4. drop the least relevant tools, down to `min_tools`;
5. drop the oldest tool calls with their results.
Steps 3-5 estimate how much to remove from character counts and confirm with the token counter, so a request costs a
few counter calls at most, not one per message. The counter's time is the caller's (it runs the model's tokenizer);
everything else takes well under a millisecond once a tool set has been seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from prompt_compression import history
from prompt_compression.schema import SchemaCompactor, content_key
from prompt_compression.selection import Ranking, Selection, ToolSelector
from prompt_compression.settings import CompressionSettings
from prompt_compression.tokens import TokenCounter
from router.chat import ChatRequest, Message, Tool

_MAX_COUNTS_PER_STEP = 4
"""Counter calls each over-budget step may make before it settles for what it has."""


@dataclass(frozen=True)
class CompressionResult:
    """What compression did to one request.

    `request` is the input itself when nothing changed. Otherwise it is a new request with `raw` cleared, so that a
    pass-through upstream is sent a body rebuilt from the changed fields rather than the client's original.
    """

    request: ChatRequest
    tokens_before: int
    tokens_after: int
    tools_dropped: tuple[str, ...]

    @property
    def header(self) -> str:
        """The `x-tiergate-compression` header value, such as `4210->1380`."""
        return f"{self.tokens_before}->{self.tokens_after}"

    @property
    def changed(self) -> bool:
        """False when the request passes unchanged (its original body may then be forwarded as it is)."""
        return self.tokens_before != self.tokens_after or bool(self.tools_dropped)


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    """Whether two lists hold the very same objects (nothing was replaced)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _tool_size(tool: Tool) -> int:
    return len(tool.name) + len(tool.description) + len(repr(tool.parameters))


def _message_size(message: Message) -> int:
    calls = sum(len(c.name) + len(c.arguments) for c in message.tool_calls)
    return len(message.content or "") + calls


class Compressor:
    """Shrinks requests for one tier within a token budget; safe to share between threads.

    It never modifies the request it is given. Unchanged messages are shared with the input, and compacted tools
    are shared between requests: treat the result as read-only.
    """

    def __init__(self, settings: CompressionSettings, count_tokens: TokenCounter) -> None:
        self.settings = settings
        self._count = count_tokens
        self._compactor = SchemaCompactor(
            settings.description_chars, settings.parameter_description_chars, settings.schema_cache_entries
        )
        self._lean = SchemaCompactor(
            settings.other_description_chars, settings.other_parameter_description_chars, settings.schema_cache_entries
        )
        # Rank-aware budgets change something only where the lower-ranked tools' budgets are smaller.
        self._tiered = settings.compact_schemas and (
            settings.other_description_chars < settings.description_chars
            or settings.other_parameter_description_chars < settings.parameter_description_chars
        )
        self._selector = ToolSelector(max(settings.schema_cache_entries // 8, 1), settings.session_cache_entries)

    def compact_tools(self, tools: Sequence[Tool]) -> list[Tool]:
        """The tools with compacted schemas (cached), for callers that size a prompt before compressing it."""
        if not self.settings.compact_schemas:
            return list(tools)
        return [self._compactor.compact(t, content_key(t)) for t in tools]

    def compress(
        self, request: ChatRequest, budget_tokens: int | None = None, session_key: str | None = None
    ) -> CompressionResult:
        """Compress `request` to fit `budget_tokens` (default: the settings' budget; None there too: no budget).

        The result may still exceed the budget when only protected content is left; the caller decides what then.
        """
        before = self._count(request)
        settings = self.settings
        if not settings.enabled:
            return CompressionResult(request, before, before, ())
        budget = budget_tokens if budget_tokens is not None else settings.budget_tokens

        keys = [content_key(t) for t in request.tools]
        if settings.compact_schemas:
            compacted = [self._compactor.compact(t, k) for t, k in zip(request.tools, keys, strict=True)]
        else:
            compacted = list(request.tools)
        tool_set = ToolSelector.tool_set_key(keys)
        ranking: Ranking | None = None
        count = len(request.tools)
        selection = Selection(list(range(count)), frozenset(range(count)))
        tiered = self._tiered and count > settings.full_description_tools
        if tiered or count > settings.max_tools or (settings.relative_score_cutoff > 0 and count > settings.min_tools):
            ranking = self._selector.rank(request, tool_set)
            selection = self._selector.select(
                request,
                ranking,
                tool_set,
                max_tools=settings.max_tools,
                min_tools=settings.min_tools,
                relative_cutoff=settings.relative_score_cutoff,
                session_key=session_key,
                full_tools=settings.full_description_tools,
            )
            if tiered:
                compacted = self._lean_others(request.tools, keys, compacted, selection)
        kept, full = selection.kept, selection.full
        candidate = dataclasses.replace(request, tools=[compacted[i] for i in kept], messages=list(request.messages))
        after = before if _same(candidate.tools, request.tools) else self._count(candidate)

        if budget is not None and after > budget:
            candidate, after = self._shorten_results(candidate, after)
        if budget is not None and after > budget and len(kept) > settings.min_tools:
            if ranking is None:
                ranking = self._selector.rank(request, tool_set)
            candidate, after, kept = self._drop_tools(candidate, after, budget, compacted, ranking, kept)
        if budget is not None and after > budget:
            candidate, after = self._drop_old_calls(candidate, after, budget)

        if request.tools:
            self._selector.remember(session_key, tool_set, kept, full)
        kept_set = set(kept)
        dropped = tuple(t.name for i, t in enumerate(request.tools) if i not in kept_set)
        if not dropped and _same(candidate.tools, request.tools) and _same(candidate.messages, request.messages):
            return CompressionResult(request, before, before, ())
        return CompressionResult(dataclasses.replace(candidate, raw={}), before, after, dropped)

    def _lean_others(
        self, tools: Sequence[Tool], keys: Sequence[bytes], compacted: list[Tool], selection: Selection
    ) -> list[Tool]:
        """`compacted` with the kept tools outside `selection.full` compacted to the smaller budgets."""
        lean = list(compacted)
        for i in selection.kept:
            if i not in selection.full:
                lean[i] = self._lean.compact(tools[i], keys[i])
        return lean

    def _shorten_results(self, request: ChatRequest, tokens: int) -> tuple[ChatRequest, int]:
        keep = history.protected(request.messages, self.settings.keep_last_exchanges)
        messages = history.shorten_tool_results(request.messages, keep, self.settings.tool_result_chars)
        if _same(messages, request.messages):
            return request, tokens
        shorter = dataclasses.replace(request, messages=messages)
        return shorter, self._count(shorter)

    def _drop_tools(
        self,
        request: ChatRequest,
        tokens: int,
        budget: int,
        compacted: Sequence[Tool],
        ranking: Ranking,
        kept: list[int],
    ) -> tuple[ChatRequest, int, list[int]]:
        """Drop the least relevant tools until the request fits, never below `min_tools` or a must-keep tool."""
        sizes = {i: _tool_size(compacted[i]) for i in kept}
        bare = self._count(dataclasses.replace(request, tools=[]))
        per_char = max(tokens - bare, 1) / max(sum(sizes.values()), 1)
        floor = self.settings.min_tools
        for _ in range(_MAX_COUNTS_PER_STEP):
            excess = tokens - budget
            worst_first = [i for i in reversed(ranking.order) if i in sizes and i not in ranking.kept_always]
            removed = 0.0
            count = len(kept)
            for i in worst_first:
                if removed >= excess or count <= floor:
                    break
                removed += sizes.pop(i) * per_char
                count -= 1
            new_kept = ranking.trim(kept, count)
            if new_kept == kept:
                break
            kept = new_kept
            request = dataclasses.replace(request, tools=[compacted[i] for i in kept])
            tokens = self._count(request)
            if tokens <= budget:
                break
        return request, tokens, kept

    def _drop_old_calls(self, request: ChatRequest, tokens: int, budget: int) -> tuple[ChatRequest, int]:
        """Drop the oldest tool calls with their results until the request fits or none may go."""
        for _ in range(_MAX_COUNTS_PER_STEP):
            keep = history.protected(request.messages, self.settings.keep_last_exchanges)
            candidates = history.droppable_calls(request.messages, keep)
            if not candidates:
                break
            chars = sum(_message_size(m) for m in request.messages) + sum(_tool_size(t) for t in request.tools)
            per_char = tokens / max(chars, 1)
            excess = tokens - budget
            chosen: list[history.ToolExchange] = []
            removed = 0.0
            for exchange in candidates:
                chosen.append(exchange)
                removed += exchange.size * per_char
                if removed >= excess:
                    break
            request = dataclasses.replace(request, messages=history.without_calls(request.messages, chosen))
            tokens = self._count(request)
            if tokens <= budget:
                break
        return request, tokens
