"""Prometheus metrics: what happened to requests (counted when each one is over) and the gateway's state (read at
scrape time).

    ChatService --(trace, request)--> metrics_finisher --> GatewayMetrics (counters, histograms)
    GET /metrics --> registry --> + LocalModelsCollector (queue depth, busy generations, ready)
                                  + RulesCollector       (reloads, failures, version, loaded at)
                                  + LedgerCollector      (queued, written, spooled, dropped rows)
                                  + process metrics

Each app owns its `CollectorRegistry` (never the global default one), so tests and several apps in one process
never share counts. Costs go through the ledger's own row builder, so the dollars here equal the ledger's.

Labels are bounded: tier, model (configured names only), rule (names from the rules file), status code and the
escalation kind and reason; never a user, key or session. A label that still sees more than `max_label_values`
distinct values (a rules file rewritten many times) reports the rest as `other`.

One process per replica: the counters live in this process's memory. `tiergate serve` runs one uvicorn worker;
scale by running more replicas (containers, pods), each scraped on its own, and sum in PromQL. prometheus-client's
multiprocess mode is not used: it needs a shared directory and module-level registries, and would still miss the
scrape-time gauges of the other workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from gateway.ledger.rows import build_row
from gateway.ledger.writer import Ledger
from gateway.recording import to_record
from router.backend import Backend
from router.catalog import ModelCatalog
from router.chat import ChatRequest, Tier
from router.rule_store import RuleStore
from router.service import Finisher
from router.trace import RequestTrace

log = logging.getLogger("tiergate.metrics")

M = TypeVar("M", bound=MetricWrapperBase)

TIERS: tuple[Tier, ...] = ("local", "frontier")
NONE = "none"
"""The label value where a request ended before it had a tier, model or rule (a 404 for an unknown model)."""
OTHER = "other"
_MAX_LABEL_CHARS = 64

# Buckets in seconds. Latency spans a fast frontier answer to a long local generation on a CPU; TTFT is shorter;
# the gateway's own overhead is meant to stay around a millisecond.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class BoundedLabel:
    """Keeps one label's values to a fixed number: values seen first keep their name, later new ones become
    `other`. Per app, not global, so each test's app starts afresh."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        value = value[:_MAX_LABEL_CHARS]
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class GatewayMetrics:
    """The request metrics of one app, in its own registry. `observe` is called once per finished request."""

    def __init__(
        self,
        catalog: ModelCatalog | None = None,
        *,
        registry: CollectorRegistry | None = None,
        max_label_values: int = 64,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        """Children by label values: prometheus-client's `labels()` validates its arguments on every call, which
        was a third of the time counting a request took. Bounded, as the label values are."""
        self._rule = BoundedLabel(max_label_values)
        self._reason = BoundedLabel(max_label_values)
        self._kind = BoundedLabel(16)
        self.requests = Counter(
            "tiergate_requests",
            "Requests finished, by the tier and model that answered, the rule that decided and the HTTP status.",
            ["tier", "model", "rule", "status"],
            registry=r,
        )
        self.escalations = Counter(
            "tiergate_escalations",
            "Requests answered by another tier than decided: kind is verification (the local answer failed its "
            "check), spill (the local tier could not take it), fallback (the frontier tier failed) or unavailable.",
            ["kind", "reason", "rule"],
            registry=r,
        )
        self.refusals = Counter(
            "tiergate_refusals",
            "Requests refused before routing, by reason: missing_key, invalid_key (401), insufficient_scope and the "
            "other 403 codes, rate_limit_requests, rate_limit_tokens, budget_exceeded (429).",
            ["reason"],
            registry=r,
        )
        self._refusal = BoundedLabel(32)
        self.overhead = Histogram(
            "tiergate_gateway_overhead_seconds",
            "Time the gateway itself added to a request (parsing, routing, compression, rendering), without the "
            "model's own time.",
            ["tier"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "tiergate_request_duration_seconds",
            "End-to-end latency, from the parsed request to the end of its answer (a stream's last event), by the "
            "tier that answered.",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tiergate_time_to_first_token_seconds",
            "Time to the first streamed token, by the tier that answered (streamed requests only).",
            ["tier"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.input_tokens = Counter(
            "tiergate_input_tokens",
            "Prompt tokens read, by the tier and model of each attempt (wasted attempts included).",
            ["tier", "model"],
            registry=r,
        )
        self.output_tokens = Counter(
            "tiergate_output_tokens",
            "Completion tokens generated, by the tier and model of each attempt (wasted attempts included).",
            ["tier", "model"],
            registry=r,
        )
        self.cost = Counter(
            "tiergate_cost_usd",
            "Spend in USD, priced as the ledger prices it, by the tier and model of each attempt "
            "(wasted attempts included).",
            ["tier", "model"],
            registry=r,
        )
        self.wasted_cost = Counter(
            "tiergate_wasted_cost_usd",
            "The part of tiergate_cost_usd spent on local answers that failed verification and were escalated.",
            ["tier", "model"],
            registry=r,
        )
        self.all_frontier_cost = Counter(
            "tiergate_all_frontier_cost_usd",
            "What the answers' tokens would have cost on the ledger's default frontier model, by the tier and model "
            "that answered. Savings = this minus tiergate_cost_usd.",
            ["tier", "model"],
            registry=r,
        )
        self.savings = Gauge(
            "tiergate_savings_usd",
            "Savings against sending everything to the default frontier model since start, by the tier that "
            "answered (all-frontier cost minus spend; negative where a request cost more than that).",
            ["tier"],
            registry=r,
        )
        self.compression_input = Counter(
            "tiergate_compression_input_tokens",
            "Prompt tokens before compression, for requests the compressor ran on, by tier.",
            ["tier"],
            registry=r,
        )
        self.compression_saved = Counter(
            "tiergate_compression_saved_tokens", "Prompt tokens removed by compression, by tier.", ["tier"], registry=r
        )
        if process_metrics:
            ProcessCollector(registry=r)
        self._prepare(catalog)

    def _prepare(self, catalog: ModelCatalog | None) -> None:
        """Create the series every dashboard reads at zero, so that a fresh gateway shows 0, not "no data"."""
        for tier in TIERS:
            for histogram in (self.duration, self.ttft, self.overhead):
                histogram.labels(tier)
            self.savings.labels(tier)
            self.compression_input.labels(tier)
            self.compression_saved.labels(tier)
        for backend in catalog.backends if catalog is not None else ():
            for counter in (self.input_tokens, self.output_tokens, self.cost, self.all_frontier_cost):
                counter.labels(backend.tier, backend.name)

    def observe(self, trace: RequestTrace, request: ChatRequest, ledger: Ledger) -> None:
        """Count one finished request. Its costs come from the same function that builds its ledger row."""
        tier = trace.tier if trace.final is not None else None
        tier_label = tier or NONE
        model_label = (trace.model if trace.final is not None else None) or NONE
        rule = self._rule(trace.rule)
        self._child(self.requests, tier_label, model_label, rule, str(trace.status)).inc()
        if trace.escalated:
            kind, _, reason = trace.escalated.partition(":")
            self._child(self.escalations, self._kind(kind), self._reason(reason), rule).inc()
        if trace.finished_s is not None:
            self._child(self.duration, tier_label).observe(trace.finished_s)
        if trace.first_token_s is not None:
            self._child(self.ttft, tier_label).observe(trace.first_token_s)
        if trace.overhead_ms is not None:
            self._child(self.overhead, tier_label).observe(trace.overhead_ms / 1000)
        if trace.compression is not None:
            before, after = trace.compression
            self._child(self.compression_input, tier_label).inc(max(before, 0))
            self._child(self.compression_saved, tier_label).inc(max(before - after, 0))
        record = to_record(trace, request, store_prompts=False)
        row = build_row(record, ledger.pricing)
        spend = Decimal(0)
        if record.tier is not None and record.model is not None:
            self._attempt(record.tier, record.model, record.tokens_in, record.tokens_out, row["cost_usd"])
            self._child(self.all_frontier_cost, record.tier, record.model).inc(float(row["counterfactual_usd"]))
            spend += row["cost_usd"]
        if record.wasted_tier is not None and record.wasted_model is not None:
            wasted: Decimal = row["wasted_cost_usd"]
            self._attempt(
                record.wasted_tier, record.wasted_model, record.wasted_tokens_in, record.wasted_tokens_out, wasted
            )
            self._child(self.wasted_cost, record.wasted_tier, record.wasted_model).inc(float(wasted))
            spend += wasted
        if tier is not None:
            self._child(self.savings, tier).inc(float(row["counterfactual_usd"] - spend))

    def refused(self, reason: str) -> None:
        """Count a refusal by authentication or the limiter (rendered by `gateway.errors`)."""
        self._child(self.refusals, self._refusal(reason)).inc()

    def _child(self, metric: M, *values: str) -> M:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child  # type: ignore[return-value]  # stored under its own metric, so of its type

    def _attempt(self, tier: Tier, model: str, tokens_in: int, tokens_out: int, cost: Decimal) -> None:
        self._child(self.input_tokens, tier, model).inc(tokens_in)
        self._child(self.output_tokens, tier, model).inc(tokens_out)
        self._child(self.cost, tier, model).inc(float(cost))


def metrics_finisher(metrics: GatewayMetrics, ledger: Ledger) -> Finisher:
    """The `ChatService` hook that counts each finished request; chain it after `ledger_finisher(ledger)`.

    The hook runs before a whole answer is sent, and counting (pricing included) takes several times what queuing
    the ledger row does, so it is scheduled on the event loop to run next, off this request's own latency."""

    def observe(trace: RequestTrace, request: ChatRequest) -> None:
        try:
            metrics.observe(trace, request, ledger)
        except Exception:  # counting must never fail the request it counts
            log.exception("metrics: could not count request %s", trace.request_id)

    def finish(trace: RequestTrace, request: ChatRequest) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the server (tools, tests): count now
            observe(trace, request)
            return
        loop.call_soon(observe, trace, request)

    return finish


def chain_finishers(*finishers: Finisher) -> Finisher:
    """One hook that calls each in order; one that raises does not stop the ones after it."""

    def finish(trace: RequestTrace, request: ChatRequest) -> None:
        for finisher in finishers:
            try:
                finisher(trace, request)
            except Exception:
                log.exception("a request finisher failed for request %s", trace.request_id)

    return finish


# --- read at scrape time ------------------------------------------------------------------------------------------


class LocalModelsCollector(Collector):
    """Queue depth, busy generations and readiness of each configured model."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "tiergate_local_queue_depth",
            "Requests admitted to a local model and not finished (the running one and those waiting behind it).",
            labels=["model"],
        )
        busy = GaugeMetricFamily(
            "tiergate_local_busy_generations", "Generations running now on a local model.", labels=["model"]
        )
        ready = GaugeMetricFamily(
            "tiergate_model_ready",
            "1 when the model can answer (loaded, key present), else 0.",
            labels=["tier", "model"],
        )
        for backend in self._catalog.backends:
            ready.add_metric([backend.tier, backend.name], 1.0 if backend.ready else 0.0)
            if backend.tier == "local":
                depth.add_metric([backend.name], backend.queue_depth)
                busy.add_metric([backend.name], busy_generations(backend))
        yield from (depth, busy, ready)


def busy_generations(backend: Backend) -> int:
    """A local model runs one generation at a time on its worker thread (see `local_models.backend`), so it is busy
    exactly while anything is admitted. A backend that counts its own (parallel slots) says so."""
    own = getattr(backend, "busy_generations", None)
    if isinstance(own, int):
        return own
    return min(backend.queue_depth, 1)


class RulesCollector(Collector):
    def __init__(self, rules: RuleStore) -> None:
        self._rules = rules

    def collect(self) -> Iterator[Metric]:
        status = self._rules.status()
        yield CounterMetricFamily(
            "tiergate_rules_reloads", "Successful reloads of the rules file since start.", value=status.reloads
        )
        yield CounterMetricFamily(
            "tiergate_rules_reload_failures",
            "Reloads refused because the file was invalid or unreadable (the rules in force stayed).",
            value=status.failures,
        )
        yield GaugeMetricFamily(
            "tiergate_rules_loaded_timestamp_seconds",
            "When the rules in force were loaded (Unix time).",
            value=status.loaded_at.timestamp(),
        )
        yield GaugeMetricFamily("tiergate_rules_count", "Rules in force (the default rule not counted).", status.rules)
        info = GaugeMetricFamily(
            "tiergate_rules_info", "The rules in force: version is their file's short sha256.", labels=["version"]
        )
        info.add_metric([status.version], 1.0)
        yield info
        yield GaugeMetricFamily(
            "tiergate_rules_last_reload_failed",
            "1 while the latest reload was refused, else 0.",
            value=1.0 if status.last_error else 0.0,
        )


class LedgerCollector(Collector):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        stats = self._ledger.stats()
        yield GaugeMetricFamily(
            "tiergate_ledger_queue_depth", "Ledger rows waiting in memory to be written.", stats.queued
        )
        yield GaugeMetricFamily(
            "tiergate_ledger_spool_rows",
            "Ledger rows in the on-disk spool, waiting for the database.",
            stats.spool_pending,
        )
        counters: Iterable[tuple[str, str, int]] = (
            ("tiergate_ledger_accepted_rows", "Ledger rows queued since start.", stats.accepted),
            ("tiergate_ledger_written_rows", "Ledger rows inserted into the database.", stats.written),
            (
                "tiergate_ledger_spooled_rows",
                "Ledger rows sent to the spool while the database was down.",
                stats.spooled,
            ),
            (
                "tiergate_ledger_dropped_rows",
                "Ledger rows lost: the queue or the spool was full, or the ledger was closed.",
                stats.dropped,
            ),
            ("tiergate_ledger_rejected_rows", "Ledger rows the database refused as invalid.", stats.rejected),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)


def register_state_collectors(
    registry: CollectorRegistry, *, catalog: ModelCatalog, rules: RuleStore, ledger: Ledger
) -> None:
    """The gauges read at scrape time: local models, rules, ledger."""
    registry.register(LocalModelsCollector(catalog))
    registry.register(RulesCollector(rules))
    registry.register(LedgerCollector(ledger))
