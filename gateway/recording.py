"""When a request is over: its trace becomes a ledger row (queued, written off the request path)."""

from __future__ import annotations

from gateway.ledger.record import RequestRecord
from gateway.ledger.settings import LedgerSettings
from gateway.ledger.writer import Ledger
from router.chat import ChatRequest
from router.service import Finisher
from router.trace import RequestTrace


def to_record(trace: RequestTrace, request: ChatRequest, store_prompts: bool) -> RequestRecord:
    final = trace.final
    wasted = trace.wasted[-1] if trace.wasted else None
    return RequestRecord(
        request_id=trace.request_id,
        requested_model=trace.requested_model,
        session_id=trace.session_id,
        task_id=request.task_id,
        api_key_id=request.caller.key_id,
        tier=trace.tier if final else None,
        model=trace.model if final else None,
        rule=trace.rule or None,
        score=trace.score,
        signals=trace.signals or None,
        tokens_in=final.usage.prompt_tokens if final else 0,
        tokens_out=final.usage.completion_tokens if final else 0,
        tokens_cached=final.usage.cached_tokens if final else 0,
        compute_ms=final.seconds * 1000 if final and final.tier == "local" else 0.0,
        wasted_tier=wasted.tier if wasted else None,
        wasted_model=wasted.model if wasted else None,
        wasted_tokens_in=wasted.usage.prompt_tokens if wasted else 0,
        wasted_tokens_out=wasted.usage.completion_tokens if wasted else 0,
        wasted_compute_ms=wasted.seconds * 1000 if wasted and wasted.tier == "local" else 0.0,
        latency_ms=(trace.finished_s or trace.elapsed()) * 1000,
        ttft_ms=trace.first_token_s * 1000 if trace.first_token_s is not None else None,
        stream=trace.stream,
        status=trace.status,
        error_class=trace.error,
        compression_tokens_before=trace.compression[0] if trace.compression else None,
        compression_tokens_after=trace.compression[1] if trace.compression else None,
        prompt=request.raw.get("messages") if store_prompts else None,
        response=trace.response if store_prompts else None,
        step=trace.step,
    )


def stores_prompt(request: ChatRequest, settings: LedgerSettings) -> bool:
    """Whether this request's messages and answer go to the ledger: its key says so (or `ledger.store_prompts`,
    which gateway.auth folds into the caller), or it is a session's step and `store_prompts_for_sessions` is on."""
    return (
        request.caller.store_prompts
        or settings.store_prompts
        or (settings.store_prompts_for_sessions and request.session_id is not None)
    )


def ledger_finisher(ledger: Ledger) -> Finisher:
    settings = ledger.settings

    def finish(trace: RequestTrace, request: ChatRequest) -> None:
        ledger.record(to_record(trace, request, stores_prompt(request, settings)))

    return finish
