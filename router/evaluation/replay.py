"""`tiergate replay`: what a changed rules file would have done to logged traffic, before it is deployed.

Each auto-routed request in the window is re-decided under the new file by the router's own `RuleSet.decide`, from
the signals stored with it (the facts the router had, session and queue state included), with its stored prompt
for rules that read message text. The new decision is compared with the tier the logged rules chose (a request
that was escalated after a failed local answer was decided `local`).

The projections are estimates, and say so:
- cost: a request that keeps its tier keeps its logged cost. One moving to the frontier tier is priced at its
  logged tokens on the frontier model the new rule names (the ledger's prices; another model's tokenizer would
  count a little differently); one that was escalated already had a frontier answer, so it keeps that answer's
  cost and sheds the wasted local attempt. One moving to the local tier is priced at the local cost per token
  observed on locally answered requests in the same window (local cost is charged by compute time, which the
  tokens of a frontier answer do not give); with no such requests it is counted at 0. A local answer that would
  fail verification and escalate is not foreseen.
- quality: the success rate on the metric over the requests with an outcome. A request that keeps its tier keeps
  its outcome; one moving to a tier whose answer was not observed gets the success rate observed on that tier for
  requests with similar new scores (the same fifth of [0, 1]), else on that tier overall; with neither it is left
  out of the projection and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.ledger.database import DatabaseUnreachable, on_engine
from gateway.ledger.pricing import Pricing, quantize
from gateway.ledger.settings import MetricSettings
from router.chat import ChatRequest
from router.conditions import TEXT_SUBJECTS
from router.evaluation.ledger_source import (
    LoggedRequest,
    SourceError,
    add_ledger_arguments,
    database_url,
    load_gateway_settings,
    parse_since,
    read_auto_routed,
    request_from_prompt,
    signals_from_dict,
    succeeded,
)
from router.rules import Decision, RulesError, RuleSet, load_rules
from router.signals import SignalContext, Signals, extract_signals

if TYPE_CHECKING:
    from gateway.settings import Settings

SCORE_BINS = 5
"""Similar scores, for the quality estimate: the same fifth of [0, 1]."""


@dataclass(frozen=True, slots=True)
class Replayed:
    logged: LoggedRequest
    decision: Decision


@dataclass(slots=True)
class ReplayResult:
    replayed: list[Replayed] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    """Why requests could not be replayed, with how many."""


def replay(rows: Sequence[LoggedRequest], rules: RuleSet, context: SignalContext) -> ReplayResult:
    """Re-decide each logged request under `rules`."""
    reads_text = any(subject in TEXT_SUBJECTS for rule in rules.rules for subject in rule.when.subjects())
    result = ReplayResult()
    for row in rows:
        try:
            signals, request = _facts(row, context, reads_text)
        except SourceError as exc:
            reason = str(exc)
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
            continue
        result.replayed.append(Replayed(row, rules.decide(signals, request)))
    return result


def _facts(row: LoggedRequest, context: SignalContext, reads_text: bool) -> tuple[Signals, ChatRequest]:
    if row.prompt:
        request = request_from_prompt(row.id, row.prompt)
    elif reads_text:
        raise SourceError("the rules read message text and no prompt was stored")
    else:
        # No rule reads text, so the messages are never looked at: the signals carry everything decide() uses.
        request = ChatRequest(request_id=row.id, model="auto", messages=[])
    if row.signals:
        return signals_from_dict(row.signals), request
    if row.prompt:
        return extract_signals(request, context), request
    raise SourceError("neither signals nor a prompt stored")


# --- projections ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Projection:
    requests: int
    skipped: dict[str, int]
    local_to_frontier: int
    frontier_to_local: int
    rejected: int
    cost_usd: Decimal
    projected_cost_usd: Decimal
    local_usd_per_token: Decimal | None
    outcomes: int
    success_rate: float | None
    projected_success_rate: float | None
    estimated_outcomes: int
    """Requests with an outcome whose projected outcome is an estimate (their new tier's answer was not seen)."""
    unestimated_outcomes: int
    """Requests with an outcome left out of the projection: no observed success rate on their new tier."""
    changed_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "skipped": self.skipped,
            "tier_changes": {"local_to_frontier": self.local_to_frontier, "frontier_to_local": self.frontier_to_local},
            "rejected": self.rejected,
            "cost_usd": str(self.cost_usd),
            "projected_cost_usd": str(self.projected_cost_usd),
            "local_usd_per_token": str(self.local_usd_per_token) if self.local_usd_per_token is not None else None,
            "outcomes": self.outcomes,
            "success_rate": self.success_rate,
            "projected_success_rate": self.projected_success_rate,
            "estimated_outcomes": self.estimated_outcomes,
            "unestimated_outcomes": self.unestimated_outcomes,
            "changed_request_ids": list(self.changed_ids),
        }


def project(result: ReplayResult, pricing: Pricing, default_frontier_model: str, spec: MetricSettings) -> Projection:
    rows = [item.logged for item in result.replayed]
    local_rate = _local_usd_per_token(rows)
    observed = _observed_success(result.replayed, spec)
    cost = projected_cost = Decimal(0)
    to_frontier = to_local = rejected = 0
    outcomes = estimated = unestimated = 0
    passed = projected_passed = 0.0
    changed: list[str] = []
    for item in result.replayed:
        row, decision = item.logged, item.decision
        spent = row.cost_usd + row.wasted_cost_usd
        cost += spent
        new_tier = decision.action
        if new_tier != row.decided_tier:
            changed.append(row.id)
        if new_tier == "reject":
            rejected += 1
        elif new_tier == "frontier" and row.decided_tier == "local":
            to_frontier += 1
            if row.tier == "frontier":  # escalated: its frontier answer stays, the wasted local attempt goes
                spent = row.cost_usd
            else:
                model = decision.model or default_frontier_model
                spent = pricing.attempt_cost("frontier", model, row.tokens_in, row.tokens_out, row.tokens_cached, 0)
        elif new_tier == "local" and row.decided_tier == "frontier":
            to_local += 1
            spent = quantize((row.tokens_in + row.tokens_out) * local_rate) if local_rate is not None else Decimal(0)
        projected_cost += spent if new_tier != "reject" else Decimal(0)

        outcome = succeeded(row.outcome, spec)
        if outcome is None:
            continue
        outcomes += 1
        passed += outcome
        if new_tier == "reject":
            projected_passed += 0.0  # a refused request is not a success
        elif new_tier == row.tier:
            projected_passed += outcome
        else:
            estimate = observed.rate(new_tier, decision.score)
            if estimate is None:
                unestimated += 1
                continue
            estimated += 1
            projected_passed += estimate
    projected_n = outcomes - unestimated
    return Projection(
        requests=len(result.replayed),
        skipped=dict(result.skipped),
        local_to_frontier=to_frontier,
        frontier_to_local=to_local,
        rejected=rejected,
        cost_usd=cost,
        projected_cost_usd=projected_cost,
        local_usd_per_token=local_rate,
        outcomes=outcomes,
        success_rate=passed / outcomes if outcomes else None,
        projected_success_rate=projected_passed / projected_n if projected_n else None,
        estimated_outcomes=estimated,
        unestimated_outcomes=unestimated,
        changed_ids=tuple(changed),
    )


def _local_usd_per_token(rows: Sequence[LoggedRequest]) -> Decimal | None:
    answered = [row for row in rows if row.tier == "local"]
    tokens = sum(row.tokens_in + row.tokens_out for row in answered)
    return sum((row.cost_usd for row in answered), Decimal(0)) / tokens if tokens else None


@dataclass(frozen=True, slots=True)
class _ObservedSuccess:
    """Success counts by the tier that answered and the fifth of [0, 1] the request's new score fell in."""

    by_bin: dict[tuple[str, int], tuple[int, int]]
    by_tier: dict[str, tuple[int, int]]

    def rate(self, tier: str, score: float) -> float | None:
        for passed, total in (self.by_bin.get((tier, _bin(score)), (0, 0)), self.by_tier.get(tier, (0, 0))):
            if total:
                return passed / total
        return None


def _observed_success(replayed: Sequence[Replayed], spec: MetricSettings) -> _ObservedSuccess:
    by_bin: dict[tuple[str, int], tuple[int, int]] = {}
    by_tier: dict[str, tuple[int, int]] = {}
    for item in replayed:
        outcome = succeeded(item.logged.outcome, spec)
        if outcome is None:
            continue
        tier = item.logged.tier
        key = (tier, _bin(item.decision.score))
        passed, total = by_bin.get(key, (0, 0))
        by_bin[key] = (passed + outcome, total + 1)
        passed, total = by_tier.get(tier, (0, 0))
        by_tier[tier] = (passed + outcome, total + 1)
    return _ObservedSuccess(by_bin, by_tier)


def _bin(score: float) -> int:
    return min(int(score * SCORE_BINS), SCORE_BINS - 1)


# --- the command ------------------------------------------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Re-decide logged requests under another rules file: tier changes, projected cost and quality.",
    )
    parser.add_argument("--rules", type=Path, required=True, help="the rules file to judge")
    parser.add_argument("--metric", default=None, help="feedback metric that defines success (default: success)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_ledger_arguments(parser, since_default="24h")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "tiergate replay") -> int:
    """0: replayed; 1: the ledger could not be read; 2: bad arguments, rules file or config."""
    args = _parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        rules = load_rules(args.rules)
        settings = load_gateway_settings(args.config)
        metric = args.metric or settings.ledger.report_metric()
        if metric not in settings.ledger.metrics:
            declared = ", ".join(sorted(settings.ledger.metrics))
            raise SourceError(f"metric {metric!r} is not declared in the config; declared: {declared}")
        since = parse_since(args.since)
        url = database_url(args, settings)
    except (RulesError, SourceError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        rows = on_engine(url, lambda engine: read_auto_routed(engine, since, metric))
    except SourceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnreachable as exc:
        print(f"{prog}: cannot read the ledger: {exc}", file=sys.stderr)
        return 1
    local = settings.local_models[0].context_tokens if settings.local_models else 0  # frontier-only: nothing fits
    context = SignalContext(local_context_tokens=local)
    try:
        result = replay(rows, rules, context)
    except SourceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    projection = project(result, _pricing(settings), _frontier_model(settings), settings.ledger.metrics[metric])
    if args.json:
        report = {"rules": str(args.rules), "since": since.isoformat(), "metric": metric, **projection.as_dict()}
        print(json.dumps(report, indent=2))
    else:
        print(format_projection(projection, str(args.rules), since.isoformat(timespec="seconds"), metric))
    return 0


def _pricing(settings: Settings) -> Pricing:
    aliases = {m.name: m.model for m in settings.frontier_models}
    return Pricing.from_settings(settings.ledger, aliases=aliases)


def _frontier_model(settings: Settings) -> str:
    """The model a frontier decision without a named model goes to: the frontier tier's default."""
    return settings.frontier_models[0].name if settings.frontier_models else settings.ledger.default_frontier_model


def format_projection(p: Projection, rules: str, since: str, metric: str) -> str:
    skipped = "; ".join(f"{count} {reason}" for reason, count in sorted(p.skipped.items())) or "none"
    delta = p.projected_cost_usd - p.cost_usd
    lines = [
        f"replay of auto-routed requests since {since} under {rules}",
        f"requests replayed: {p.requests}   skipped: {sum(p.skipped.values())} ({skipped})",
        f"tier changes: local -> frontier {p.local_to_frontier}, frontier -> local {p.frontier_to_local}"
        + (f", rejected {p.rejected}" if p.rejected else ""),
        f"cost: logged ${p.cost_usd:.6f}, projected ${p.projected_cost_usd:.6f} (estimate; {delta:+.6f})",
    ]
    if p.frontier_to_local:
        rate = (
            f"${p.local_usd_per_token:.9f} per token, as observed on local answers in the window"
            if p.local_usd_per_token is not None
            else "0: no local answers in the window to price from"
        )
        lines.append(f"  requests moved to local are priced at {rate}")
    if p.success_rate is None:
        lines.append(f"quality: no outcomes on metric {metric!r} in the window")
    else:
        projected = f"{p.projected_success_rate:.1%}" if p.projected_success_rate is not None else "unknown"
        lines.append(
            f"quality ({metric}, {p.outcomes} requests with an outcome): logged {p.success_rate:.1%}, projected "
            f"{projected} (estimate: {p.estimated_outcomes} moved requests at their new tier's observed success "
            f"rate for similar scores; {p.unestimated_outcomes} left out, no observed rate)"
        )
    return "\n".join(lines)
