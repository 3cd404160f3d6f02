"""`tiergate train-router --from-ledger`: the learned scorer trained on the gateway's own traffic.

A labelled example is a stored prompt and whether the local (weak) model was good enough for it, which the ledger
knows for two kinds of request:
- answered by the local tier, with an outcome on the metric (its own feedback, else its session's): good enough
  when the outcome is a success;
- escalated: the local answer failed verification and the frontier tier answered: not good enough.
A request the frontier tier answered first says nothing about the local model and is left out. Only requests whose
prompt was stored (`ledger.store_prompts`, or the key's setting) can be used; the text learned from is the latest
user message, which is what the learned scorer reads when it scores a request.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from gateway.ledger.database import DatabaseUnreachable, on_engine
from gateway.ledger.settings import MetricSettings
from router.evaluation.ledger_source import (
    LoggedRequest,
    SourceError,
    database_url,
    load_gateway_settings,
    parse_since,
    read_auto_routed,
    request_from_prompt,
    succeeded,
)
from router.evaluation.training import FeatureTable, Outcomes, train

LEDGER_LABEL = "the local answer was not good enough: a failed outcome, or it failed verification and escalated"
MIN_EXAMPLES = 20
"""Fewer labelled prompts than this cannot train anything worth serving."""


def ledger_outcomes(rows: Sequence[LoggedRequest], spec: MetricSettings) -> Outcomes:
    """The labelled examples among `rows` (see the module's docstring); `needs_strong` is the label."""
    prompts: list[str] = []
    labels: list[bool] = []
    for row in rows:
        if not row.prompt:
            continue
        if row.escalated:
            needs_strong = True
        elif row.tier == "local" and (good := succeeded(row.outcome, spec)) is not None:
            needs_strong = not good
        else:
            continue
        try:
            request = request_from_prompt(row.id, row.prompt)
        except SourceError:
            continue  # a prompt the wire types no longer accept cannot be scored either
        latest = next((m.content for m in reversed(request.messages) if m.role == "user" and m.content), None)
        if latest is None:
            continue
        prompts.append(latest)
        labels.append(needs_strong)
    return Outcomes(tuple(prompts), np.array(labels, dtype=np.bool_), tuple("ledger" for _ in prompts))


def train_from_ledger(args: argparse.Namespace, prog: str) -> int:
    """Train on the ledger's labelled prompts and write the artifact. 0: written; 1: not enough to train on;
    2: bad arguments or config."""
    try:
        settings = load_gateway_settings(args.config)
        metric = args.metric or settings.ledger.report_metric()
        if metric not in settings.ledger.metrics:
            raise SourceError(
                f"metric {metric!r} is not declared; declared: {', '.join(sorted(settings.ledger.metrics))}"
            )
        since = parse_since(args.since)
        url = database_url(args, settings)
    except SourceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        rows = on_engine(url, lambda engine: read_auto_routed(engine, since, metric, auto_only=False))
    except SourceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnreachable as exc:
        print(f"{prog}: cannot read the ledger: {exc}", file=sys.stderr)
        return 1
    outcomes = ledger_outcomes(rows, settings.ledger.metrics[metric])
    weak_failed = int(outcomes.needs_strong.sum())
    counts = f"{len(outcomes.prompts)} labelled prompts ({weak_failed} where the local model was not good enough)"
    stored = sum(1 for row in rows if row.prompt)
    if len(outcomes.prompts) < MIN_EXAMPLES or weak_failed in (0, len(outcomes.prompts)):
        print(
            f"{prog}: {counts} among {len(rows)} requests since {since.date()} ({stored} with a stored prompt); "
            f"training needs at least {MIN_EXAMPLES}, with both labels. Turn on ledger.store_prompts and send "
            f"outcomes (POST /v1/feedback) for locally answered requests. Nothing written.",
            file=sys.stderr,
        )
        return 1
    try:
        model = train(
            outcomes, FeatureTable.build(outcomes.prompts), folds=args.folds, seed=args.seed, alpha=args.alpha
        )
    except ValueError as exc:  # a fold left with one label
        print(f"{prog}: {counts}: {exc}; try fewer --folds. Nothing written.", file=sys.stderr)
        return 1
    model.meta.update(label=LEDGER_LABEL, metric=metric, since=since.isoformat())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"trained on {counts}, {args.folds} folds; wrote {args.out}")
    return 0
