"""Plain facts about a request that the router scores and the rules test, extracted in one pass.

Content signals (code, math, reasoning, asks, corrections) read only what the user and tools wrote: a long system
prompt or tool list is the agent framework's boilerplate, not a sign that this step is hard. Intent signals (math,
reasoning markers, asks, code markers) read the latest user message, which in an agent run is the task and in a
chat is the current question; within it they scan a bounded window (`INTENT_WINDOW_CHARS`, head and tail) so their
cost does not grow with a pasted document.

Token counts are estimates (`estimate_tokens`), not tiktoken counts: measured here, an exact count costs more than
the whole routing budget on long prompts (bench/router_decision.py), while the decisions that use counts (a weight
on a log scale, a coarse rule threshold) hardly move with the estimate's error (within about 15% on English text).
The one decision that is sensitive to the exact size, whether the prompt fits the local context, takes the
caller's count of the compacted local prompt (`SignalContext.local_prompt_tokens`) when it has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, get_origin, get_type_hints

import orjson

from router.chat import ChatRequest, NamedToolChoice, Tool
from router.sessions import NO_SESSION, SessionState

INTENT_WINDOW_CHARS = 4000
"""Intent markers are looked for in the first and last `INTENT_WINDOW_CHARS` of the latest user message."""
MARKER_CAP = 50
"""Counts of markers stop here; beyond it more of the same tells nothing."""
RECENT_TOOL_TURNS = 10
"""Stall signals look at this many of the most recent tool calls and tool results."""
RECENT_USER_TURNS = 20
"""Corrections are looked for in this many of the most recent user turns."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat template adds around each message (role markers), as OpenAI's counting guide has it."""
TOOL_OVERHEAD_TOKENS = 8
"""Tokens the rendering of a tool adds around its name, description and schema."""


@dataclass(frozen=True, slots=True)
class SignalContext:
    """What the request alone cannot tell the router."""

    local_context_tokens: int
    """The local model's context window."""
    local_prompt_tokens: int | None = None
    """The prompt's size for the local model after compaction, if the caller measured it; None means estimate."""
    local_completion_tokens: int = 512
    """Room kept for the answer when the request sets no `max_tokens`."""
    local_queue_depth: int = 0
    session: SessionState = NO_SESSION
    policy_tags: frozenset[str] = frozenset()
    """Policy tags of the API key (e.g. `local-only`)."""


@dataclass(frozen=True, slots=True)
class Signals:
    """Facts about one request. Every field is a plain int, bool or str (`policy_tags` a tuple of str)."""

    model: str
    """The model the client asked for (`auto`, `local`, `frontier`, or a configured name)."""
    prompt_tokens: int
    """Estimated tokens of the whole prompt: every message and the tool definitions."""
    content_tokens: int
    """Estimated tokens of user and tool turns only."""
    local_prompt_tokens: int
    local_context_tokens: int
    fits_local_context: bool
    """The local prompt plus room for the answer fits the local context window."""
    messages: int
    user_turns: int
    tool_results: int
    tools: int
    tool_choice: str
    """`none`, `auto`, `required` or `named`."""
    response_format: str
    """`text`, `json_object` or `json_schema`."""
    structured_output: bool
    images: int
    code_blocks: int
    """Fenced code blocks in user and tool turns."""
    code_markers: int
    """Signs of a programming task in the latest user message (inline code, keywords, language names)."""
    math: int
    """Math markers in the latest user message: math words and phrases, LaTeX, operators and symbols."""
    reasoning_markers: int
    """Phrases asking for reasoning in the latest user message ("step by step", "prove", "compare", ...)."""
    asks: int
    """Distinct requests in the latest user message (questions, list items, "also ...")."""
    multi_intent: bool
    """`asks` is two or more."""
    corrections: int
    """User turns that correct the previous answer ("no, that's wrong", "try again") or re-ask a question."""
    reasked: bool
    """The latest user message asks again what an earlier one asked."""
    correction_now: bool
    """The newest message is a user correction or re-ask: new in this step, so the session counts it."""
    repeated_tool_calls: int
    """Recent tool calls identical (name and arguments) to an earlier recent call."""
    tool_errors: int
    """Recent tool results that report a failure."""
    tool_error_streak: int
    """Failing tool results in a row at the end of the conversation."""
    stalled: bool
    """The agent is going round in circles: the same call made three times, or the last two tool results failed."""
    session_steps: int
    session_corrections: int
    session_stalls: int
    session_escalations: int
    local_queue_depth: int
    policy_tags: tuple[str, ...] = field(default=())
    """The key's policy tags, sorted."""

    def as_dict(self) -> dict[str, Any]:
        """The signals for a log line or ledger row; fields that are zero, false or empty are left out."""
        out: dict[str, Any] = {}
        for name in _SIGNAL_NAMES:  # not dataclasses.fields(): that costs more than the loop, on every request
            value = getattr(self, name)
            if value:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


_SIGNAL_NAMES = tuple(f.name for f in fields(Signals))

SIGNAL_TYPES: dict[str, type] = {name: get_origin(hint) or hint for name, hint in get_type_hints(Signals).items()}
"""Each signal's Python type (`int`, `bool`, `str` or `tuple`), for checking rule conditions at load."""


# --- markers ----------------------------------------------------------------------------------------------------
# Intent markers are found on words, not with one regular expression per kind: an alternation of a hundred words
# is tried at every position of the text, which measured 100-400 ns a character here, while lower(), translate()
# and split() run in C at a few ns a character, and one set intersection then finds the marker words present.
# Markers count distinct words and phrases (saying "code" ten times is one sign of code, not ten). A phrase is
# looked for, among the words re-joined by single spaces, only when its first word is present.

_CODE_FENCE = "```"


def _vocabulary(words: str) -> frozenset[str]:
    return frozenset(words.split())


_SEPARATORS = str.maketrans({c: " " for c in '!"#$%&()*+,-./:;<=>?@[\\]^`{|}~“”‘—–…'} | {"’": "'"})
"""Punctuation to spaces, one character for one: str.translate has a fast path for that on ASCII text."""
_MATH_OPERATORS = ("+", "=", "^")
_MATH_SYMBOLS = "×÷≤≥≠∑∫√π∞∂"
_CODE_WORDS = _vocabulary(
    "def class function functions func fn import return const lambda async await struct impl void select insert "
    "python javascript typescript java rust golang kotlin swift sql regex bash shell html css json yaml code coding "
    "implement implementing implementation refactor refactoring compile compiler compiling debug debugging bug bugs "
    "stacktrace segfault script algorithm algorithms api endpoint unittest pytest"
)
_MATH_WORDS = _vocabulary(
    "integral integrals integrate derivative derivatives differentiate equation equations inequality inequalities "
    "theorem lemma polynomial polynomials logarithm logarithms matrix matrices eigenvalue eigenvalues eigenvector "
    "eigenvectors probability probabilities modulo factorial prime primes divisible remainder calculate compute "
    "percent percentage average ratio sum frac sqrt cdot infty binom leq geq"
)
_REASONING_WORDS = _vocabulary(
    "prove proof derive derivation justify analyze analyse analysis compare comparison contrast tradeoff tradeoffs "
    "evaluate design architecture architect plan strategy optimize optimise optimization critique rigorous "
    "rigorously implication implications"
)
_ALSO_WORDS = _vocabulary("also additionally furthermore moreover")
_PHRASES = {
    "code": ("stack trace", "unit test*"),
    "math": ("how many", "how much", "solve for"),
    "reasoning": (
        "step by step", "think carefully", "think through", "think hard", "explain why", "explain how", "in detail",
        "why does", "why do", "why is", "why are", "why did", "reason about", "reasoning about", "root cause",
        "pros and cons", "trade off*", "in depth", "edge case*", "consider all", "consider each",
    ),
    "also": ("as well as", "and then", "after that"),
}  # fmt: skip
"""Marker phrases by kind; a trailing `*` lets the last word go on ("edge cases")."""


def _index_phrases() -> dict[str, tuple[tuple[str, str], ...]]:
    """First word -> (what to look for among the space-joined words, kind)."""
    index: dict[str, list[tuple[str, str]]] = {}
    for kind, phrases in _PHRASES.items():
        for phrase in phrases:
            needle = f" {phrase[:-1]}" if phrase.endswith("*") else f" {phrase} "
            index.setdefault(phrase.split()[0], []).append((needle, kind))
    return {head: tuple(needles) for head, needles in index.items()}


_PHRASES_BY_HEAD = _index_phrases()
_MARKER_WORDS = _CODE_WORDS | _MATH_WORDS | _REASONING_WORDS | _ALSO_WORDS | frozenset(_PHRASES_BY_HEAD)
_ITEM_STARTS = frozenset("-*•0123456789")

_CORRECTION = re.compile(
    r"^\W*(?:no|nope|wrong|incorrect|not quite)\b"
    r"|\b(?:that|this|it|you|answer|still)(?:['’]s|['’]re| is| are| was)? (?:still )?(?:not (?:right|correct)"
    r"|wrong|incorrect)\b"
    r"|\btry (?:again|once more)\b|\b(?:doesn['’]t|does not|didn['’]t|did not|won['’]t|still) work"
    r"|\bnot what i (?:asked|wanted|meant)\b|\byou (?:misunderstood|got it wrong|made a mistake|missed)\b",
    re.IGNORECASE,
)
_CORRECTION_HINTS = ("no", "wrong", "incorrect", "not ", "try ", "work", "misunderstood", "mistake", "missed")
"""Substrings one of which every correction contains: the regex runs only on turns that have one."""
_CORRECTION_HEAD_CHARS = 300
_TOOL_ERROR = re.compile(
    r"^[\s*#>(\[-]*(?:error|exception|traceback|failed|failure|fatal)\b"
    r"|\b(?:command not found|no such file|permission denied|timed out|not found|unauthorized|forbidden)\b"
    r"|\bstatus(?: code)?\W{0,3}[45]\d\d\b"
    r'|"error"\s*:(?!\s*(?:null|false|""|\{\}|\[\]))'
    r"|\w(?:error|exception):|traceback \(most recent call last\)",
    re.IGNORECASE,
)
_TOOL_ERROR_HINTS = ("error", "exception", "traceback", "fail", "fatal", "not found", "no such", "denied",
                     "timed out", "unauthorized", "forbidden", "status")  # fmt: skip
_TOOL_ERROR_HEAD_CHARS = 300
_REASK_MIN_WORDS = 3
_REASK_JACCARD = 0.8
_REASK_HEAD_CHARS = 1000


def estimate_tokens(text: str) -> int:
    """Tokens of `text` for a BPE tokenizer like cl100k, estimated from its length.

    About four characters a token for ASCII text; characters outside ASCII (accents, Cyrillic, CJK) take more
    tokens each, so their extra UTF-8 bytes add a token per three. The error against tiktoken is measured in
    bench/router_decision.py.
    """
    n = len(text)
    if text.isascii():
        return (n + 3) // 4
    extra = len(text.encode("utf-8", "surrogatepass")) - n
    return (n + 3) // 4 + extra // 3


class _Intent(NamedTuple):
    code_markers: int = 0
    math: int = 0
    reasoning: int = 0
    asks: int = 0


def _window(text: str) -> str:
    if len(text) <= 2 * INTENT_WINDOW_CHARS:
        return text
    return text[:INTENT_WINDOW_CHARS] + "\n" + text[-INTENT_WINDOW_CHARS:]


def _intent(text: str) -> _Intent:
    """Intent markers of one user message (within its window)."""
    text = _window(text)
    low = text.lower()
    words = low.translate(_SEPARATORS).split()
    if not words:
        return _Intent()
    hits = _MARKER_WORDS.intersection(words)
    phrases = {"code": 0, "math": 0, "reasoning": 0, "also": 0}
    heads = hits.intersection(_PHRASES_BY_HEAD)
    if heads:
        joined = " " + " ".join(words) + " "
        for head in heads:
            for needle, kind in _PHRASES_BY_HEAD[head]:
                if needle in joined:
                    phrases[kind] += 1

    fences = low.count(_CODE_FENCE)
    inline_code = max(0, (low.count("`") - 3 * fences) // 2)
    languages = low.count("c++") + low.count("c#")
    code = len(hits & _CODE_WORDS) + phrases["code"] + languages + inline_code
    math = len(hits & _MATH_WORDS) + phrases["math"] + low.count("$") // 2
    math += sum(low.count(op) for op in _MATH_OPERATORS) - 2 * low.count("c++")
    if not low.isascii():
        math += sum(low.count(symbol) for symbol in _MATH_SYMBOLS)
    questions = low.count("?") - low.count("??")
    items = sum(1 for line in text.splitlines() if line.lstrip()[:1] in _ITEM_STARTS and _is_list_item(line))
    asks = max(1, questions, items) + len(hits & _ALSO_WORDS) + phrases["also"]
    return _Intent(
        code_markers=min(code, MARKER_CAP),
        math=max(0, min(math, MARKER_CAP)),
        reasoning=min(len(hits & _REASONING_WORDS) + phrases["reasoning"], MARKER_CAP),
        asks=min(asks, MARKER_CAP),
    )


def _is_list_item(line: str) -> bool:
    """`1. ...`, `2) ...`, `- ...`, `* ...`, `• ...`: one entry of a list of asks."""
    item = line.lstrip()
    marker, _, rest = item.partition(" ")
    if not rest.strip():
        return False
    return marker in ("-", "*", "•") or (len(marker) <= 3 and marker[:-1].isdigit() and marker[-1:] in ".)")


def _words(text: str) -> frozenset[str]:
    return frozenset(text[:_REASK_HEAD_CHARS].lower().translate(_SEPARATORS).split())


def _is_reask(latest: str, earlier: list[str]) -> bool:
    words = _words(latest)
    if len(words) < _REASK_MIN_WORDS:
        return False
    for text in earlier:
        other = _words(text)
        if other and len(words & other) / len(words | other) >= _REASK_JACCARD:
            return True
    return False


def _tool_failed(content: str | None) -> bool:
    if not content:
        return False
    head = content[:_TOOL_ERROR_HEAD_CHARS]
    low = head.lower()
    return any(hint in low for hint in _TOOL_ERROR_HINTS) and _TOOL_ERROR.search(head) is not None


def _tool_choice_name(request: ChatRequest) -> str:
    choice = request.tool_choice
    return "named" if isinstance(choice, NamedToolChoice) else choice


def extract_signals(request: ChatRequest, context: SignalContext) -> Signals:
    """The request's signals. One walk over the messages collects what the windowed analyses below need."""
    total_chars_tokens = 0
    content_tokens = 0
    user_turns = 0
    tool_results = 0
    images = 0
    code_blocks = 0
    user_texts: list[str] = []
    user_seen_answer: list[bool] = []
    """Per user turn: whether an assistant turn came before it (only then can it correct anything)."""
    tool_calls: list[tuple[str, str]] = []
    tool_texts: list[str] = []
    tools_since_user = 0
    answered = False
    messages = request.messages
    for message in messages:
        text = message.content or ""
        tokens = estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS
        role = message.role
        if role == "user":
            user_turns += 1
            images += message.image_count
            content_tokens += tokens
            if "`" in text:  # a one-character search runs at memchr speed; most turns have no code
                code_blocks += text.count(_CODE_FENCE) // 2
            user_texts.append(text)
            user_seen_answer.append(answered)
            tools_since_user = 0
        elif role == "tool":
            tool_results += 1
            content_tokens += tokens
            if "`" in text:
                code_blocks += text.count(_CODE_FENCE) // 2
            tool_texts.append(text)
            tools_since_user += 1
        elif role == "assistant":
            answered = True
            for call in message.tool_calls:
                tokens += estimate_tokens(call.name) + estimate_tokens(call.arguments)
                tool_calls.append((call.name, "".join(call.arguments.split())))
        total_chars_tokens += tokens

    tool_tokens = _tool_tokens(request.tools) if request.tools else 0
    prompt_tokens = total_chars_tokens + tool_tokens
    local_prompt = context.local_prompt_tokens if context.local_prompt_tokens is not None else prompt_tokens
    answer_room = request.sampling.max_tokens or context.local_completion_tokens

    intent = _intent(user_texts[-1]) if user_texts else _Intent()
    corrections, reasked = _corrections(user_texts, user_seen_answer)
    latest_is_user = bool(messages) and messages[-1].role == "user"
    correction_now = latest_is_user and user_seen_answer[-1] and (reasked or _is_correction(user_texts[-1]))

    recent_calls = tool_calls[-RECENT_TOOL_TURNS:]
    repeated = len(recent_calls) - len(set(recent_calls))
    recent_outcomes = [_tool_failed(text) for text in tool_texts[-RECENT_TOOL_TURNS:]]
    streak = _trailing_failures(recent_outcomes[len(recent_outcomes) - min(tools_since_user, RECENT_TOOL_TURNS) :])
    session = context.session
    return Signals(
        model=request.model,
        prompt_tokens=prompt_tokens,
        content_tokens=content_tokens,
        local_prompt_tokens=local_prompt,
        local_context_tokens=context.local_context_tokens,
        fits_local_context=local_prompt + answer_room <= context.local_context_tokens,
        messages=len(messages),
        user_turns=user_turns,
        tool_results=tool_results,
        tools=len(request.tools),
        tool_choice=_tool_choice_name(request),
        response_format=request.response_format.type,
        structured_output=request.response_format.type != "text",
        images=images,
        code_blocks=code_blocks,
        code_markers=intent.code_markers,
        math=intent.math,
        reasoning_markers=intent.reasoning,
        asks=intent.asks,
        multi_intent=intent.asks >= 2,
        corrections=corrections,
        reasked=reasked,
        correction_now=correction_now,
        repeated_tool_calls=repeated,
        tool_errors=sum(recent_outcomes),
        tool_error_streak=streak,
        stalled=_max_repeats(recent_calls) >= 3 or streak >= 2,
        session_steps=session.steps,
        session_corrections=session.corrections,
        session_stalls=session.stalls,
        session_escalations=session.escalations,
        local_queue_depth=context.local_queue_depth,
        policy_tags=tuple(sorted(context.policy_tags)),
    )


def _tool_tokens(tools: list[Tool]) -> int:
    # Serialising the schemas (plain dicts, orjson's fast path) measures them without walking them in Python.
    schemas = len(orjson.dumps([tool.parameters for tool in tools]))
    texts = sum(len(tool.name) + len(tool.description) for tool in tools)
    return (schemas + texts + 3) // 4 + TOOL_OVERHEAD_TOKENS * len(tools)


def _is_correction(text: str) -> bool:
    head = text[:_CORRECTION_HEAD_CHARS]
    low = head.lower()
    return any(hint in low for hint in _CORRECTION_HINTS) and _CORRECTION.search(head) is not None


def _corrections(user_texts: list[str], seen_answer: list[bool]) -> tuple[int, bool]:
    """Corrections among recent user turns, and whether the latest one re-asks an earlier question."""
    first = max(0, len(user_texts) - RECENT_USER_TURNS)
    count = sum(
        1 for text, after in zip(user_texts[first:], seen_answer[first:], strict=True) if after and _is_correction(text)
    )
    reasked = len(user_texts) > 1 and seen_answer[-1] and _is_reask(user_texts[-1], user_texts[first:-1])
    if reasked and not _is_correction(user_texts[-1]):
        count += 1
    return count, reasked


def _trailing_failures(outcomes: list[bool]) -> int:
    """Failing tool results in a row at the end of `outcomes` (the recent results since the last user turn)."""
    streak = 0
    for failed in reversed(outcomes):
        if not failed:
            break
        streak += 1
    return streak


def _max_repeats(calls: list[tuple[str, str]]) -> int:
    counts: dict[tuple[str, str], int] = {}
    for call in calls:
        counts[call] = counts.get(call, 0) + 1
    return max(counts.values(), default=0)
