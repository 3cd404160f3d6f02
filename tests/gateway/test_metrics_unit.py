"""The metrics module without a server: what one finished request adds, label bounds, per-app registries, the
scrape-time collectors, and that counting never fails a request."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ledger.pricing import Pricing
from gateway.ledger.rows import build_row
from gateway.ledger.settings import LedgerSettings
from gateway.ledger.writer import Ledger
from gateway.metrics import (
    OTHER,
    BoundedLabel,
    GatewayMetrics,
    LocalModelsCollector,
    chain_finishers,
    metrics_finisher,
    register_state_collectors,
)
from gateway.recording import to_record
from router.backend import Backend
from router.catalog import ModelCatalog
from router.chat import ChatRequest, Completion, Message, StreamEvent, Usage
from router.rule_store import RuleStore
from router.rules import default_rules_path
from router.trace import Attempt, RequestTrace

PRICES = {
    "gpt-4.1": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06},
    "gpt-4.1-mini": {"input_cost_per_token": 4e-07, "output_cost_per_token": 1.6e-06},
}


class FakeBackend(Backend):
    def __init__(self, name: str, tier: Any, depth: int = 0) -> None:
        self.name, self.tier, self.depth = name, tier, depth

    @property
    def queue_depth(self) -> int:
        return self.depth

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:  # type: ignore[override]
        raise NotImplementedError


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    pricing = Pricing(PRICES, aliases={"gpt-test": "gpt-4.1-mini"}, default_frontier_model="gpt-4.1")
    return Ledger(LedgerSettings(), tmp_path, pricing=pricing)


@pytest.fixture
def catalog() -> ModelCatalog:
    return ModelCatalog([FakeBackend("gemma3-270m", "local", depth=2), FakeBackend("gpt-test", "frontier")])


def _request(request_id: str = "chatcmpl-1") -> ChatRequest:
    return ChatRequest(request_id, "auto", [Message(role="user", content="hi")])


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return _samples(registry).get((name, tuple(sorted(labels.items()))), 0.0)


def _escalated_trace() -> RequestTrace:
    trace = RequestTrace("chatcmpl-1", "auto", "session-9")
    trace.rule, trace.escalated = "default", "verification:tool_call_invalid"
    trace.attempts = [
        Attempt("local", "gemma3-270m", Usage(120, 3), 0.9),
        Attempt("frontier", "gpt-test", Usage(150, 40, 100), 0.4),
    ]
    trace.answered_by("frontier", "gpt-test")
    trace.finished_s, trace.first_token_s, trace.overhead_ms = 1.4, 1.2, 0.8
    trace.compression = (900, 600)
    return trace


def test_one_escalated_request_counts_everywhere_with_the_ledgers_costs(ledger: Ledger, catalog: ModelCatalog) -> None:
    metrics = GatewayMetrics(catalog, process_metrics=False)
    trace = _escalated_trace()
    metrics.observe(trace, _request(), ledger)
    r = metrics.registry
    labels = {"tier": "frontier", "model": "gpt-test", "rule": "default", "status": "200"}
    assert _value(r, "tiergate_requests_total", **labels) == 1
    reason = {"kind": "verification", "reason": "tool_call_invalid", "rule": "default"}
    assert _value(r, "tiergate_escalations_total", **reason) == 1
    assert _value(r, "tiergate_request_duration_seconds_count", tier="frontier") == 1
    assert _value(r, "tiergate_request_duration_seconds_sum", tier="frontier") == pytest.approx(1.4)
    assert _value(r, "tiergate_time_to_first_token_seconds_sum", tier="frontier") == pytest.approx(1.2)
    assert _value(r, "tiergate_gateway_overhead_seconds_sum", tier="frontier") == pytest.approx(0.0008)
    assert _value(r, "tiergate_gateway_overhead_seconds_bucket", tier="frontier", le="0.001") == 1
    assert _value(r, "tiergate_compression_saved_tokens_total", tier="frontier") == 300
    assert _value(r, "tiergate_compression_input_tokens_total", tier="frontier") == 900
    # Each attempt's tokens and cost under its own tier and model; the wasted local attempt is both.
    assert _value(r, "tiergate_input_tokens_total", tier="local", model="gemma3-270m") == 120
    assert _value(r, "tiergate_output_tokens_total", tier="frontier", model="gpt-test") == 40
    row = build_row(to_record(trace, _request(), False), ledger.pricing)
    assert row["wasted_cost_usd"] > 0 and row["cost_usd"] > 0
    frontier_cost = _value(r, "tiergate_cost_usd_total", tier="frontier", model="gpt-test")
    local_cost = _value(r, "tiergate_cost_usd_total", tier="local", model="gemma3-270m")
    assert Decimal(repr(frontier_cost)) == row["cost_usd"]
    assert Decimal(repr(local_cost)) == row["wasted_cost_usd"]
    assert _value(r, "tiergate_wasted_cost_usd_total", tier="local", model="gemma3-270m") == local_cost
    counterfactual = _value(r, "tiergate_all_frontier_cost_usd_total", tier="frontier", model="gpt-test")
    assert Decimal(repr(counterfactual)) == row["counterfactual_usd"]
    savings = row["counterfactual_usd"] - row["cost_usd"] - row["wasted_cost_usd"]
    assert _value(r, "tiergate_savings_usd", tier="frontier") == pytest.approx(float(savings), abs=1e-15)


def test_a_request_that_ended_before_any_tier_is_labelled_none(ledger: Ledger) -> None:
    metrics = GatewayMetrics(process_metrics=False)
    trace = RequestTrace("chatcmpl-2", "no-such-model", None)
    trace.status, trace.error, trace.finished_s = 404, "ModelNotFound", 0.001
    metrics.observe(trace, _request("chatcmpl-2"), ledger)
    r = metrics.registry
    assert _value(r, "tiergate_requests_total", tier="none", model="none", rule="none", status="404") == 1
    assert _value(r, "tiergate_request_duration_seconds_count", tier="none") == 1
    assert not any(name == "tiergate_escalations_total" for name, _ in _samples(r))


def test_fresh_metrics_show_zero_series_for_every_tier_and_model(catalog: ModelCatalog) -> None:
    r = GatewayMetrics(catalog, process_metrics=False).registry
    samples = _samples(r)
    for tier, model in (("local", "gemma3-270m"), ("frontier", "gpt-test")):
        for name in ("tiergate_cost_usd_total", "tiergate_input_tokens_total", "tiergate_all_frontier_cost_usd_total"):
            assert samples[(name, (("model", model), ("tier", tier)))] == 0
        assert samples[("tiergate_request_duration_seconds_count", (("tier", tier),))] == 0


def test_registries_are_per_app(ledger: Ledger) -> None:
    first, second = GatewayMetrics(process_metrics=False), GatewayMetrics(process_metrics=False)
    first.observe(_escalated_trace(), _request(), ledger)
    labels = {"tier": "frontier", "model": "gpt-test", "rule": "default", "status": "200"}
    assert _value(first.registry, "tiergate_requests_total", **labels) == 1
    assert _value(second.registry, "tiergate_requests_total", **labels) == 0


def test_label_values_are_bounded() -> None:
    bounded = BoundedLabel(3)
    assert [bounded(v) for v in ("a", "b", "c", "d", "a", "e")] == ["a", "b", "c", OTHER, "a", OTHER]
    assert bounded("") == bounded(None) == "none"
    assert len(BoundedLabel(5)("x" * 500)) == 64


def test_many_rule_names_collapse_into_other(ledger: Ledger) -> None:
    metrics = GatewayMetrics(process_metrics=False, max_label_values=4)
    for i in range(10):
        trace = RequestTrace(f"chatcmpl-{i}", "auto", None)
        trace.rule, trace.escalated, trace.status = f"rule-{i}", f"fallback:Error{i}", 502
        metrics.observe(trace, _request(f"chatcmpl-{i}"), ledger)
    rules = {labels for name, labels in _samples(metrics.registry) if name == "tiergate_requests_total"}
    assert len(rules) == 5  # four names kept, the rest under `other`
    reasons = {dict(labels)["reason"] for name, labels in _samples(metrics.registry) if name.startswith("tiergate_esc")}
    assert OTHER in reasons and len(reasons) <= 5


def test_the_finisher_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    unstarted = Ledger(LedgerSettings(), tmp_path)  # no pricing yet: pricing raises RuntimeError
    finish = metrics_finisher(GatewayMetrics(process_metrics=False), unstarted)
    finish(_escalated_trace(), _request())
    assert "metrics: could not count request chatcmpl-1" in caplog.text


def test_chained_finishers_all_run_when_one_fails() -> None:
    calls: list[str] = []

    def broken(trace: RequestTrace, request: ChatRequest) -> None:
        calls.append("broken")
        raise ValueError("boom")

    def fine(trace: RequestTrace, request: ChatRequest) -> None:
        calls.append("fine")

    chain_finishers(broken, fine)(_escalated_trace(), _request())
    assert calls == ["broken", "fine"]


def test_scrape_time_collectors(ledger: Ledger, catalog: ModelCatalog) -> None:
    metrics = GatewayMetrics(catalog, process_metrics=False)
    rules = RuleStore(default_rules_path())
    register_state_collectors(metrics.registry, catalog=catalog, rules=rules, ledger=ledger)
    r = metrics.registry
    assert _value(r, "tiergate_local_queue_depth", model="gemma3-270m") == 2
    assert _value(r, "tiergate_local_busy_generations", model="gemma3-270m") == 1  # one generation at a time
    assert ("tiergate_local_queue_depth", (("model", "gpt-test"),)) not in _samples(r)  # frontier: no queue
    assert _value(r, "tiergate_model_ready", tier="frontier", model="gpt-test") == 1
    status = rules.status()
    assert _value(r, "tiergate_rules_info", version=status.version) == 1
    assert _value(r, "tiergate_rules_count") == status.rules
    assert _value(r, "tiergate_rules_reloads_total") == 0
    assert _value(r, "tiergate_rules_loaded_timestamp_seconds") == pytest.approx(status.loaded_at.timestamp())
    ledger.record(to_record(_escalated_trace(), _request(), False))  # not started: it waits in the queue
    assert _value(r, "tiergate_ledger_queue_depth") == 1
    assert _value(r, "tiergate_ledger_accepted_rows_total") == 1
    assert _value(r, "tiergate_ledger_dropped_rows_total") == 0


def test_a_backend_that_counts_its_own_busy_slots_is_believed() -> None:
    class Slots(FakeBackend):
        busy_generations = 3

    families = list(LocalModelsCollector(ModelCatalog([Slots("llama-7b", "local", depth=5)])).collect())
    busy = next(f for f in families if f.name == "tiergate_local_busy_generations")
    assert [s.value for s in busy.samples] == [3]
