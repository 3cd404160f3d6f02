"""One generation on a loaded `Llama`, token by token. Runs on the model's worker thread, never on the event loop.

We drive `Llama.generate` ourselves rather than `create_completion` because we need, per token: a cancellation check
(a client that went away frees the model at once), exact token counts for usage in streams too, and a switch into
grammar-constrained sampling the moment the model opens a tool call under `tool_choice="auto"`.
"""

from __future__ import annotations

import codecs
import json
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_grammar import LlamaGrammar

from local_models.grammars import response_format_grammar, tool_call_grammar
from local_models.prompting import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, RenderedPrompt
from router.chat import (
    ChatRequest,
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

Emit = Callable[[StreamEvent], None]


class Cancelled(Exception):
    """The client went away; the generation stopped early."""


@dataclass(slots=True)
class _Run:
    """What one sampling pass produced."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    finish: FinishReason = "stop"


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters could be the start of a stop sequence (and so may not be sent yet)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                longest = max(longest, n)
                break
    return longest


class _CallWatch:
    """Under `tool_choice="auto"`, holds back the start of the answer until it is clearly text or a tool call."""

    def __init__(self, active: bool, emit: Emit | None) -> None:
        self._undecided: str | None = "" if active else None
        self._emit = emit
        self.is_call = False

    def on_text(self, piece: str) -> bool:
        """Pass text on; False stops sampling because the model opened a tool call."""
        if self._undecided is not None:
            self._undecided += piece
            head = self._undecided.lstrip()
            if head.startswith(TOOL_CALL_OPEN):
                self.is_call = True
                return False
            if TOOL_CALL_OPEN.startswith(head):
                return True
            piece, self._undecided = self._undecided, None
        if self._emit is not None and piece:
            self._emit(TextDelta(piece))
        return True

    def flush(self) -> None:
        if self._emit is not None and self._undecided:
            self._emit(TextDelta(self._undecided))
        self._undecided = None


class Generator:
    """Samples from one model for one request at a time (the caller serialises access)."""

    def __init__(self, llama: Llama, model_name: str) -> None:
        self._llama = llama
        self._name = model_name
        self._vocab = llama._model.vocab  # for llama_vocab_is_eog: Gemma has several end-of-generation tokens

    def tokenize_prompt(self, prompt: RenderedPrompt) -> list[int]:
        return self._llama.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)

    def _sample(
        self,
        tokens: list[int],
        request: ChatRequest,
        budget: int,
        cancel: threading.Event,
        grammar: LlamaGrammar | None,
        on_text: Callable[[str], bool] | None,
        stops: tuple[str, ...],
    ) -> _Run:
        """Sample until end of generation, a stop sequence, `budget` tokens, or `on_text` returning False."""
        s = request.sampling
        run = _Run()
        if budget <= 0:
            run.finish = "length"
            return run
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sent = 0
        pending = ""
        gen = self._llama.generate(
            tokens,
            temp=s.temperature,
            top_p=s.top_p,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.0,
            frequency_penalty=s.frequency_penalty,
            presence_penalty=s.presence_penalty,
            grammar=grammar,
        )
        try:
            for token in gen:
                if cancel.is_set():
                    raise Cancelled
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    break
                run.tokens.append(token)
                pending += decoder.decode(self._llama.detokenize([token]))
                hit = min((pending.find(x) for x in stops if x in pending), default=-1)
                if hit >= 0:
                    pending = pending[:hit]
                    break
                safe = len(pending) - _held_back(pending, stops)
                if safe > sent and on_text is not None and not on_text(pending[sent:safe]):
                    sent = safe
                    run.text = pending
                    run.finish = "stop"
                    return run
                sent = max(sent, safe)
                if len(run.tokens) >= budget:
                    run.finish = "length"
                    break
        finally:
            gen.close()
        if on_text is not None and len(pending) > sent:
            on_text(pending[sent:])
        run.text = pending
        return run

    def generate(
        self,
        request: ChatRequest,
        prompt: RenderedPrompt,
        prompt_tokens: list[int],
        max_tokens: int,
        cancel: threading.Event,
        emit: Emit | None,
        cached_tokens: int = 0,
    ) -> Completion:
        """The whole answer; with `emit`, also each piece as it is sampled (text, then a tool call, then the end).

        `cached_tokens`: prompt tokens whose KV state the context already holds (reported as cached input)."""
        seed = request.sampling.seed if request.sampling.seed is not None else random.randrange(2**31)
        self._llama.set_seed(seed)
        usage = Usage(prompt_tokens=len(prompt_tokens), cached_tokens=cached_tokens)
        stops = tuple(dict.fromkeys((*prompt.stop, *request.sampling.stop)))

        if request.wants_tool_call:
            call_run = self._sample(prompt_tokens, request, max_tokens, cancel, tool_call_grammar(request), None, ())
            return self._finish_tool_call(call_run.text, call_run, usage, emit)

        grammar = response_format_grammar(request)
        watch = _CallWatch(active=request.offers_tools and grammar is None, emit=emit)
        run = self._sample(prompt_tokens, request, max_tokens, cancel, grammar, watch.on_text, stops)
        if watch.is_call:
            # The model opened a tool call: continue from the opener under the tool-call grammar.
            opened = prompt_tokens + run.tokens
            head = run.text.lstrip()
            assert head.startswith(TOOL_CALL_OPEN)
            if head != TOOL_CALL_OPEN:  # sampling ran past the opener: restart right after it
                opened = self._llama.tokenize(
                    (prompt.text + run.text[: run.text.index(TOOL_CALL_OPEN) + len(TOOL_CALL_OPEN)]).encode(),
                    add_bos=prompt.add_bos,
                    special=True,
                )
                run.tokens = opened[len(prompt_tokens) :]
            call_run = self._sample(
                opened, request, max_tokens - len(run.tokens), cancel, tool_call_grammar(request), None, ()
            )
            call_run.tokens = run.tokens + call_run.tokens
            return self._finish_tool_call(call_run.text, call_run, usage, emit)
        watch.flush()
        usage.completion_tokens = len(run.tokens)
        completion = Completion(self._name, run.text, [], run.finish, usage)
        if emit is not None:
            emit(StreamEnd(run.finish, usage, self._name))
        return completion

    def _finish_tool_call(self, text: str, run: _Run, usage: Usage, emit: Emit | None) -> Completion:
        usage.completion_tokens = len(run.tokens)
        body = text.strip()
        if body.endswith(TOOL_CALL_CLOSE):
            body = body[: -len(TOOL_CALL_CLOSE)]
        calls: list[ToolCall] = []
        finish: FinishReason = run.finish
        try:
            parsed = json.loads(body)
            name = parsed["name"]
            arguments = json.dumps(parsed.get("arguments", {}), ensure_ascii=False)
            calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", str(name), arguments))
            finish = "tool_calls"
        except (ValueError, KeyError, TypeError):
            # Cut short (length) or malformed: return the text as it is; the router's verification decides.
            pass
        completion = Completion(self._name, None if calls else body, calls, finish, usage)
        if emit is not None:
            if calls:
                c = calls[0]
                emit(ToolCallDelta(0, c.id, c.name, c.arguments))
            elif body:
                emit(TextDelta(body))
            emit(StreamEnd(finish, usage, self._name))
        return completion
