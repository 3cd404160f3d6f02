"""The request path after parsing: decide, run, verify, escalate once, and hand one answer to the HTTP layer.

    signals -> rules -> route (backend + allowed fallback) -> run -> verify local answer
        -> [escalate once to the frontier tier if it fails, or if the local tier is full / too small]
        -> [fall back to the local tier if the frontier tier fails, where the rules allow it]

A request that names a tier or a model (`local`, `frontier`, `gemma3-270m`) goes there: no scoring decides, no
cross-tier fallback changes what the client asked for; only `enforce` rules (privacy pins) still apply.

A caller whose frontier budget is spent (`Caller.frontier_allowed` false) is held on the local tier the way a
privacy pin is: its decision becomes local with no fallback, so no rule, escalation, verification failure, spill
or fallback can reach a frontier backend; naming a frontier model is refused with 429 `budget_exceeded`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace

import orjson

from prompt_compression.compressor import Compressor
from router.backend import Backend
from router.catalog import VIRTUAL_AUTO, ModelCatalog
from router.chat import (
    ChatRequest,
    Completion,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Tier,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from router.errors import (
    BudgetExceeded,
    ContextLengthExceeded,
    PermissionDenied,
    QueueFull,
    TiergateError,
    Unavailable,
    UpstreamError,
)
from router.rule_store import RuleStore
from router.rules import Decision
from router.sessions import NO_SESSION, SessionStore, StepOutcome
from router.signals import SignalContext, Signals, estimate_tokens, extract_signals
from router.trace import Attempt, RequestTrace, StreamedAnswer, completion_message
from router.verification import VerificationChain

log = logging.getLogger("tiergate.requests")

Finisher = Callable[[RequestTrace, ChatRequest], None]
"""Called once per request when it is over (the ledger and metrics hook)."""


@dataclass(slots=True)
class Answer:
    """Either a whole completion or a stream of events, with the trace that explains the decision."""

    trace: RequestTrace
    completion: Completion | None = None
    events: AsyncIterator[StreamEvent] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.trace.model or self.trace.requested_model


@dataclass(frozen=True, slots=True)
class Route:
    decision: Decision
    backend: Backend
    fallback: Backend | None
    """The other tier's backend, where the decision allows a fallback and it is ready."""
    signals: Signals


# Room kept for the answer when sizing the local prompt budget and the request sets no max_tokens.
_ANSWER_ROOM = 512

_BUDGET_SPENT = "This API key's frontier budget is spent: its requests stay on the local tier."

# Local failures that send the request to the frontier tier instead (when allowed): the local tier cannot answer.
_LOCAL_CANNOT = (QueueFull, ContextLengthExceeded, Unavailable)


class ChatService:
    def __init__(
        self,
        catalog: ModelCatalog,
        rules: RuleStore,
        sessions: SessionStore,
        verification: VerificationChain,
        on_finish: Finisher | None = None,
        compressors: Mapping[str, Compressor] | None = None,
        stores_answer: Callable[[ChatRequest], bool] | None = None,
        request_log: bool = True,
    ) -> None:
        self.catalog = catalog
        self.rules = rules
        self.sessions = sessions
        self.verification = verification
        self._on_finish = on_finish
        self.compressors = dict(compressors or {})
        """By backend name: what shrinks a request for that model (its tier's settings, its own tokenizer)."""
        self._stores_answer = stores_answer or _never
        """Whether a request's answer is kept on its trace (for the ledger); streams are assembled only then."""
        self._request_log = request_log
        """One JSON line per request on `tiergate.requests` (setting `request_log`)."""

    # --- deciding --------------------------------------------------------------------------------------------

    async def route(self, request: ChatRequest) -> Route:
        local = self.catalog.default("local")
        session = await self.sessions.get(request.session_id) if request.session_id else NO_SESSION
        context = SignalContext(
            local_context_tokens=local.context_tokens or 0 if local else 0,
            local_queue_depth=local.queue_depth if local else 0,
            session=session,
            policy_tags=request.caller.policy_tags,
        )
        signals = extract_signals(request, context)
        rules = self.rules.rules
        if request.model == VIRTUAL_AUTO:
            decision = rules.decide(signals, request)
            pinned = False
        else:
            target = self.catalog.resolve(request.model)
            decision = rules.enforced(signals, request) or Decision(
                action=target.tier,
                model=target.name,
                rule="pinned",
                score=rules.score(signals),
                reason=f"model {request.model} requested",
                allow_fallback=False,
            )
            pinned = decision.rule == "pinned"
        if decision.action == "reject":
            raise PermissionDenied(decision.message or "This request is refused by policy.", code="rejected_by_rule")
        if decision.action == "local" and decision.allow_fallback and local is None:
            decision = _frontier_only(decision)
        if not request.caller.frontier_allowed:
            decision = self._held_local(decision, request, pinned)
        backend = self._backend_for(decision)
        if backend.tier == "frontier" and not request.caller.frontier_allowed:  # a local rule naming a frontier model
            raise BudgetExceeded(_BUDGET_SPENT)
        other_tier: Tier = "local" if backend.tier == "frontier" else "frontier"
        fallback = self.catalog.default(other_tier) if decision.allow_fallback and not pinned else None
        if fallback is not None and not fallback.ready:
            fallback = None
        if not backend.ready and fallback is not None:
            # The decided tier cannot answer at all (no key, model not loaded): the other one answers instead.
            return Route(decision, fallback, None, signals)
        return Route(decision, backend, fallback, signals)

    def _held_local(self, decision: Decision, request: ChatRequest, pinned: bool) -> Decision:
        """The decision for a caller that may not use the frontier tier: a local pin without fallback."""
        if decision.action == "frontier" and pinned:
            raise BudgetExceeded(f"{_BUDGET_SPENT} Model `{request.model}` is a frontier model; use `auto` or `local`.")
        if self.catalog.default("local") is None:
            raise BudgetExceeded(f"{_BUDGET_SPENT} No local model is configured to answer instead.")
        if decision.action == "local":
            return replace(decision, allow_fallback=False)
        return Decision(
            action="local",
            model=None,
            rule=decision.rule,
            score=decision.score,
            reason=f"{decision.reason}; held on the local tier: the key's frontier budget is spent",
            allow_fallback=False,
        )

    def _backend_for(self, decision: Decision) -> Backend:
        if decision.model:
            return self.catalog.resolve(decision.model)
        backend = self.catalog.default(decision.action)  # type: ignore[arg-type]
        if backend is None:
            raise Unavailable(f"No {decision.action} model is configured.")
        return backend

    # --- answering -------------------------------------------------------------------------------------------

    async def answer(self, request: ChatRequest, received_at: float | None = None) -> Answer:
        """`received_at` (perf_counter) is when the HTTP layer got the request, so parsing counts as overhead."""
        trace = RequestTrace(request.request_id, request.model, request.session_id, stream=request.stream)
        if received_at is not None:
            trace.started = received_at
        try:
            route = await self.route(request)
            trace.rule, trace.score, trace.reason = route.decision.rule, route.decision.score, route.decision.reason
            trace.signals = route.signals.as_dict()
            if route.backend.tier != route.decision.action:
                trace.escalated = f"unavailable:{route.decision.action}"
            if request.stream:
                events = self._stream(request, route, trace)
                first = await anext(events)  # headers wait for the first event: they must tell the final tier
                return Answer(trace, events=self._finish_stream(request, trace, first, events), headers=trace.headers())
            completion = await self._complete(request, route, trace)
            if self._stores_answer(request):
                trace.response = completion_message(completion)
        except BaseException as exc:
            self._fail(request, trace, exc)
            raise
        trace.finished_s = trace.elapsed()
        # What the gateway itself added: everything but the time spent inside backends.
        trace.overhead_ms = max(trace.finished_s - sum(a.seconds for a in trace.attempts), 0.0) * 1000
        await self._count_step(request, trace)
        self._finish(request, trace)
        return Answer(trace, completion=completion, headers=trace.headers())

    def _prepared(self, backend: Backend, request: ChatRequest, trace: RequestTrace) -> ChatRequest:
        """The request as this backend should read it: compressed within its budget where that tier compresses."""
        compressor = self.compressors.get(backend.name)
        if compressor is None or not compressor.settings.enabled:
            return request
        budget = None
        if backend.context_tokens:
            budget = backend.context_tokens - (request.sampling.max_tokens or _ANSWER_ROOM)
        result = compressor.compress(request, budget, request.session_id)
        trace.compression = (result.tokens_before, result.tokens_after)
        return result.request

    async def _attempt(self, backend: Backend, request: ChatRequest, trace: RequestTrace) -> Completion:
        started = time.perf_counter()
        completion = await backend.complete(self._prepared(backend, request, trace))
        trace.attempts.append(Attempt(backend.tier, backend.name, completion.usage, time.perf_counter() - started))
        trace.answered_by(backend.tier, backend.name)
        return completion

    async def _complete(self, request: ChatRequest, route: Route, trace: RequestTrace) -> Completion:
        backend, fallback = route.backend, route.fallback
        try:
            completion = await self._attempt(backend, request, trace)
        except TiergateError as exc:
            if fallback is None or not _may_fall_back(backend, exc):
                raise
            trace.escalated = f"{_why(backend)}:{type(exc).__name__}"
            return await self._attempt(fallback, request, trace)
        if backend.tier == "local" and fallback is not None:
            verdict = self.verification.check(request, completion)
            if not verdict.ok:
                trace.escalated = f"verification:{verdict.reason}"
                log.info("local answer failed verification (%s %s); escalating", verdict.reason, verdict.detail)
                return await self._attempt(fallback, request, trace)
        return completion

    async def _stream(self, request: ChatRequest, route: Route, trace: RequestTrace) -> AsyncIterator[StreamEvent]:
        backend, fallback = route.backend, route.fallback
        started = time.perf_counter()
        try:
            prepared = self._prepared(backend, request, trace)
            trace.overhead_ms = trace.elapsed() * 1000  # for a stream: what the gateway added before the backend began
            events = backend.stream(prepared)
            trace.answered_by(backend.tier, backend.name)
            if backend.tier == "local" and fallback is not None:
                events = self._verified(request, events, fallback, trace)
            first = await anext(events)
        except TiergateError as exc:
            if fallback is None or not _may_fall_back(backend, exc):
                raise
            trace.escalated = f"{_why(backend)}:{type(exc).__name__}"
            async for event in self._plain(fallback, request, trace):
                yield event
            return
        yield first
        async for event in events:
            if isinstance(event, StreamEnd) and trace.tier == backend.tier:
                trace.attempts.append(Attempt(backend.tier, backend.name, event.usage, time.perf_counter() - started))
            yield event

    async def _plain(self, backend: Backend, request: ChatRequest, trace: RequestTrace) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        trace.answered_by(backend.tier, backend.name)
        async for event in backend.stream(self._prepared(backend, request, trace)):
            if isinstance(event, StreamEnd):
                trace.attempts.append(Attempt(backend.tier, backend.name, event.usage, time.perf_counter() - started))
            yield event

    async def _verified(
        self, request: ChatRequest, events: AsyncIterator[StreamEvent], fallback: Backend, trace: RequestTrace
    ) -> AsyncIterator[StreamEvent]:
        """Local events, held back only as far as verification needs: tool calls and structured answers wait for
        the end of the answer; plain text streams straight through. A failed answer that sent nothing yet is
        replaced by the frontier tier's stream."""
        hold_text = request.wants_tool_call or request.response_format.type != "text"
        held: list[StreamEvent] = []
        text: list[str] = []
        calls: dict[int, list[str]] = {}
        sent_text = False
        started = time.perf_counter()
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
                if hold_text:
                    held.append(event)
                else:
                    sent_text = True
                    yield event
            elif isinstance(event, ToolCallDelta):
                held.append(event)
                parts = calls.setdefault(event.index, [event.id or "", event.name or "", ""])
                parts[2] += event.arguments
            else:
                completion = Completion(
                    event.model,
                    "".join(text) or None,
                    [ToolCall(i or "", n, a) for i, n, a in calls.values()],
                    event.finish_reason,
                    event.usage,
                )
                verdict = self.verification.check(request, completion)
                if not verdict.ok and not sent_text:
                    trace.attempts.append(Attempt("local", event.model, event.usage, time.perf_counter() - started))
                    trace.escalated = f"verification:{verdict.reason}"
                    async for replacement in self._plain(fallback, request, trace):
                        yield replacement
                    return
                for item in held:
                    yield item
                yield event

    async def _finish_stream(
        self, request: ChatRequest, trace: RequestTrace, first: StreamEvent, events: AsyncIterator[StreamEvent]
    ) -> AsyncIterator[StreamEvent]:
        answer = StreamedAnswer() if self._stores_answer(request) else None
        sent: list[str] = []  # the text handed on, to charge a stream that ends early
        try:
            trace.mark_first_token()
            if answer is not None:
                answer.add(first)
            yield first
            async for event in events:
                trace.mark_first_token()
                if answer is not None:
                    answer.add(event)
                if isinstance(event, TextDelta | ToolCallDelta):
                    sent.append(event.text if isinstance(event, TextDelta) else event.arguments)
                yield event
        except BaseException as exc:
            if isinstance(first, TextDelta | ToolCallDelta):
                sent.insert(0, first.text if isinstance(first, TextDelta) else first.arguments)
            _charge_unfinished(trace, sent)
            self._fail(request, trace, exc)
            raise
        trace.finished_s = trace.elapsed()
        if answer is not None:
            trace.response = answer.message()
        await self._count_step(request, trace)
        self._finish(request, trace)

    # --- after -----------------------------------------------------------------------------------------------

    def _fail(self, request: ChatRequest, trace: RequestTrace, exc: BaseException) -> None:
        trace.finished_s = trace.elapsed()
        if isinstance(exc, TiergateError):
            trace.status, trace.error = exc.status, type(exc).__name__
        elif isinstance(exc, GeneratorExit | Exception):
            trace.status, trace.error = 499 if isinstance(exc, GeneratorExit) else 500, type(exc).__name__
        else:  # cancelled: the client went away
            trace.status, trace.error = 499, "ClientDisconnected"
        self._finish(request, trace)

    async def _count_step(self, request: ChatRequest, trace: RequestTrace) -> None:
        """Add an answered step to its session before the answer is complete, so that the session's next step sees
        it on whichever replica it lands (one round trip to a shared store), and the ledger gets its step number."""
        if not request.session_id:
            return
        outcome = StepOutcome(
            correction=bool(trace.signals.get("correction_now")),
            stall=bool(trace.signals.get("stalled")),
            escalated=trace.tier == "frontier",
        )
        state = await self.sessions.record(request.session_id, outcome)
        trace.step = state.steps or None  # 0: the store could not count it

    def _finish(self, request: ChatRequest, trace: RequestTrace) -> None:
        if self._request_log and log.isEnabledFor(logging.INFO):  # off: no line, and no JSON encoding either
            log.info("%s", orjson.dumps(trace.log_fields()).decode())
        if self._on_finish is not None:
            self._on_finish(trace, request)


def _frontier_only(decision: Decision) -> Decision:
    """A gateway without local models (`local_models: []`): what the rules would keep local goes to the frontier
    tier as that tier's own decision, not as an escalation, since there was never a local tier to escalate from.
    Decisions that forbid a fallback (privacy pins) are left alone and fail with 503: they must not leave."""
    return replace(decision, action="frontier", model=None, reason=f"{decision.reason}; no local model is configured")


def _charge_unfinished(trace: RequestTrace, sent: list[str]) -> None:
    """A stream that ended before its final event (the client went away, the upstream cut it) still used its
    backend: its attempt is recorded with the tokens known, so that the ledger and the key's budget charge it. The
    prompt as the compressor counted it for that backend, else as the router estimated it; the text sent, estimated.
    """
    final = trace.final
    if trace.tier is None or trace.model is None or (final is not None and final.model == trace.model):
        return
    prompt = trace.compression[1] if trace.compression else int(trace.signals.get("prompt_tokens", 0))
    usage = Usage(prompt, estimate_tokens("".join(sent)))
    trace.attempts.append(Attempt(trace.tier, trace.model, usage, trace.elapsed()))


def _never(_: ChatRequest) -> bool:
    return False


def _may_fall_back(backend: Backend, exc: TiergateError) -> bool:
    if backend.tier == "local":
        return isinstance(exc, _LOCAL_CANNOT)
    return isinstance(exc, UpstreamError | Unavailable)


def _why(backend: Backend) -> str:
    return "spill" if backend.tier == "local" else "fallback"
