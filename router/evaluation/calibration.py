"""`tiergate calibrate`: set a rules file's score threshold so that recent traffic escalates at a target rate.

The threshold is a quantile of the scores of recent traffic: with `score >= t` escalating (the default rule), the
share of scores at or above `t` is the escalation rate. Scores come from the ledger (auto-routed requests in a
window) or from a prompt file. Ledger scores are recomputed by default from each row's stored signals (stored
prompts where signals are missing) under the file being calibrated, because a threshold only means something
against the weights it is compared with; `--scores logged` takes the scores as they were logged instead.

Ties: many requests can share one score (the same signals), so not every rate is reachable. The threshold is put
between two distinct scores, at the reachable rate nearest the target, and the rate it gives is printed. Within
that gap the shortest decimal is written, so the file stays readable and the rate does not depend on the last
digit of a float.

The file is edited in place at the threshold's own characters (found with ruamel.yaml's round-trip positions), so
comments, order, quoting and every other byte are kept; the result must load with the rules loader before it
atomically replaces the file.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from gateway.ledger.database import is_transient, make_engine
from router.chat import ChatRequest, Message
from router.evaluation.ledger_source import (
    SourceError,
    add_ledger_arguments,
    database_url,
    load_gateway_settings,
    parse_since,
    read_auto_routed,
    request_from_prompt,
    signals_from_dict,
)
from router.rules import DEFAULT_RULE, RulesError, RuleSet, load_rules, parse_rules
from router.signals import SignalContext, extract_signals

if TYPE_CHECKING:
    from gateway.settings import Settings

MIN_SCORES = 50
"""Fewer scores than this say too little about the traffic to set a threshold from."""
Comparison = Literal[">=", ">"]
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class CalibrationError(Exception):
    """Calibration cannot be done as asked; the file is left as it was."""


@dataclass(frozen=True, slots=True)
class ThresholdSite:
    """Where a score threshold lives in a rules file and how its rule compares the score with it."""

    rule: str
    path: tuple[str | int, ...]
    comparison: Comparison
    value: float
    line: int
    column: int
    """0-based position of the value's first character, as ruamel.yaml reports it."""


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    rate: float
    """The escalation rate the threshold gives on the scores it was calibrated on."""


def escalation_rate(scores: NDArray[np.float64], threshold: float, comparison: Comparison) -> float:
    escalated = scores >= threshold if comparison == ">=" else scores > threshold
    return float(np.mean(escalated))


def calibrate(
    scores: NDArray[np.float64], target: float, comparison: Comparison, bounds: tuple[float, float] = (0.0, 1.0)
) -> Calibration:
    """The threshold within `bounds` whose escalation rate on `scores` is nearest `target`."""
    values, counts = np.unique(scores, return_counts=True)
    # Escalating the top i distinct values: the threshold lies in the gap below values[-i] (or above them all).
    above = np.concatenate([[0], np.cumsum(counts[::-1])])
    best: tuple[float, float] | None = None
    for i, count in enumerate(above):
        rate = float(count) / len(scores)
        if best is not None and abs(rate - target) >= abs(best[1] - target):
            continue
        low = float(values[-i - 1]) if i < len(values) else -math.inf
        high = float(values[-i]) if i > 0 else math.inf
        threshold = _threshold_in_gap(low, high, comparison, bounds)
        if threshold is not None:
            best = (threshold, rate)
    if best is None:
        raise CalibrationError(f"no threshold within {bounds[0]:g}..{bounds[1]:g} separates these scores")
    return Calibration(best[0], best[1])


def _threshold_in_gap(low: float, high: float, comparison: Comparison, bounds: tuple[float, float]) -> float | None:
    """The shortest decimal t within `bounds` with exactly the scores >= high escalating: `low < t <= high` for
    `>=`, `low <= t < high` for `>`."""

    def inside(t: float) -> bool:
        if not bounds[0] <= t <= bounds[1]:
            return False
        return low < t <= high if comparison == ">=" else low <= t < high

    lo = max(low, bounds[0]) if low > -math.inf else bounds[0]
    hi = min(high, bounds[1]) if high < math.inf else bounds[1]
    middle = (lo + hi) / 2
    for digits in range(1, 18):
        candidate = round(middle, digits)
        if inside(candidate):
            return candidate
    return next((t for t in (middle, lo, hi) if inside(t)), None)


# --- the rules file -------------------------------------------------------------------------------------------


def find_site(text: str, rule: str | None, source: str) -> ThresholdSite:
    """The threshold of the default rule (`rule` None or `default`), or of the named rule's `score` condition."""
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise CalibrationError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, CommentedMap) or "threshold" not in doc:
        raise CalibrationError(f"{source}: not a rules file (a mapping with a threshold)")
    if rule is None or rule == DEFAULT_RULE:
        line, column = doc.lc.value("threshold")
        return ThresholdSite(DEFAULT_RULE, ("threshold",), ">=", float(doc["threshold"]), line, column)
    for index, spec in enumerate(doc.get("rules") or ()):
        if spec.get("name") != rule:
            continue
        if spec.get("action") != "frontier":
            raise CalibrationError(f"{source}: rule {rule!r} does not escalate (action is not frontier)")
        condition = spec.get("when") or {}
        comparison = condition.get("score") if isinstance(condition, dict) else None
        if (
            not isinstance(comparison, CommentedMap)
            or len(comparison) != 1
            or next(iter(comparison)) not in (">=", ">")
        ):
            raise CalibrationError(
                f"{source}: rule {rule!r} has no top-level `score` condition with one `>=` or `>` to calibrate"
            )
        op = next(iter(comparison))
        line, column = comparison.lc.value(op)
        path = ("rules", index, "when", "score", op)
        return ThresholdSite(rule, path, op, float(comparison[op]), line, column)
    raise CalibrationError(f"{source}: no rule named {rule!r}")


def rewrite_threshold(text: str, site: ThresholdSite, value: float) -> str:
    """`text` with the threshold's characters, and nothing else, replaced by `value`."""
    lines = text.splitlines(keepends=True)
    line = lines[site.line]
    match = _NUMBER.match(line, site.column)
    if match is None:
        raise CalibrationError(f"line {site.line + 1}: the threshold is not a plain number that can be edited")
    lines[site.line] = line[: match.start()] + repr(value) + line[match.end() :]
    return "".join(lines)


def write_rules(path: Path, text: str, site: ThresholdSite, value: float) -> RuleSet:
    """Check that `text` loads and holds `value` at the site, then replace `path` with it atomically."""
    try:
        rules = parse_rules(text, source=str(path))
    except RulesError as exc:
        raise CalibrationError(f"the edited file would not load, nothing written: {exc}") from None
    written = find_site(text, site.rule, str(path))
    if written.value != value:
        raise CalibrationError(f"{path}: the edit did not land on the threshold; nothing written")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return rules


# --- scores -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scores:
    values: NDArray[np.float64]
    origin: str
    """Where they came from, for the report."""


def scores_from_prompt_file(path: Path, rules: RuleSet, context: SignalContext) -> Scores:
    """Each JSONL line is an OpenAI chat request body (`messages`, optionally `tools`...) or `{"prompt": text}`,
    scored as the router scores a request: its signals, then the rules file's score."""
    found: list[float] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
            request = _prompt_request(item, f"line-{number}")
        except (orjson.JSONDecodeError, SourceError, ValueError) as exc:
            raise CalibrationError(f"{path}:{number}: {exc}") from None
        found.append(rules.score(extract_signals(request, context)))
    return Scores(np.array(found, dtype=np.float64), f"prompt file {path}")


def _prompt_request(item: Any, request_id: str) -> ChatRequest:
    if isinstance(item, dict) and isinstance(item.get("prompt"), str):
        return ChatRequest(request_id=request_id, model="auto", messages=[Message(role="user", content=item["prompt"])])
    if isinstance(item, dict) and isinstance(item.get("messages"), list):
        if "tools" in item or "response_format" in item:
            from gateway.wire import ChatCompletionRequest

            body = {**item, "model": "auto"}
            return ChatCompletionRequest.model_validate(body).to_internal(request_id, body)
        return request_from_prompt(request_id, item["messages"])
    raise ValueError('expected a chat request body with "messages" or {"prompt": "..."}')


def scores_from_ledger(args: argparse.Namespace, settings: Settings, rules: RuleSet, context: SignalContext) -> Scores:
    since = parse_since(args.since)
    url = database_url(args, settings)
    engine = make_engine(url)
    try:
        logged = read_auto_routed(engine, since)
    except Exception as exc:
        if isinstance(exc, SourceError) or not is_transient(exc):
            raise
        raise CalibrationError(f"cannot read the ledger: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()
    window = f"auto-routed requests since {since.isoformat(timespec='seconds')}"
    if args.scores == "logged":
        values = [row.score for row in logged if row.score is not None]
        return Scores(np.array(values, dtype=np.float64), f"{window}, logged scores")
    found: list[float] = []
    from_prompts = skipped = 0
    for row in logged:
        if row.signals:
            found.append(rules.score(signals_from_dict(row.signals)))
        elif row.prompt:
            found.append(rules.score(extract_signals(request_from_prompt(row.id, row.prompt), context)))
            from_prompts += 1
        else:
            skipped += 1
    note = f"{window}, re-scored under this file ({from_prompts} from stored prompts; {skipped} skipped: no signals"
    return Scores(np.array(found, dtype=np.float64), note + " or prompt stored)")


# --- the command ------------------------------------------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Set the score threshold of a rules file so that recent traffic escalates at a target rate.",
    )
    parser.add_argument("--rules", type=Path, required=True, help="the rules file to edit")
    parser.add_argument(
        "--target-escalation", type=float, required=True, help="share of requests to escalate, e.g. 0.25"
    )
    parser.add_argument("--rule", default=None, help="rule whose `score` condition to set (default: the threshold)")
    parser.add_argument("--prompts", type=Path, default=None, help="JSONL prompt file to score instead of the ledger")
    parser.add_argument(
        "--scores",
        choices=("rescored", "logged"),
        default="rescored",
        help="ledger scores: recomputed under this file from stored signals (default), or as logged",
    )
    parser.add_argument("--min-scores", type=int, default=MIN_SCORES, help=f"fewest scores accepted ({MIN_SCORES})")
    parser.add_argument("--dry-run", action="store_true", help="print the new threshold; leave the file alone")
    add_ledger_arguments(parser, since_default="7d")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "tiergate calibrate") -> int:
    """0: calibrated (or would be, with --dry-run); 1: refused (too few scores, an edit that would not load);
    2: bad arguments or an unreadable rules file, config or prompt file."""
    args = _parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    if not 0 < args.target_escalation < 1:
        print(f"{prog}: --target-escalation must be between 0 and 1 (exclusive)", file=sys.stderr)
        return 2
    try:
        rules = load_rules(args.rules)
        text = args.rules.read_text(encoding="utf-8")
        site = find_site(text, args.rule, str(args.rules))
        settings = load_gateway_settings(args.config)
        # Signals computed from prompts judge "fits the local context" against the configured local model.
        local = settings.local_models[0].context_tokens if settings.local_models else 0  # frontier-only: nothing fits
        context = SignalContext(local_context_tokens=local)
        if args.prompts is not None:
            scores = scores_from_prompt_file(args.prompts, rules, context)
        else:
            scores = scores_from_ledger(args, settings, rules, context)
    except (RulesError, SourceError, CalibrationError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if len(scores.values) < args.min_scores:
        print(
            f"{prog}: only {len(scores.values)} scores ({scores.origin}); at least {args.min_scores} are needed to "
            f"set a threshold. {args.rules} is unchanged.",
            file=sys.stderr,
        )
        return 1
    bounds = (0.0, 1.0) if site.rule == DEFAULT_RULE else (-math.inf, math.inf)
    try:
        result = calibrate(scores.values, args.target_escalation, site.comparison, bounds)
        if not args.dry_run and result.threshold != site.value:
            write_rules(args.rules, rewrite_threshold(text, site, result.threshold), site, result.threshold)
    except CalibrationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    where = "threshold" if site.rule == DEFAULT_RULE else f"rule {site.rule} (score {site.comparison})"
    old_rate = escalation_rate(scores.values, site.value, site.comparison)
    print(f"scores: {len(scores.values)} from {scores.origin}")
    print(f"target escalation rate: {args.target_escalation:.1%}")
    print(f"old {where}: {site.value:g}  escalation rate {old_rate:.1%}")
    print(f"new {where}: {result.threshold!r}  escalation rate {result.rate:.1%}")
    if args.dry_run:
        print(f"dry run: {args.rules} not changed")
    elif result.threshold == site.value:
        print(f"{args.rules} already has this threshold: not changed")
    else:
        print(f"wrote {args.rules}")
    return 0
